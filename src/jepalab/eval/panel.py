"""`jepalab evaluate CONTRACT`: the whole matrix — arms × pretraining runs × perturbations ×
evaluation seeds × episodes — with every episode appended to an SQLite store as it finishes.

Episode e of evaluation seed s resets the scene with seed `s * 100_000 + e` in every arm and
under every perturbation, so outcomes are paired. A re-run skips the keys already stored (a crash
loses at most the episodes in flight). After the matrix: the contract's rule decides, and the
evidence record, the card and the tracking run are written.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jepalab.config import ArmConfig, ContractConfig, PanelConfig, build
from jepalab.envs import SCENES, parse_perturbation, supported_perturbations
from jepalab.errors import JepalabError
from jepalab.eval.control import run_episodes
from jepalab.eval.evidence import condition_label
from jepalab.eval.store import EpisodeStore
from jepalab.train.checkpoint import read_manifest

ARMS = ("candidate", "baseline")


def reset_seed(eval_seed: int, episode: int) -> int:
    return eval_seed * 100_000 + episode


def _condition(name: str) -> str | None:
    return None if name == "clean" else name


def panel_problems(c: PanelConfig, plan: bool = True) -> list[str]:
    """What is wrong with a panel that needs no checkpoint: scene, perturbations, horizons
    (`plan`: the planner's horizon must be the contract's rollout horizon)."""
    problems: list[str] = []
    scene = c.scene.name
    if scene not in SCENES and not scene.startswith("gym:"):
        problems.append(f"scene.name: unknown scene '{scene}' (choose from {', '.join(SCENES)})")
    else:
        supported = supported_perturbations(scene)
        for i, p in enumerate(c.perturbations):
            if p.name == "clean":
                continue
            try:
                spec = parse_perturbation(p.name, p.severity, 0)
                bad = [n for n in spec.names if n not in supported]
                if bad:
                    problems.append(f"perturbations[{i}]: {', '.join(bad)} not supported by "
                                    f"'{scene}' (supported: {', '.join(supported)})")
            except ValueError as e:
                problems.append(f"perturbations[{i}]: {e}")
    horizon = int(c.controller.planner.get("horizon", c.rollout_horizon))
    if plan and horizon != c.rollout_horizon:
        problems.append(f"rollout_horizon ({c.rollout_horizon}) differs from controller.planner."
                        f"horizon ({horizon})")
    if c.controller.max_steps and c.rollout_horizon > c.controller.max_steps:
        problems.append(f"rollout_horizon ({c.rollout_horizon}) is longer than the episode "
                        f"(controller.max_steps = {c.controller.max_steps})")
    return problems


def validate(c: ContractConfig) -> None:
    """Refuse an inconsistent contract before anything runs, listing every problem."""
    problems = panel_problems(c, plan=c.task == "plan")
    shas: dict[str, set[str]] = {}
    for arm_name in ARMS:
        arm: ArmConfig = getattr(c, arm_name)
        shas[arm_name] = set()
        for j, run in enumerate(arm.runs):
            where = f"{arm_name}.runs[{j}]"
            try:
                enc = read_manifest(run.encoder)
                sha = enc["files"]["model.safetensors"]["sha256"]
                shas[arm_name].add(sha)
                wm = read_manifest(run.world_model)
                rec = wm.get("encoder_checkpoint", {}).get("sha256")
                if rec != sha:
                    problems.append(f"{where}.world_model was trained on encoder {str(rec)[:12]}, "
                                    f"not on {where}.encoder ({sha[:12]})")
            except JepalabError as e:
                problems.append(f"{where}: {e}")
        seeds = [r.pretrain_seed for r in arm.runs]
        if len(set(seeds)) != len(seeds):
            problems.append(f"{arm_name}.runs: duplicate pretrain_seed in {seeds}")
    if shas["candidate"] & shas["baseline"]:
        problems.append("baseline: the baseline uses the same encoder checkpoint as the candidate")
    if c.task != "plan":
        from jepalab.eval.offline import task_params

        try:
            task_params(c.task, c.task_params)
        except JepalabError as e:
            problems.append(str(e))
    if problems:
        raise JepalabError(f"contract refused ({len(problems)} problems): " + "; ".join(problems))


@dataclass(frozen=True)
class Cell:
    arm: str
    run_index: int
    condition: str
    severity: int
    eval_seed: int
    episodes: tuple[int, ...]


def pending_cells(c: ContractConfig, store: EpisodeStore) -> list[Cell]:
    done = store.done_keys()
    cells = []
    for arm_name in ARMS:
        for ri, run in enumerate(getattr(c, arm_name).runs):
            for p in c.perturbations:
                for s in c.eval_seeds:
                    todo = tuple(e for e in range(c.episodes) if (
                        arm_name, p.name, p.severity, run.pretrain_seed, s, e) not in done)
                    if todo:
                        cells.append(Cell(arm_name, ri, p.name, p.severity, s, todo))
    return cells


def run_cell(args: tuple[dict[str, Any], str, Cell]) -> int:
    """Run one cell's pending episodes, appending each to the store as it finishes; returns the
    number of episodes done."""
    cdict, store_path, cell = args
    c = build(ContractConfig, cdict)
    run = getattr(c, cell.arm).runs[cell.run_index]
    run_dir = Path(store_path).parent
    store = EpisodeStore(store_path)
    key = {"arm": cell.arm, "condition": cell.condition, "severity": cell.severity,
           "pretrain_seed": run.pretrain_seed, "eval_seed": cell.eval_seed}
    episodes = _plan_episodes if c.task == "plan" else _offline_episodes
    n = 0
    for fields in episodes(c, run.world_model, cell, run_dir):
        store.add({**key, **fields})
        n += 1
    return n


def _plan_episodes(c: ContractConfig, wm_path: str, cell: Cell, run_dir: Path
                   ) -> Iterator[dict[str, Any]]:
    from jepalab.train.worldmodel import load_world_model

    wm = load_world_model(wm_path)
    show = cell.arm == "candidate" and cell.run_index == 0 and cell.eval_seed == c.eval_seeds[0]
    label = condition_label(cell.condition, cell.severity)
    for e in cell.episodes:
        frames = run_dir / "frames" / f"{label}.npy" if show and e == 0 else None
        (row,) = run_episodes(wm, c.scene, c.controller, [reset_seed(cell.eval_seed, e)],
                              _condition(cell.condition), cell.severity,
                              perturb_seed=cell.eval_seed, progress=False, frames_path=frames)
        yield {"encoder_sha": wm.encoder_sha256, "episode": e, "success": int(row.success),
               "final_distance": row.final_distance, "steps": row.steps,
               "plan_time_s": row.plan_time_s}


def eval_data_dir(run_dir: Path, condition: str, severity: int, eval_seed: int) -> Path:
    return run_dir / "data" / f"{condition_label(condition, severity)}_s{eval_seed}"


def collect_eval_data(c: ContractConfig, run_dir: Path, progress: bool = True) -> None:
    """Offline tasks: one evaluation dataset per condition x evaluation seed, shared by both
    arms (episode e resets with reset_seed(eval_seed, e), as in planning)."""
    from jepalab.data.collect import collect
    from jepalab.eval.offline import task_params

    params = task_params(c.task, c.task_params)
    for p in c.perturbations:
        for s in c.eval_seeds:
            collect(c.scene.name, c.episodes, eval_data_dir(run_dir, p.name, p.severity, s),
                    policy=params["policy"], seed=reset_seed(s, 0),
                    image_size=c.scene.image_size, max_steps=c.controller.max_steps,
                    scene_kwargs=c.scene.kwargs, perturb=_condition(p.name),
                    severity=p.severity, progress=progress)


def _offline_episodes(c: ContractConfig, wm_path: str, cell: Cell, run_dir: Path
                      ) -> Iterator[dict[str, Any]]:
    from jepalab.data.store import TrajectoryStore
    from jepalab.eval.offline import episode_error, heads, task_params

    params = task_params(c.task, c.task_params)
    h = heads(wm_path)
    data = TrajectoryStore.open(eval_data_dir(run_dir, cell.condition, cell.severity,
                                              cell.eval_seed))
    for e in cell.episodes:
        ep = data.episode(e)
        err = episode_error(c.task, params, h, ep, c.rollout_horizon)
        ok = err is not None and err <= params["tolerance"]
        yield {"encoder_sha": h.wm.encoder_sha256, "episode": e, "success": int(ok),
               "steps": len(ep["frames"]),
               "extra": json.dumps({"error": err, "tolerance": params["tolerance"]})}


def _one_thread() -> None:
    """Each worker process uses one core: N workers x all cores oversubscribes the machine."""
    import torch

    torch.set_num_threads(1)


def run_matrix(c: ContractConfig, run_dir: Path, workers: int = 1, progress: bool = True) -> None:
    store = EpisodeStore(run_dir / "episodes.sqlite")
    cjson = c.model_dump(mode="json")
    stored = store.meta.get("contract")
    if stored is not None and json.loads(stored) != cjson:
        raise JepalabError(f"{run_dir}: holds results of a different contract; use another "
                           "out_dir")
    store.meta["contract"] = json.dumps(cjson)
    cells = pending_cells(c, store)
    total = sum(len(x.episodes) for x in cells)
    bar = tqdm(total=total, desc="evaluate", unit="ep", disable=not progress)
    jobs = [(cjson, str(run_dir / "episodes.sqlite"), cell) for cell in cells]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
            for n in pool.imap_unordered(run_cell, jobs):
                bar.update(n)
    else:
        for job in jobs:
            bar.update(run_cell(job))
    bar.close()


def evaluate(c: ContractConfig, progress: bool = True) -> tuple[Any, Path]:
    """Validate, run the pending matrix, decide, and write evidence.json, the card and the
    tracking run into c.out_dir; returns (record, card.html path). Re-running resumes."""
    import numpy as np

    from jepalab.eval.card import save_extras, write_card
    from jepalab.eval.extras import card_extras
    from jepalab.eval.rules import decide
    from jepalab.eval.tracking import Tracker
    from jepalab.train.worldmodel import load_world_model

    validate(c)
    run_dir = Path(c.out_dir)
    if c.task != "plan":
        collect_eval_data(c, run_dir, progress)
    run_matrix(c, run_dir, c.workers, progress)
    with EpisodeStore(run_dir / "episodes.sqlite") as store:
        rows = store.to_records()
        decision = decide(c.rule.name, rows, **c.rule.params)
        wms = {arm: load_world_model(getattr(c, arm).runs[0].world_model) for arm in ARMS}
        extras = card_extras(wms, c.rollout_horizon)
        frames_dir = run_dir / "frames"
        extras["frames"] = {p.stem: list(np.load(p, allow_pickle=False))
                            for p in sorted(frames_dir.glob("*.npy"))}
        save_extras(run_dir, extras)
        record = _record(c, wms, rows, decision)
        record.save(run_dir / "evidence.json")
        html, _ = write_card(run_dir, record, store, extras)
    with Tracker(run_dir, experiment="evaluate", run_name=c.name) as tr:
        tr.log_evidence(record)
        tr.log_artifact(run_dir / "evidence.json")
        tr.log_artifact(html)
    return record, html


def _checkpoint(path: str) -> dict[str, str]:
    sha = read_manifest(path)["files"]["model.safetensors"]["sha256"]
    return {"path": str(path), "sha256": sha}


def _record(c: ContractConfig, wms: dict[str, Any], rows: list[dict[str, Any]],
            decision: Any) -> Any:
    from jepalab.envs import parse_perturbation
    from jepalab.eval.evidence import build_record
    from jepalab.eval.rules import result_cells

    enc = read_manifest(c.candidate.runs[0].encoder)
    wm_dir = c.candidate.runs[0].world_model
    seeds = {arm: [{"pretrain_seed": r.pretrain_seed, **_checkpoint(r.encoder)}
                   for r in getattr(c, arm).runs] for arm in ARMS}
    panel = []
    for p in c.perturbations:
        if p.name == "clean":
            continue
        spec = parse_perturbation(p.name, p.severity, c.eval_seeds[0])
        panel.append({"name": p.name, "severity": p.severity, "seed": c.eval_seeds[0],
                      "params": {c.name: c.params for c in spec.components}})
    return build_record(
        encoder_checkpoint=_checkpoint(c.candidate.runs[0].encoder),
        encoder_checkpoints=seeds["candidate"] if len(seeds["candidate"]) > 1 else [],
        objective={"name": c.candidate.objective,
                   "params": enc.get("config", {}).get("objective", {})},
        masking_policy=enc.get("mask_policy") or {},
        downstream_task=f"{c.task}:{c.scene.name}",
        controller={"kind": f"mpc-{c.controller.planner.get('method', 'cem')}",
                    "params": {**c.controller.model_dump(mode="json"),
                               "world_model_kind": wms["candidate"].manifest["latent"]["kind"]},
                    "checkpoint": _checkpoint_any(wm_dir)},
        metric=_metric(c),
        perturbation_panel=panel,
        seed_panel={"pretrain_seeds": [r.pretrain_seed for r in c.candidate.runs],
                    "eval_seeds": c.eval_seeds},
        rollout_horizon=c.rollout_horizon,
        intervention_budget=c.intervention_budget.model_dump(),
        training_budget=c.training_budget,
        baseline={"name": c.baseline.name, "encoder_checkpoint": _checkpoint(
            c.baseline.runs[0].encoder), "objective": {"name": c.baseline.objective},
            "encoder_checkpoints": seeds["baseline"] if len(seeds["baseline"]) > 1 else []},
        results=[x.model_dump() for x in result_cells(rows)],
        decision=decision.model_dump(),
    )


def _checkpoint_any(path: str) -> dict[str, str]:
    """A checkpoint's path and the sha256 of its weights file (whatever it is named)."""
    files = read_manifest(path)["files"]
    name = "model.safetensors" if "model.safetensors" in files else sorted(files)[0]
    return {"path": str(path), "sha256": files[name]["sha256"]}


def _metric(c: ContractConfig) -> str:
    if c.task == "plan" or c.metric != "success_rate":
        return c.metric
    from jepalab.eval.offline import task_params

    return f"{c.task}_pass_rate(error<={task_params(c.task, c.task_params)['tolerance']:g})"
