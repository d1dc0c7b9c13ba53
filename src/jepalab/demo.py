"""`jepalab demo` (`make demo`): the whole path on the embedded default, two-rooms.

collect → pretrain (I-JEPA) → random-init baseline → world models → evaluate (contract: JEPA vs
random-init under clean / lighting shift / distractors) → evidence record + card. Every stage
resumes: re-running after a crash continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

from jepalab.config import (
    CollectConfig,
    ContractConfig,
    PretrainConfig,
    WorldModelConfig,
    load,
)

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


def demo(out: str | Path = "runs/demo", quick: bool = False) -> Path:
    from jepalab.data.collect import collect
    from jepalab.eval.panel import evaluate
    from jepalab.eval.tracking import tracked_training
    from jepalab.train.checkpoint import latest_checkpoint
    from jepalab.train.loop import init_checkpoint, pretrain
    from jepalab.train.worldmodel import train_worldmodel

    out = Path(out)
    t_all = time.perf_counter()
    q = QUICK if quick else {"pretrain": [], "worldmodel": [], "contract": []}

    t = _stage("1/5 collect two-rooms trajectories")
    ccol = load(CollectConfig, CONFIGS / "collect.yaml",
                [f"--episodes={q['episodes']}"] if "episodes" in q else [])
    fields = ccol.model_dump(exclude={"kind", "scene", "episodes"})
    collect(ccol.scene, ccol.episodes, out / "data", **fields)
    print(f"   {time.perf_counter() - t:.0f} s")

    t = _stage("2/5 pretrain the I-JEPA encoder")
    pcfg = load(PretrainConfig, CONFIGS / "pretrain.yaml",
                [f"--out_dir={out / 'pretrain'}", f"--data.path={out / 'data'}", *q["pretrain"]])
    jepa = tracked_training(pcfg, lambda tr: pretrain(pcfg, resume=True, tracker=tr))
    random_init = out / "random_init"
    if latest_checkpoint(random_init) is None and not (random_init / "manifest.json").is_file():
        init_checkpoint(pcfg, random_init)
    print(f"   {time.perf_counter() - t:.0f} s")

    t = _stage("3/5 world models (JEPA encoder, random-init encoder)")
    wms = {}
    for arm, enc in (("jepa", jepa), ("random_init", random_init)):
        wcfg = load(WorldModelConfig, CONFIGS / "worldmodel.yaml",
                    [f"--encoder={enc}", f"--data.path={out / 'data'}",
                     f"--out_dir={out / 'worldmodel' / arm}", *q["worldmodel"]])
        wms[arm] = tracked_training(
            wcfg, lambda tr, c=wcfg: train_worldmodel(c, resume=True, tracker=tr))
    print(f"   {time.perf_counter() - t:.0f} s")

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
    print(f"   {time.perf_counter() - t:.0f} s")

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
    print(f"total {time.perf_counter() - t_all:.0f} s")
    return card
