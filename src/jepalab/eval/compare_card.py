"""The comparison card: one row per entry, the matched budget, each pair's decision and, measured,
which objective family preserved what each control operation needs.

`write_compare_card(out_dir, summary)` writes OUT_DIR/compare.html (self-contained: CSS inline,
figures as base64 PNG) and OUT_DIR/compare.md (+ compare_*.png) from the summary that
`jepalab.eval.compare.compare` saves as OUT_DIR/compare.json. Every number comes from it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jepalab.eval.card import Block, write_blocks
from jepalab.eval.card_figures import curve_plot

FAMILIES = {"jepa": "JEPA (latent prediction)", "mae": "pixel reconstruction",
            "contrastive": "invariance (contrastive/VICReg/SIGReg)",
            "vicreg": "invariance (contrastive/VICReg/SIGReg)",
            "sigreg": "invariance (contrastive/VICReg/SIGReg)", "none": "no pretraining",
            "supervised": "no pretraining, trained end to end on state labels",
            "pldm": "joint embedding with action-conditioned dynamics (PLDM)"}

# (metric key, operation, what the representation must preserve for it, higher is better)
OPERATIONS = [
    ("probe_rmse", "state estimation (linear-probe state RMSE)",
     "the task state (positions) linearly decodable from one frame", False),
    ("knn_precision", "retrieval (kNN precision@k)",
     "state neighbourhoods: frames close in latent space are close in true state", True),
    ("rollout_rel", "rollout prediction (latent L1 at the horizon / copy baseline)",
     "what the actions change, predictably over the planning horizon", False),
    ("label_efficiency_area", "label efficiency (area under probe RMSE vs labels)",
     "state that a few labelled episodes can read out", False),
]



def family(objective: str) -> str:
    return FAMILIES.get(objective, objective)


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


def _succ(s: dict[str, Any] | None) -> str:
    if not s:
        return "—"
    return f"{s['value']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] (n={s['n']})"


def _better(op: dict[str, Any], a: float, b: float) -> bool:
    """a beats b on this operation by more than the printed precision."""
    if _f(a) == _f(b):
        return False
    return a > b if op["higher"] else a < b


def _conditions(summary: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for e in summary["entries"]:
        seen.update(dict.fromkeys(e["success"]))
    return sorted(seen, key=lambda c: c != "clean")


def operations(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per operation: every entry's value, the best and the worst (measured), with tie flags."""
    ops: list[dict[str, Any]] = [{"key": k, "operation": op, "preserve": why, "higher": hi,
            "values": {e["name"]: e["metrics"][k] for e in summary["entries"]}}
           for k, op, why, hi in OPERATIONS]
    for cond in _conditions(summary):
        what = ("a goal distance the planner can descend" if cond == "clean" else
                f"the task state, unchanged by {cond.split('@')[0].replace('_', ' ')}")
        ops.append({"key": f"success:{cond}", "operation": f"planning success, {cond}",
                    "preserve": what, "higher": True,
                    "values": {e["name"]: e["success"][cond]["value"]
                               for e in summary["entries"] if cond in e["success"]},
                    "ci": {e["name"]: (e["success"][cond]["ci_low"], e["success"][cond]["ci_high"])
                           for e in summary["entries"] if cond in e["success"]}})
    for op in ops:
        vals = op["values"]
        order = sorted(vals, key=lambda n: -vals[n] if op["higher"] else vals[n])
        op["best"], op["worst"] = order[0], order[-1]
        # equal at the precision the card prints: no entry is called better on noise digits
        op["tie"] = _f(vals[order[0]]) == _f(vals[order[-1]])
        op["rank"] = {n: 1 + sum(_better(op, vals[m], vals[n]) for m in vals) for n in vals}
        ci = op.get("ci")
        # success rates: say when the best and the runner-up are not separated by their CIs
        op["overlap"] = bool(ci and len(order) > 1 and
                             ci[order[1]][1] >= ci[order[0]][0])
    return ops


def _budget_blocks(s: dict[str, Any]) -> list[Block]:
    b = s["budget"]
    gflop = {k: v / 1e9 for k, v in b["flops_per_step"].items()}
    if b["matched"]:
        text = (f"Matched: every trained entry ran {b['steps']} steps at batch "
                f"{b['batch_size']} on the same data; training FLOPs per step differ by "
                f"{b['flops_ratio']:.2f}x (tolerance {b['flops_tolerance']:g}x).")
    else:
        text = ("NOT matched (allowed by budget.allow_unequal): " + "; ".join(b["mismatches"]))
    if b["untrained"]:
        text += f" Untrained (random initialisation, no pretraining): {', '.join(b['untrained'])}."
    rows = [[e["name"], e["objective"], _f(gflop[e["name"]]), _f(e["cost"]["flops"] / 1e12),
             _f(e["cost"]["wall_s"])] for e in s["entries"]]
    return [("h2", "Matched budget"), ("p", text),
            ("p", "Data: " + json.dumps(b["data"], sort_keys=True)),
            ("table", ["entry", "objective", "GFLOP / step", "training TFLOP", "training wall s"],
             rows)]


def _results_table(s: dict[str, Any]) -> Block:
    conds = _conditions(s)
    head = ["entry", "objective", "mask", "probe RMSE ↓", "kNN P@k ↑", "rollout L1@H ↓",
            "÷ copy ↓", *[f"success {c} [95 % CI]" for c in conds], "label-eff. area ↓",
            "wall s", "GFLOP / step", f"vs {s['reference']}"]
    rows = []
    for e in s["entries"]:
        m = e["metrics"]
        mask = e["mask"]["kind"] if e["mask"] else "—"
        if e["mask"] and e["mask"]["params"]:
            mask += " " + json.dumps(e["mask"]["params"], sort_keys=True)
        pair = s["pairs"].get(e["name"])
        verdict = ("reference" if e["name"] == s["reference"] else
                   ("ACCEPTED" if pair["accepted"] else "REJECTED") if pair else "—")
        rows.append([e["name"], e["objective"], mask, _f(m["probe_rmse"]),
                     _f(m["knn_precision"]), _f(m["rollout_l1"]), _f(m["rollout_rel"]),
                     *[_succ(e["success"].get(c)) for c in conds],
                     _f(m["label_efficiency_area"]), _f(e["cost"]["wall_s"]),
                     _f(e["cost"]["flops_per_step"] / 1e9), verdict])
    return ("table", head, rows)


def _keeps_blocks(s: dict[str, Any]) -> list[Block]:
    """Linear-probe R^2 per state variable: which part of the state each latent keeps (e.g. the
    static layout but not the moving agent). Absent from summaries measured before it existed."""
    r2 = {e["name"]: e["metrics"].get("probe_r2") for e in s["entries"]}
    if not all(r2.values()):
        return []
    names = list(next(iter(r2.values())))
    rows = [[e, *[_f(v.get(n), 2) for n in names]] for e, v in r2.items()]
    return [("h2", "What each latent keeps (linear-probe R² per state variable, held-out "
                   "episodes; 1 = fully decodable, ≤ 0 = not at all)"),
            ("table", ["entry", *names], rows)]


def _preserve_blocks(s: dict[str, Any], ops: list[dict[str, Any]]) -> list[Block]:
    objective = {e["name"]: e["objective"] for e in s["entries"]}
    ref = s["reference"]
    rows = []
    for op in ops:
        v = op["values"]
        if op["tie"]:
            best = worst = f"tie: every entry {_f(v[op['best']])}"
        else:
            best = (f"{op['best']} ({family(objective[op['best']])}): {_f(v[op['best']])}"
                    + (" — CIs overlap the runner-up" if op["overlap"] else ""))
            worst = f"{op['worst']} ({family(objective[op['worst']])}): {_f(v[op['worst']])}"
        rows.append([op["operation"], op["preserve"], best, worst,
                     f"{_f(v[ref])} (rank {op['rank'][ref]} of {len(v)})"])
    fams = list(dict.fromkeys(family(objective[e["name"]]) for e in s["entries"]))
    frows = []
    for op in ops:
        v = op["values"]
        best_of = {}
        for f in fams:
            names = [n for n in v if family(objective[n]) == f]
            if names:
                best_of[f] = max(v[n] for n in names) if op["higher"] else min(v[n] for n in names)
        top = (max if op["higher"] else min)(best_of.values())
        winners = [f for f, x in best_of.items() if _f(x) == _f(top)]
        frows.append([op["operation"], *[_f(best_of.get(f)) for f in fams],
                      "tie" if len(winners) == len(best_of) else " = ".join(winners)])
    return [("h2", "What the model must preserve, and the main failure mode for control"),
            ("p", "Measured on this comparison's data and panel (↓ lower is better for errors, "
                  "higher for precision and success). 'Worst' is the entry that failed the "
                  "operation most — its main failure mode."),
            ("table", ["operation", "the representation must preserve", "best (measured)",
                       "worst = main failure mode (measured)", f"reference {ref}"], rows),
            ("h2", "Which objective family did better, per operation"),
            ("p", "The best entry of each family per operation (families with several entries, "
                  "e.g. a masking ablation, show their best)."),
            ("table", ["operation", *fams, "better"], frows)]


def _decision_blocks(s: dict[str, Any], out_dir: Path) -> list[Block]:
    b: list[Block] = [("h2", f"Acceptance: {s['reference']} against each entry")]
    for other, p in s["pairs"].items():
        card = Path(p["card"]).resolve()
        rel = card.relative_to(out_dir.resolve()) if card.is_relative_to(out_dir.resolve()) \
            else card
        word = "ACCEPTED" if p["accepted"] else "REJECTED"
        b += [("p", f"{s['reference']} vs {other}: {word} (rule {p['rule']}; evidence record "
                    f"{p['evidence']}; card {rel})"), ("list", p["reasons"])]
    return b


def success_bars(s: dict[str, Any]) -> bytes:
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state

    conds = _conditions(s)
    fig = Figure(figsize=(max(4.5, 1.6 * len(conds) + 2), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    n = len(s["entries"])
    w = 0.8 / n
    for j, e in enumerate(s["entries"]):
        cells = [e["success"].get(c, {"value": 0, "ci_low": 0, "ci_high": 0}) for c in conds]
        v = np.array([x["value"] for x in cells])
        err = np.array([[x["value"] - x["ci_low"] for x in cells],
                        [x["ci_high"] - x["value"] for x in cells]])
        ax.bar(np.arange(len(conds)) + (j - (n - 1) / 2) * w, v, w, yerr=err, capsize=3,
               label=e["name"])
    ax.set_xticks(np.arange(len(conds)), conds, rotation=15)
    ax.set_ylabel("success (95 % CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _blocks(s: dict[str, Any], out_dir: Path) -> list[Block]:
    c = s["config"]
    ops = operations(s)
    setup = [("reference (candidate)", s["reference"]),
             ("entries", ", ".join(f"{e['name']} ({e['objective']})" for e in s["entries"])),
             ("data", s["data"]), ("scene", json.dumps(c["scene"], sort_keys=True)),
             ("controller", json.dumps(c["controller"], sort_keys=True)),
             ("perturbations", ", ".join(p["name"] + ("" if p["name"] == "clean" else
                                                      f"@{p['severity']}")
                                         for p in c["perturbations"])),
             ("pretraining seeds", str(c["seeds"])), ("evaluation seeds", str(c["eval_seeds"])),
             ("episodes per cell", str(c["episodes"])),
             ("rollout horizon", str(c["rollout_horizon"])),
             ("probes", json.dumps(c["probe"], sort_keys=True)),
             ("rule", f"{c['rule']['name']} {json.dumps(c['rule']['params'], sort_keys=True)}")]
    blocks: list[Block] = [("h2", "Setup"), ("kv", setup), *_budget_blocks(s),
                           ("h2", "Results (one row per entry; means over pretraining seeds)"),
                           _results_table(s), *_keeps_blocks(s), *_preserve_blocks(s, ops),
                           *_decision_blocks(s, out_dir), ("h2", "Figures"),
                           ("img", "success", success_bars(s), "planning success per condition")]
    le = {e["name"]: e["metrics"]["label_efficiency"] for e in s["entries"]}
    blocks.append(("img", "label_efficiency", curve_plot(le, "labelled episodes",
                                                         "probe RMSE", True), "label efficiency"))
    roll = {e["name"]: e["metrics"]["rollout_curve"] for e in s["entries"]}
    blocks.append(("img", "rollout", curve_plot(roll, "horizon (steps)",
                                                "latent L1 / copy baseline", False),
                   "rollout error relative to the copy baseline"))
    return blocks


def write_compare_card(out_dir: str | Path, summary: dict[str, Any]) -> tuple[Path, Path]:
    """OUT_DIR/compare.html and OUT_DIR/compare.md (+ compare_*.png); returns their paths."""
    out_dir = Path(out_dir)
    title = f"Comparison card: {summary['name']} (reference {summary['reference']})"
    return write_blocks(out_dir, "compare", title, _blocks(summary, out_dir), width=1200)
