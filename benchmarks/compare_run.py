"""The comparison figures: `jepalab compare CONFIG`, then its table as the README prints it.

Runs (or resumes: finished encoders, world models and episodes are reused by hash) the
comparison and prints one row per entry: linear-probe state RMSE, kNN retrieval precision,
rollout error at the contract's horizon (relative to copying the last latent), label-efficiency
area, planning success per condition with Wilson 95 % CIs, training cost, and the reference's
acceptance decision against the entry; then, per operation, the best and worst entry; then the
linear probe's R^2 per state variable (what each latent keeps).

    python benchmarks/compare_run.py configs/compare/two_rooms.yaml [--json OUT.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jepalab.config import CompareConfig, load
from jepalab.eval.compare import compare
from jepalab.eval.compare_card import operations
from jepalab.io import atomic_write_json, git_info, now_iso


def _succ(s: dict | None) -> str:
    return "—" if not s else f"{s['value']:.0%} [{s['ci_low']:.0%}, {s['ci_high']:.0%}]"


def table(summary: dict) -> str:
    ref = summary["reference"]
    conds = list(dict.fromkeys(c for e in summary["entries"] for c in e["success"]))
    head = ["entry", "probe RMSE ↓", "kNN prec. ↑", "rollout rel. ↓", "label-eff. area ↓",
            *[f"success {c}" for c in conds], "GFLOP/step", f"{ref} accepted vs it"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in summary["entries"]:
        m, name = e["metrics"], e["name"]
        verdict = "—" if name == ref else str(summary["pairs"][name]["accepted"]).lower()
        cells = [f"{name} ({e['objective']})", f"{m['probe_rmse']:.3f}",
                 f"{m['knn_precision']:.2f}", f"{m['rollout_rel']:.2f}",
                 f"{m['label_efficiency_area']:.3f}",
                 *[_succ(e["success"].get(c)) for c in conds],
                 f"{e['cost']['flops_per_step'] / 1e9:.1f}", verdict]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| operation | best (measured) | worst = main failure mode |", "|---|---|---|"]
    for op in operations(summary):
        v = op["values"]
        if op["tie"]:
            lines.append(f"| {op['operation']} | tie | tie |")
            continue
        note = " (CIs overlap the runner-up)" if op.get("overlap") else ""
        lines.append(f"| {op['operation']} | {op['best']} {v[op['best']]:.3g}{note} | "
                     f"{op['worst']} {v[op['worst']]:.3g} |")
    r2 = {e["name"]: e["metrics"].get("probe_r2") for e in summary["entries"]}
    if all(r2.values()):  # what each latent keeps: linear-probe R^2 per state variable
        names = list(next(iter(r2.values())))
        lines += ["", "| entry | " + " | ".join(f"R² {n}" for n in names) + " |",
                  "|" + "---|" * (len(names) + 1)]
        lines += [f"| {e} | " + " | ".join("—" if v[n] is None else f"{v[n]:.2f}" for n in names)
                  + " |" for e, v in r2.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--json", default=None, help="default: runs/bench/compare_<config stem>.json")
    args = p.parse_args(argv)
    summary, html = compare(load(CompareConfig, args.config))
    print(f"\n{summary['name']}: card {html}\n")
    print(table(summary))
    out = args.json or f"runs/bench/compare_{Path(args.config).stem}.json"
    atomic_write_json(out, {"benchmark": "compare", "config": args.config, "created": now_iso(),
                            "git": git_info(), "table": table(summary), **summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
