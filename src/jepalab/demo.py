"""`jepalab demo` (`make demo`): the whole path on the embedded default, two-rooms.

collect → pretrain (I-JEPA) → random-init baseline → world models → evaluate (contract: JEPA vs
random-init under clean / lighting shift / distractors) → evidence record + card. Every stage
resumes: re-running after a crash continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jepalab.config import (
    CollectConfig,
    ContractConfig,
    PretrainConfig,
    WorldModelConfig,
    load,
)
from jepalab.io import atomic_write_json

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "demo"

QUICK = {  # overrides for `--quick`: the same path, a fraction of the work
    "episodes": 24,
    "pretrain": ["--steps=40", "--optim.warmup_steps=5", "--ckpt_every=20", "--batch_size=32"],
    "worldmodel": ["--steps=60", "--optim.warmup_steps=5", "--ckpt_every=30"],
    "contract": ["--episodes=3"],
}


def _stage(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def _done(times: dict[str, float], name: str, t: float) -> None:
    times[name] = time.perf_counter() - t
    print(f"   {times[name]:.0f} s")


def demo(out: str | Path = "runs/demo", quick: bool = False,
         wm_overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run (or resume) the demo into `out`; returns the summary also written to
    OUT/summary.json (seconds per stage, results per cell, decision, artifact paths).
    `wm_overrides`: WorldModelConfig fields (KEY=VALUE) set on both arms' world models."""
    from jepalab.data.collect import collect
    from jepalab.eval.panel import evaluate
    from jepalab.eval.tracking import tracked_training
    from jepalab.train.checkpoint import latest_checkpoint
    from jepalab.train.loop import init_checkpoint, pretrain
    from jepalab.train.worldmodel import train_worldmodel

    out = Path(out)
    t_all = time.perf_counter()
    times: dict[str, float] = {}
    q = QUICK if quick else {"pretrain": [], "worldmodel": [], "contract": []}

    t = _stage("1/5 collect two-rooms trajectories")
    ccol = load(CollectConfig, CONFIGS / "collect.yaml",
                [f"--episodes={q['episodes']}"] if "episodes" in q else [])
    fields = ccol.model_dump(exclude={"kind", "scene", "episodes"})
    collect(ccol.scene, ccol.episodes, out / "data", **fields)
    _done(times, "collect", t)

    t = _stage("2/5 pretrain the JEPA encoder")
    pcfg = load(PretrainConfig, CONFIGS / "pretrain.yaml",
                [f"--out_dir={out / 'pretrain'}", f"--data.path={out / 'data'}", *q["pretrain"]])
    jepa = tracked_training(pcfg, lambda tr: pretrain(pcfg, resume=True, tracker=tr))
    random_init = out / "random_init"
    if latest_checkpoint(random_init) is None and not (random_init / "manifest.json").is_file():
        init_checkpoint(pcfg, random_init)
    _done(times, "pretrain", t)

    t = _stage("3/5 world models (JEPA encoder, random-init encoder)")
    wms = {}
    for arm, enc in (("jepa", jepa), ("random_init", random_init)):
        wcfg = load(WorldModelConfig, CONFIGS / "worldmodel.yaml",
                    [f"--encoder={enc}", f"--data.path={out / 'data'}",
                     f"--out_dir={out / 'worldmodel' / arm}", *q["worldmodel"],
                     *wm_overrides])
        wms[arm] = tracked_training(
            wcfg, lambda tr, c=wcfg: train_worldmodel(c, resume=True, tracker=tr))
    _done(times, "worldmodels", t)

    t = _stage("4/5 evaluate the contract (plan in the panel, decide acceptance)")
    ccfg = load(ContractConfig, CONFIGS / "contract.yaml", [
        f"--out_dir={out / 'evaluate'}", *q["contract"]])
    ccfg = ccfg.model_copy(update={
        "candidate": ccfg.candidate.model_copy(update={"runs": [
            ccfg.candidate.runs[0].model_copy(update={"encoder": str(jepa),
                                                      "world_model": str(wms["jepa"])})]}),
        "baseline": ccfg.baseline.model_copy(update={"runs": [
            ccfg.baseline.runs[0].model_copy(update={"encoder": str(random_init),
                                                     "world_model": str(wms["random_init"])})]}),
    })
    record, card = evaluate(ccfg)
    _done(times, "evaluate", t)

    _stage("5/5 result")
    for cell in record.results:
        print(f"   {cell.arm:>9} {cell.condition:<16} success {cell.value:.0%} "
              f"[{cell.ci_low:.0%}, {cell.ci_high:.0%}] (n={cell.n})")
    print(f"   accepted: {record.decision.accepted} — rule {record.decision.rule}")
    for r in record.decision.reasons:
        print(f"     {r}")
    print(f"\nartifacts:\n   data        {out / 'data'}\n   encoder     {jepa}\n"
          f"   baseline    {random_init}\n   world model {wms['jepa']}\n"
          f"   evidence    {out / 'evaluate' / 'evidence.json'}\n   card        {card}")
    times["total"] = time.perf_counter() - t_all
    print(f"total {times['total']:.0f} s")
    summary = {"quick": quick, "wm_overrides": list(wm_overrides), "seconds": times,
               "accepted": record.decision.accepted, "rule": record.decision.rule,
               "reasons": record.decision.reasons,
               "results": [c.model_dump() for c in record.results],
               "artifacts": {"data": str(out / "data"), "encoder": str(jepa),
                             "baseline": str(random_init), "world_models": {
                                 k: str(v) for k, v in wms.items()},
                             "evidence": str(out / "evaluate" / "evidence.json"),
                             "card": str(card)}}
    atomic_write_json(out / "summary.json", summary)
    return summary
