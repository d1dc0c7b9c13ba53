"""`jepalab compare CONFIG`: JEPA against pixel reconstruction, contrastive and no pretraining,
on the same data and the same training budget, measured on control.

For every entry × pretraining seed: pretrain one encoder (or keep its random initialisation),
train a world model on it, then per reference-vs-entry pair run the contract's panel through
`jepalab.eval.panel.evaluate` (one evidence record and card per pair) and measure each entry's
linear-probe state error, kNN retrieval precision, rollout error at the contract's horizon and
label efficiency. The comparison card (`compare_card.py`) puts it all in one table.

Matched budget: before anything trains, the trained entries must share steps, batch size and
data, and their training FLOPs per step (counted with FlopCounterMode on one real step) may differ
by at most `budget.flops_tolerance`x; otherwise the comparison is refused with one line listing
every mismatch, unless `budget.allow_unequal` is set (the card then says so).

Resumable: every artifact lives under OUT_DIR in a directory named by the sha256 of its resolved
config (and the dataset fingerprint / encoder sha256), so a re-run reuses finished encoders,
world models, FLOP counts and metrics, resumes unfinished training, and skips stored episodes.
The reference entry's episodes run once; later pairs reuse them (same contract, same encoder).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jepalab.config import (
    CompareConfig,
    CompareEntry,
    ContractConfig,
    PanelConfig,
    PretrainConfig,
    WorldModelConfig,
    build,
    merge,
    read_yaml,
)
from jepalab.errors import JepalabError
from jepalab.eval.compare_budget import check_budget, step_flops
from jepalab.io import atomic_write_json

METRICS_FORMAT = "jepalab.compare-metrics/2"


@dataclass(frozen=True)
class Run:
    """One entry at one pretraining seed."""

    entry: str
    seed: int
    objective: str  # the objective name, "none" for an untrained entry
    train: bool
    cfg: PretrainConfig
    key: str  # sha256 of the resolved config + dataset fingerprint + train flag

    @property
    def encoder_dir(self) -> str:
        return self.cfg.out_dir


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


# ---------------------------------------------------------------- data and entries


def dataset(c: CompareConfig, progress: bool = True) -> Path:
    """The comparison's trajectory dataset (collected into OUT_DIR/data when asked)."""
    if c.data.path is not None:
        return Path(c.data.path)
    from jepalab.data.collect import collect

    col = c.data.collect
    assert col is not None
    fields = col.model_dump(exclude={"kind", "scene", "episodes"})
    return collect(col.scene, col.episodes, Path(c.out_dir) / "data", progress=progress, **fields)


def entry_dict(c: CompareConfig, e: CompareEntry) -> dict[str, Any]:
    """An entry's pretraining fields: its file < the shared `pretrain` < its overrides."""
    return merge(merge(read_yaml(e.config) if e.config else {}, c.pretrain), e.overrides)


def resolve_runs(c: CompareConfig, data: Path) -> dict[str, list[Run]]:
    """{entry: [Run per seed]}: file < shared `pretrain` < entry overrides < data/seed/out_dir."""
    from jepalab.data.store import TrajectoryStore

    store = TrajectoryStore.open(data, verify=False)
    fingerprint = store.fingerprint()
    out = Path(c.out_dir) / "encoders"
    runs: dict[str, list[Run]] = {}
    seen: dict[str, str] = {}
    for i, e in enumerate(c.entries):
        d = entry_dict(c, e)
        d["data"] = merge(d.get("data", {}), {"source": "dataset", "path": str(data),
                                               "image_size": int(store.image_shape[0])})
        runs[e.name] = []
        for seed in c.seeds:
            d = {**d, "seed": seed, "out_dir": ""}
            cfg = build(PretrainConfig, d, source=f"{c.name}: entries[{i}] ({e.name})")
            resolved = json.loads(cfg.model_dump_json(exclude={"out_dir"}))
            key = digest({"config": resolved, "data": fingerprint, "train": e.train})
            if key in seen:
                raise JepalabError(f"entries[{i}] ({e.name}): resolves to the same encoder as "
                                   f"entry '{seen[key]}' (seed {seed}); make them differ")
            seen[key] = e.name
            objective = cfg.objective.name if e.train else "none"
            kind = objective if e.train else "init"
            cfg = cfg.model_copy(update={"out_dir": str(out / f"{kind}-{key[:12]}")})
            runs[e.name].append(Run(e.name, seed, objective, e.train, cfg, key))
    return runs


def preflight(c: CompareConfig, image_size: int) -> None:
    """The contract checks that need no checkpoint, before hours of training."""
    from jepalab.eval.panel import panel_problems

    problems = panel_problems(c)
    if c.scene.image_size != image_size:
        problems.append(f"scene.image_size ({c.scene.image_size}) differs from the dataset's "
                        f"frames ({image_size} px)")
    if problems:
        raise JepalabError(f"{c.name}: compare refused: " + "; ".join(problems))


# ---------------------------------------------------------------- training


def train_encoder(run: Run, progress: bool) -> tuple[Path, float]:
    """(encoder checkpoint, training wall seconds) — reused when already trained."""
    from jepalab.train.loop import init_checkpoint, pretrain

    if not run.train:
        path = Path(run.encoder_dir) / "init"
        if not (path / "manifest.json").is_file():
            init_checkpoint(run.cfg, path)
        return path, 0.0
    ckpt = pretrain(run.cfg, resume=True, progress=progress)
    log = Path(run.encoder_dir) / "metrics.jsonl"
    rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    # per-step time as logged (batch / samples_per_s): survives resumes, excludes evaluation
    wall = sum(run.cfg.batch_size / r["samples_per_s"] for r in rows if r.get("samples_per_s"))
    return ckpt, float(wall)


def train_world_model(c: CompareConfig, run: Run, encoder: Path, data: Path,
                      progress: bool) -> Path:
    from jepalab.train.checkpoint import checkpoint_sha
    from jepalab.train.worldmodel import train_worldmodel

    d = merge(c.worldmodel, {"encoder": str(encoder), "data": {"path": str(data)},
                             "seed": run.seed, "out_dir": ""})
    cfg = build(WorldModelConfig, d, source=f"{c.name}: worldmodel ({run.entry})")
    key = digest({"config": json.loads(cfg.model_dump_json(exclude={"out_dir", "encoder"})),
                  "encoder": checkpoint_sha(encoder)})
    out = Path(c.out_dir) / "worldmodels" / f"{run.objective}-{key[:12]}"
    return train_worldmodel(cfg.model_copy(update={"out_dir": str(out)}), resume=True,
                            progress=progress)


# ---------------------------------------------------------------- panel, pair by pair


def pair_contract(c: CompareConfig, ref: str, other: str,
                  arms: dict[str, list[tuple[Run, Path, Path]]],
                  budget: dict[str, Any] | None = None) -> ContractConfig:
    """The evidence contract of `ref` (candidate) vs `other` (baseline); with the comparison's
    `budget`, the pair's share of it goes into the record."""
    def arm(name: str) -> dict[str, Any]:
        return {"name": name, "objective": arms[name][0][0].objective,
                "runs": [{"pretrain_seed": r.seed, "encoder": str(enc), "world_model": str(wm)}
                         for r, enc, wm in arms[name]]}

    shared = c.model_dump(include=set(PanelConfig.model_fields), mode="json")
    if budget is not None:
        pair = (ref, other)
        shared["training_budget"] = {
            **{k: budget[k] for k in ("matched", "steps", "batch_size", "data", "flops_tolerance")},
            "flops_per_step": {n: budget["flops_per_step"][n] for n in pair},
            "untrained": [n for n in pair if n in budget["untrained"]]}
    return build(ContractConfig, {
        **shared, "kind": "contract", "name": f"{c.name}/{ref}-vs-{other}",
        "candidate": arm(ref), "baseline": arm(other), "task": "plan",
        "out_dir": str(Path(c.out_dir) / "pairs" / f"{ref}-vs-{other}")},
        source=f"{c.name}: contract {ref} vs {other}")


def reuse_candidate_episodes(donor: Path, target: Path) -> int:
    """Copy the candidate's stored episodes (and panel frames) of an earlier pair with the same
    candidate and panel into `target`, so they are not run again; returns rows copied."""
    import shutil

    from jepalab.eval.store import COLUMNS, EpisodeStore

    with EpisodeStore(donor / "episodes.sqlite") as src:
        rows = [{k: r[k] for k in COLUMNS} for r in src.rows(arm="candidate")]
    target.mkdir(parents=True, exist_ok=True)
    with EpisodeStore(target / "episodes.sqlite") as dst:
        n = dst.add_many(rows, ignore_duplicate=True)
    if (donor / "frames").is_dir():
        (target / "frames").mkdir(exist_ok=True)
        for f in (donor / "frames").glob("*.npy"):
            if not (target / "frames" / f.name).exists():
                shutil.copyfile(f, target / "frames" / f.name)
    return n


def finished_pair(contract: ContractConfig) -> tuple[Any, Path] | None:
    """(record, card) of a pair whose evaluation already finished for exactly this contract and
    these checkpoints (store holds every episode, evidence and card written), else None."""
    from jepalab.eval.evidence import EvidenceRecord
    from jepalab.eval.panel import pending_cells
    from jepalab.eval.store import EpisodeStore
    from jepalab.train.checkpoint import checkpoint_sha

    run_dir = Path(contract.out_dir)
    paths = [run_dir / n for n in ("evidence.json", "card.html", "episodes.sqlite")]
    if not all(p.is_file() for p in paths):
        return None
    with EpisodeStore(paths[2]) as store:
        stored = store.meta.get("contract")
        if stored is None or json.loads(stored) != contract.model_dump(mode="json"):
            return None
        if pending_cells(contract, store):
            return None
    record = EvidenceRecord.load(paths[0])
    shas = (record.encoder_checkpoint.sha256, record.baseline.encoder_checkpoint.sha256)
    now = (checkpoint_sha(contract.candidate.runs[0].encoder),
           checkpoint_sha(contract.baseline.runs[0].encoder))
    return (record, paths[1]) if shas == now else None


# ---------------------------------------------------------------- representation metrics


def representation_metrics(c: CompareConfig, wm_path: Path) -> dict[str, Any]:
    """Probe RMSE (and R^2 per state variable), kNN precision@k, rollout error at the horizon
    and label efficiency of one world model's latents on its held-out episodes (cached by
    world-model sha256 + settings)."""
    from jepalab.train.checkpoint import checkpoint_sha

    settings = {"probe": c.probe.model_dump(), "horizon": c.rollout_horizon}
    key = digest({"wm": checkpoint_sha(wm_path), "settings": settings})
    path = Path(c.out_dir) / "metrics" / f"{key[:16]}.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("format") == METRICS_FORMAT and doc.get("key") == key:
            return doc["metrics"]
    m = _measure(c, wm_path)
    atomic_write_json(path, {"format": METRICS_FORMAT, "key": key, "world_model": str(wm_path),
                             "metrics": m})
    return m


def state_names(scene: str, kwargs: dict[str, Any]) -> list[str]:
    """The scene's state variables, in the order its `state` (and a dataset's states) use."""
    from jepalab.envs import make

    env = make(scene, image_size=16, **kwargs)
    try:
        return list(env.unwrapped.state_names)
    finally:
        env.close()


def _measure(c: CompareConfig, wm_path: Path) -> dict[str, Any]:
    from jepalab.data.store import TrajectoryStore
    from jepalab.eval.downstream import area_under_curve, label_efficiency
    from jepalab.eval.extras import _latents
    from jepalab.eval.probes import fit_linear_probe, probe_error
    from jepalab.eval.retrieval import LatentIndex, precision_at_k
    from jepalab.eval.rollout import rollout_error_vs_horizon
    from jepalab.train.worldmodel import load_world_model

    p = c.probe
    wm = load_world_model(wm_path)
    store = TrajectoryStore.open(wm.manifest["data_path"], verify=False)
    train = list(wm.manifest["split"]["train_episodes"])[: p.train_episodes]
    z_tr, y_tr, g_tr = _latents(wm, store, train, p.every)
    z_te, y_te, _ = _latents(wm, store, wm.val_episodes, p.every)
    probe = fit_linear_probe(z_tr, y_tr, ridge=p.ridge)
    err = probe_error(probe, z_te, y_te, state_names(c.scene.name, c.scene.kwargs))
    rmse = err["rmse_mean"]
    k = min(p.knn_k, len(z_tr))
    prec = precision_at_k(LatentIndex(z_tr), z_te, y_te, y_tr, k=k, tol=p.retrieval_tol,
                          dims=p.retrieval_dims)
    roll = rollout_error_vs_horizon(wm, store, horizon=c.rollout_horizon, n_windows=128, seed=0)
    l1, copy = roll["l1"]["mean"], roll["copy_l1"]["mean"]
    curve = label_efficiency(z_tr, y_tr, z_te, y_te, budgets=p.label_budgets, groups=g_tr,
                             seeds=(0, 1, 2))
    # R^2 per variable; None where a variable is constant in the test split (undefined)
    r2 = {n: v if math.isfinite(v) else None for n, v in err["r2"].items()}
    return {
        "probe_rmse": float(rmse), "probe_r2": r2, "knn_precision": float(prec), "knn_k": k,
        "rollout_l1": float(l1[-1]), "rollout_copy_l1": float(copy[-1]),
        "rollout_rel": float(l1[-1] / max(copy[-1], 1e-12)),
        "rollout_curve": [[h, a / max(b, 1e-12)] for h, a, b in zip(roll["horizon"], l1, copy)],
        "label_efficiency": [[int(q.budget), float(q.mean_error)] for q in curve],
        "label_efficiency_area": float(area_under_curve(curve)),
        "probe_rows": {"train": int(len(z_tr)), "test": int(len(z_te))},
    }


# ---------------------------------------------------------------- the whole comparison


def compare(c: CompareConfig, progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Run (or resume) the comparison; writes OUT_DIR/compare.json and the comparison card
    (compare.html, compare.md). Returns (summary, card html path)."""
    from jepalab.data.store import TrajectoryStore
    from jepalab.eval.compare_card import write_compare_card
    from jepalab.eval.panel import evaluate

    t0 = time.perf_counter()
    out = Path(c.out_dir)
    _say(progress, f"== {c.name}: data")
    data = dataset(c, progress)
    preflight(c, int(TrajectoryStore.open(data, verify=False).image_shape[0]))
    runs = resolve_runs(c, data)
    _say(progress, "== matched budget")
    budget = check_budget(c, runs, step_flops(c, runs, progress))
    arms: dict[str, list[tuple[Run, Path, Path]]] = {}
    wall: dict[str, list[float]] = {}
    for name, rs in runs.items():
        arms[name], wall[name] = [], []
        for r in rs:
            _say(progress, f"== {name} (seed {r.seed}): encoder, world model")
            enc, seconds = train_encoder(r, progress)
            arms[name].append((r, enc, train_world_model(c, r, enc, data, progress)))
            wall[name].append(seconds)
    ref = c.reference_name
    pairs: dict[str, Any] = {}
    donor: Path | None = None
    for other in (n for n in runs if n != ref):
        contract = pair_contract(c, ref, other, arms, budget)
        if donor is not None:
            reuse_candidate_episodes(donor, Path(contract.out_dir))
        _say(progress, f"== panel: {ref} vs {other}")
        done = finished_pair(contract)
        record, card = done if done else evaluate(contract, progress=progress)
        donor = Path(contract.out_dir)
        pairs[other] = {"record": record, "evidence": str(donor / "evidence.json"),
                        "card": str(card)}
    _say(progress, "== representation metrics")
    entries = []
    for name, rs in runs.items():
        per_seed = [representation_metrics(c, wm) for _, _, wm in arms[name]]
        entries.append({
            "name": name, "objective": rs[0].objective, "train": rs[0].train,
            "encoders": [str(enc) for _, enc, _ in arms[name]],
            "world_models": [str(wm) for _, _, wm in arms[name]],
            "mask": rs[0].cfg.mask.model_dump() if rs[0].train else None,
            "metrics": _mean_metrics(per_seed), "per_seed": per_seed,
            "cost": {"wall_s": float(np.mean(wall[name])),
                     "flops_per_step": budget["flops_per_step"][name],
                     "flops": budget["flops_per_step"][name] * rs[0].cfg.steps
                     if rs[0].train else 0},
            "success": _success(name, ref, pairs),
        })
    summary = {"format": "jepalab.compare/1", "name": c.name, "reference": ref,
               "data": str(data), "config": c.model_dump(mode="json"), "budget": budget,
               "entries": entries,
               "pairs": {k: {"accepted": v["record"].decision.accepted,
                             "rule": v["record"].decision.rule,
                             "reasons": v["record"].decision.reasons,
                             "evidence": v["evidence"], "card": v["card"]}
                         for k, v in pairs.items()},
               "elapsed_s": time.perf_counter() - t0}
    atomic_write_json(out / "compare.json", summary)
    html, _ = write_compare_card(out, summary)
    return summary, html


def _mean_metrics(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Float metrics averaged over pretraining seeds, also per variable (R^2 per state variable;
    None if undefined in any seed); counts and curves of the first seed."""
    m = dict(per_seed[0])
    for k, v in per_seed[0].items():
        if isinstance(v, float):
            m[k] = float(np.mean([s[k] for s in per_seed]))
        elif k == "probe_r2":
            vals = {n: [s[k][n] for s in per_seed] for n in v}
            m[k] = {n: None if None in x else float(np.mean(x)) for n, x in vals.items()}
    return m


def _success(name: str, ref: str, pairs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{condition label: {value, ci_low, ci_high, n}} of one entry, from its pair's record."""
    if not pairs:
        return {}
    record = pairs[name]["record"] if name != ref else next(iter(pairs.values()))["record"]
    arm = "candidate" if name == ref else "baseline"
    return {cell.label: {"value": cell.value, "ci_low": cell.ci_low, "ci_high": cell.ci_high,
                         "n": cell.n} for cell in record.results if cell.arm == arm}
