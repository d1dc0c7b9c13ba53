"""The demo's figures: wall time per stage and the evidence cells of `jepalab demo`.

Runs (or resumes — then the times cover only what was left) the demo into --out and prints the
README table: seconds per stage and the success rate of each arm under each condition with its
Wilson 95 % CI, and the rule's decision.

    python benchmarks/demo_run.py [--out runs/bench/demo] [--quick] [--json runs/bench/demo.json]
        [--wm-set predictor.keypoints=null ...]

`--wm-set KEY=VALUE` sets a field of both arms' world-model configs (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from jepalab.demo import demo
from jepalab.io import atomic_write_json, git_info, now_iso


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench/demo")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fresh", action="store_true", help="delete --out first (a timed run)")
    p.add_argument("--json", default="runs/bench/demo.json")
    p.add_argument("--wm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a world-model config field on both arms")
    args = p.parse_args(argv)
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    s = demo(Path(args.out), quick=args.quick, wm_overrides=tuple(args.wm_set))
    print(f"\n{torch.get_num_threads()} threads; stages (s): " + ", ".join(
        f"{k} {v:.0f}" for k, v in s["seconds"].items()))
    print("\n| condition | JEPA success [95 % CI] | random-init success [95 % CI] | n |")
    print("|---|---|---|---:|")
    cells = {(c["condition"], c["severity"], c["arm"]): c for c in s["results"]}
    for cond, sev in dict.fromkeys((c["condition"], c["severity"]) for c in s["results"]):
        a, b = cells[(cond, sev, "candidate")], cells[(cond, sev, "baseline")]
        label = cond if cond == "clean" else f"{cond}@{sev}"
        print(f"| {label} | {a['value']:.0%} [{a['ci_low']:.0%}, {a['ci_high']:.0%}] | "
              f"{b['value']:.0%} [{b['ci_low']:.0%}, {b['ci_high']:.0%}] | {a['n']} |")
    print(f"\naccepted: {s['accepted']} ({s['rule']})")
    atomic_write_json(args.json, {"benchmark": "demo", "created": now_iso(), "git": git_info(),
                                  "threads": torch.get_num_threads(), **s})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
