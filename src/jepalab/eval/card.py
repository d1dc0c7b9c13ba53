"""The evaluation card: one page that says what was compared, how, what came out and why the rule
accepted or rejected the candidate.

`write_card(run_dir, record, store, extras)` writes RUN_DIR/card.html (self-contained: CSS inline,
images embedded as base64 PNG) and RUN_DIR/card.md with its images as RUN_DIR/card_*.png.
`card_from_run_dir(run_dir)` rebuilds both from RUN_DIR/evidence.json, RUN_DIR/episodes.sqlite
(if present) and the extras saved by `save_extras` (if present).

Extras (all optional; `extras` dict keys):
  label_efficiency:  {arm: [(labels, value), ...]}       -> curve, x on a log scale
  label_efficiency_metric: str                            (its y axis, e.g. "probe R²")
  rollout_error:     {arm: [(horizon, error), ...]}      -> curve
  latents:           {arm: (Z [N, D] float, colour [N])} -> 2-D PCA scatter coloured by a state
  latent_colour_name: str                                 (what the colour is, e.g. "agent x")
  frames:            {cell: [uint8 [H, W, 3], ...]}       cell = a condition label ("clean",
                      "name@severity") or a bare perturbation name -> best/worst/failure strips
  failure_residuals: {"dims": [int, ...], "names": [str, ...]}  latent dims the residual
                      diagnostics flag (names optional, same length)

On disk (`save_extras` / `load_extras`): RUN_DIR/extras.json holds the JSON-able parts and an
index {"latents": {arm: {"z": key, "colour": key}}, "frames": {cell: key}} of arrays stored in
RUN_DIR/extras.npz (frames of one cell stacked [T, H, W, 3] uint8); "format" is
"jepalab.card-extras/1". Arrays load with allow_pickle=False.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from jepalab.errors import JepalabError
from jepalab.eval.card_figures import curve_plot, pca_plot, strip, success_plot
from jepalab.eval.evidence import ARMS, CLEAN, EvidenceRecord, condition_key, condition_label
from jepalab.eval.rules import describe
from jepalab.eval.store import EpisodeStore
from jepalab.io import atomic_path, atomic_write_json, atomic_write_text

EXTRAS_FORMAT = "jepalab.card-extras/1"
EXTRAS_KEYS = ("label_efficiency", "label_efficiency_metric", "rollout_error", "latents",
               "latent_colour_name", "frames", "failure_residuals")

Block = tuple[Any, ...]  # ("h2", text) | ("p", text) | ("kv", rows) | ("list", items) |
#                          ("table", header, rows) | ("img", name, png, alt)


# ---------------------------------------------------------------- extras


def _check_extras(extras: dict[str, Any] | None) -> dict[str, Any]:
    extras = dict(extras or {})
    for k in extras:
        if k not in EXTRAS_KEYS:
            raise JepalabError(f"extras: unknown key {k!r} (keys: {', '.join(EXTRAS_KEYS)})")
    for name, frames in extras.get("frames", {}).items():
        for i, f in enumerate(frames):
            a = np.asarray(f)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise JepalabError(f"extras['frames'][{name!r}][{i}]: expected uint8 [H, W, 3], "
                                   f"got {a.dtype} {a.shape}")
    for arm, pair in extras.get("latents", {}).items():
        z, c = np.asarray(pair[0]), np.asarray(pair[1])
        if z.ndim != 2 or c.shape != (z.shape[0],) or z.shape[0] < 2:
            raise JepalabError(f"extras['latents'][{arm!r}]: expected Z [N, D] and colour [N] "
                               f"(N >= 2), got {z.shape} and {c.shape}")
    res = extras.get("failure_residuals")
    if res is not None and ("dims" not in res or
                            len(res.get("names") or res["dims"]) != len(res["dims"])):
        raise JepalabError("extras['failure_residuals']: needs 'dims' and, if given, as many "
                           "'names'")
    return extras


def save_extras(run_dir: str | Path, extras: dict[str, Any]) -> Path:
    """Write extras as RUN_DIR/extras.json (+ extras.npz for arrays); returns the JSON path."""
    extras = _check_extras(extras)
    run_dir = Path(run_dir)
    doc: dict[str, Any] = {"format": EXTRAS_FORMAT}
    arrays: dict[str, np.ndarray] = {}
    for k in ("label_efficiency", "rollout_error"):
        if k in extras:
            doc[k] = {arm: [[float(x), float(y)] for x, y in pts] for arm, pts in extras[k].items()}
    for k in ("label_efficiency_metric", "latent_colour_name", "failure_residuals"):
        if k in extras:
            doc[k] = extras[k]
    if "latents" in extras:
        doc["latents"] = {}
        for i, (arm, (z, c)) in enumerate(extras["latents"].items()):
            arrays[f"latents_{i}_z"], arrays[f"latents_{i}_colour"] = np.asarray(z), np.asarray(c)
            doc["latents"][arm] = {"z": f"latents_{i}_z", "colour": f"latents_{i}_colour"}
    if "frames" in extras:
        doc["frames"] = {}
        for i, (cell, frames) in enumerate(extras["frames"].items()):
            arrays[f"frames_{i}"] = np.stack([np.asarray(f) for f in frames])
            doc["frames"][cell] = f"frames_{i}"
    if arrays:
        with atomic_path(run_dir / "extras.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    return atomic_write_json(run_dir / "extras.json", doc)


def load_extras(run_dir: str | Path) -> dict[str, Any]:
    """The extras saved by `save_extras`, or {} when RUN_DIR/extras.json is absent."""
    run_dir = Path(run_dir)
    path = run_dir / "extras.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise JepalabError(f"{path}: not valid JSON ({e})") from None
    if doc.get("format") != EXTRAS_FORMAT:
        raise JepalabError(f"{path}: format {doc.get('format')!r} is not {EXTRAS_FORMAT!r}")
    out = {k: v for k, v in doc.items() if k not in ("format", "latents", "frames")}
    if "latents" in doc or "frames" in doc:
        npz_path = run_dir / "extras.npz"
        if not npz_path.is_file():
            raise JepalabError(f"{npz_path}: missing (extras.json refers to arrays in it)")
        with np.load(npz_path, allow_pickle=False) as npz:
            try:
                if "latents" in doc:
                    out["latents"] = {a: (npz[v["z"]], npz[v["colour"]])
                                      for a, v in doc["latents"].items()}
                if "frames" in doc:
                    out["frames"] = {c: list(npz[k]) for c, k in doc["frames"].items()}
            except KeyError as e:
                raise JepalabError(f"{npz_path}: array {e} named in extras.json is missing"
                                   ) from None
    return _check_extras(out)


# ---------------------------------------------------------------- content


def _fmt(d: Any) -> str:
    return json.dumps(d, sort_keys=True, default=str) if d not in ({}, None) else "—"


def _crops(policy: dict[str, Any]) -> tuple[str, str]:
    """Context and target crop definitions from the masking policy's recorded params."""
    params = policy.get("params", policy)
    kind = policy.get("kind", "unnamed")
    ctx = {k: v for k, v in params.items() if "context" in k or k in ("min_keep", "allow_overlap")}
    tgt = {k: v for k, v in params.items()
           if "target" in k or k in ("npred", "generators", "num_blocks", "spatial_scale",
                                     "temporal_scale", "aspect", "mask_ratio")}
    if kind == "multiblock":
        c = (f"one block covering {params.get('context_scale', '?')} of the token grid (aspect "
             f"{params.get('context_aspect', '?')}), minus the target blocks"
             f"{' (overlap allowed)' if params.get('allow_overlap') else ''}")
        t = (f"{params.get('npred', '?')} blocks, each {params.get('target_scale', '?')} of the "
             f"grid, aspect {params.get('target_aspect', '?')}")
        return f"{kind}: {c} — {_fmt(ctx)}", f"{kind}: {t} — {_fmt(tgt)}"
    if kind == "tube":
        return (f"tube: every token outside the masked tubes — {_fmt(ctx)}",
                f"tube: spatio-temporal tubes through the clip — {_fmt(tgt)}")
    none = "not stated in the masking policy"
    return (f"{kind}: {_fmt(ctx)}" if ctx else none, f"{kind}: {_fmt(tgt)}" if tgt else none)


def _contract(r: EvidenceRecord) -> list[tuple[str, str]]:
    ctx, tgt = _crops(r.masking_policy)
    op = r.objective.params
    loss = op.get("loss") or op.get("latent_loss")
    loss_txt = (f"{loss} between predicted and target-encoder embeddings"
                f"{' (target layer-normed)' if op.get('target_layernorm') else ''}"
                if loss else "not recorded in objective.params")
    ctrl = r.controller
    ck = f"; checkpoint {ctrl.checkpoint.path} (sha256 {ctrl.checkpoint.sha256})" \
        if ctrl.checkpoint else ""
    b = r.baseline
    enc = r.encoder_checkpoint
    rows = [
        ("Encoder checkpoint", f"{enc.path} (sha256 {enc.sha256})"),
        *[(f"  pretrain seed {c.pretrain_seed}", f"{c.path} (sha256 {c.sha256})")
          for c in r.encoder_checkpoints],
        ("Objective", f"{r.objective.name} {_fmt(op)}"),
        ("Context crop", ctx), ("Target crop", tgt), ("Latent loss", loss_txt),
        ("Masking policy (all params)", _fmt(r.masking_policy)),
        ("Downstream task", r.downstream_task),
        ("Controller", f"{ctrl.kind} {_fmt(ctrl.params)}{ck}"),
        ("Metric", r.metric), ("Rollout horizon", str(r.rollout_horizon)),
        ("Intervention budget", f"{r.intervention_budget.amount} "
                                f"{r.intervention_budget.kind.replace('_', ' ')}"),
        *([("Training budget", _fmt(r.training_budget))] if r.training_budget else []),
        ("Perturbation panel", "; ".join(
            f"{p.name} (severity {p.severity}, seed {p.seed}"
            f"{', ' + _fmt(p.params) if p.params else ''})" for p in r.perturbation_panel)
         or "none"),
        ("Seed panel", f"pretraining seeds {r.seed_panel.pretrain_seeds}; evaluation seeds "
                       f"{r.seed_panel.eval_seeds}"),
        ("Baseline", f"{b.name}: {b.encoder_checkpoint.path} (sha256 "
                     f"{b.encoder_checkpoint.sha256})"
                     f"{'; objective ' + b.objective.name if b.objective else ''}"),
        *[(f"  baseline pretrain seed {c.pretrain_seed}", f"{c.path} (sha256 {c.sha256})")
          for c in b.encoder_checkpoints],
        ("Provenance", f"created {r.created_at}; jepalab {r.jepalab_version}; git "
                       f"{r.git.commit or 'unknown'}{' (dirty)' if r.git.dirty else ''}"),
    ]
    return rows


def _episode_means(rows: list[dict[str, Any]]) -> dict[tuple[tuple[str, int], str], dict]:
    out: dict[tuple[tuple[str, int], str], dict[str, list[float]]] = {}
    for r in rows:
        acc = out.setdefault((condition_key(r["condition"], r["severity"]), r["arm"]), {})
        for col in ("final_distance", "steps", "plan_time_s"):
            if r.get(col) is not None:
                acc.setdefault(col, []).append(float(r[col]))
    return {k: {c: float(np.mean(v)) for c, v in acc.items()} for k, acc in out.items()}


def _results_table(r: EvidenceRecord, rows: list[dict[str, Any]]) -> Block:
    means = _episode_means(rows)
    body = []
    for key in r.conditions():
        for arm in ARMS:
            c = r.result(key, arm)
            m = means.get((key, arm), {})
            body.append([condition_label(*key), arm, f"{c.value:.3f}",
                         f"[{c.ci_low:.3f}, {c.ci_high:.3f}]", str(c.n),
                         *(f"{m[k]:.3g}" if k in m else "—"
                           for k in ("final_distance", "steps", "plan_time_s"))])
    return ("table", ["condition", "arm", r.metric, "95 % CI", "n", "final distance", "steps",
                      "plan time / episode (s)"], body)


def _find_frames(frames: dict[str, list], key: tuple[str, int]) -> list | None:
    return frames.get(condition_label(*key)) or frames.get(key[0])


def _failure(r: EvidenceRecord, rows: list[dict[str, Any]], extras: dict[str, Any]
             ) -> list[Block]:
    out: list[Block] = [("h2", "Failure case")]
    perturbed = [k for k in r.conditions() if k[0] != CLEAN]
    clean = r.cell(CLEAN, "candidate")
    if clean is None or not perturbed:
        return [*out, ("p", "No failure case: the panel has no perturbed condition to compare "
                            "with clean.")]
    drops = {k: clean.value - r.result(k, "candidate").value for k in perturbed}
    key = max(drops, key=lambda k: drops[k])
    label = condition_label(*key)
    bc, bk = r.result((CLEAN, 0), "baseline"), r.result(key, "baseline")
    text = (f"The candidate's largest drop from clean is under {label}: {r.metric} falls from "
            f"{clean.value:.3f} to {clean.value - drops[key]:.3f} ({-drops[key]:+.3f}); the "
            f"baseline goes from {bc.value:.3f} to {bk.value:.3f} ({bk.value - bc.value:+.3f}).")
    eps = [x for x in rows if condition_key(x["condition"], x["severity"]) == key]
    base_ok = {(x["pretrain_seed"], x["eval_seed"], x["episode"]) for x in eps
               if x["arm"] == "baseline" and x["success"]}
    failed = [x for x in eps if x["arm"] == "candidate" and not x["success"]]
    failed.sort(key=lambda x: ((x["pretrain_seed"], x["eval_seed"], x["episode"]) not in base_ok,
                               -(x.get("final_distance") or 0.0)))
    if failed:
        x = failed[0]
        both = (x["pretrain_seed"], x["eval_seed"], x["episode"]) in base_ok
        text += (f" Example: episode {x['episode']} of evaluation seed {x['eval_seed']} "
                 f"(pretraining seed {x['pretrain_seed']}) failed"
                 + (f" with final distance {x['final_distance']:.3g}"
                    if x.get("final_distance") is not None else "")
                 + (f" after {x['steps']} steps" if x.get("steps") is not None else "")
                 + ("; the baseline solved the same episode." if both else "."))
    res = extras.get("failure_residuals")
    if res and res.get("dims"):
        names = res.get("names") or [None] * len(res["dims"])
        flagged = ", ".join(f"{d}" + (f" ({n})" if n else "") for d, n in zip(res["dims"], names))
        text += (f" Residual diagnostics flag latent dimension{'s' if len(res['dims']) > 1 else ''}"
                 f" {flagged} as where the world model's prediction error concentrates.")
    else:
        text += " No residual diagnostics were available for this run."
    out.append(("p", text))
    fr = _find_frames(extras.get("frames", {}), key)
    if fr:
        out.append(("img", f"failure_{len(out)}", strip(fr), f"frames under {label}"))
    return out


def _blocks(r: EvidenceRecord, rows: list[dict[str, Any]], extras: dict[str, Any]
            ) -> list[Block]:
    d = r.decision
    b: list[Block] = [("h2", "Contract"), ("kv", _contract(r)),
                      ("h2", f"Decision: rule {d.rule}"),
                      ("p", describe(d.rule, d.rule_params)),
                      ("list", d.reasons),
                      ("h2", "Results"), _results_table(r, rows),
                      ("img", "success", success_plot(r),
                       f"{r.metric} per condition, candidate vs baseline, 95 % CIs")]
    if extras.get("label_efficiency"):
        b += [("h2", "Label efficiency"),
              ("img", "label_efficiency", curve_plot(extras["label_efficiency"], "labels",
                                                      extras.get("label_efficiency_metric",
                                                                 "score"), True),
               "label-efficiency curve")]
    if extras.get("rollout_error"):
        b += [("h2", "Rollout error vs horizon"),
              ("img", "rollout_error", curve_plot(extras["rollout_error"], "horizon (steps)",
                                                   "latent error", False), "rollout error")]
    if extras.get("latents"):
        name = extras.get("latent_colour_name", "state variable")
        b += [("h2", "Latents (2-D PCA)"),
              ("p", f"First two principal components of the latents, coloured by {name}."),
              ("img", "latents_pca", pca_plot(extras["latents"], name), "PCA of latents")]
    frames = extras.get("frames", {})
    if frames:
        keys = r.conditions()
        value = {k: r.result(k, "candidate").value for k in keys}
        best, worst = max(keys, key=lambda k: value[k]), min(keys, key=lambda k: value[k])
        picks = [(f"best cell: {condition_label(*best)}", _find_frames(frames, best)),
                 (f"worst cell: {condition_label(*worst)}", _find_frames(frames, worst))]
        if best == worst:
            picks = picks[:1]
        if not any(f for _, f in picks):  # names match no condition: show what was given
            picks = list(frames.items())[:4]
        b.append(("h2", "Example frames"))
        for i, (title, fr) in enumerate(picks):
            if fr:
                b += [("p", title), ("img", f"frames_{i}", strip(fr), title)]
    return b + _failure(r, rows, extras)


# ---------------------------------------------------------------- rendering

_CSS = """body{font-family:system-ui,sans-serif;max-width:%dpx;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top;font-size:14px}th{background:#f3f3f3}
.badge{padding:3px 10px;border-radius:4px;color:#fff;font-weight:bold}
.accepted{background:#2a7d2a}.rejected{background:#b22}.pass{color:#2a7d2a}.fail{color:#b22}
img{max-width:100%%}"""


def _verdict(accepted: bool) -> tuple[str, str]:
    return ("accepted", "ACCEPTED") if accepted else ("rejected", "REJECTED")


def _html(title: str, accepted: bool | None, blocks: list[Block], width: int) -> str:
    e = html.escape
    badge = "" if accepted is None else (
        '<span class="badge {}">{}</span>'.format(*_verdict(accepted)))
    out = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
           f"<style>{_CSS % width}</style></head><body>",
           f"<h1>{e(title)} {badge}</h1>" if badge else f"<h1>{e(title)}</h1>"]
    for blk in blocks:
        kind = blk[0]
        if kind in ("h2", "p"):
            out.append(f"<{kind}>{e(blk[1])}</{kind}>")
        elif kind == "kv":
            out.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>"
                                           for k, v in blk[1]) + "</table>")
        elif kind == "list":
            out.append("<ul>" + "".join(
                f"<li class=\"{'pass' if s.startswith('PASS') else 'fail'}\">{e(s)}</li>"
                for s in blk[1]) + "</ul>")
        elif kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in blk[1]) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row)
                                 + "</tr>" for row in blk[2]) + "</table>")
        elif kind == "img":
            data = base64.b64encode(blk[2]).decode("ascii")
            out.append(f"<p><img alt=\"{e(blk[3])}\" src=\"data:image/png;base64,{data}\"></p>")
    return "\n".join([*out, "</body></html>\n"])


def _md(title: str, accepted: bool | None, blocks: list[Block], images: dict[str, str]) -> str:
    def cell(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    out = [f"# {title}", ""]
    if accepted is not None:
        out += [f"**Decision: {_verdict(accepted)[1]}**", ""]
    for blk in blocks:
        kind = blk[0]
        if kind == "h2":
            out += [f"## {blk[1]}", ""]
        elif kind == "p":
            out += [blk[1], ""]
        elif kind == "kv":
            out += ["| field | value |", "|---|---|",
                    *[f"| {cell(k.strip())} | {cell(v)} |" for k, v in blk[1]], ""]
        elif kind == "list":
            out += [f"- {s}" for s in blk[1]] + [""]
        elif kind == "table":
            out += ["| " + " | ".join(blk[1]) + " |", "|" + "---|" * len(blk[1]),
                    *["| " + " | ".join(cell(c) for c in row) + " |" for row in blk[2]], ""]
        elif kind == "img":
            out += [f"![{blk[3]}]({images[blk[1]]})", ""]
    return "\n".join(out)


def write_blocks(out_dir: str | Path, stem: str, title: str, blocks: list[Block],
                 accepted: bool | None = None, width: int = 980) -> tuple[Path, Path]:
    """Render blocks as OUT_DIR/STEM.html (self-contained) and OUT_DIR/STEM.md with its images
    as OUT_DIR/STEM_*.png; `accepted` adds the decision badge. Returns (html, md) paths."""
    out_dir = Path(out_dir)
    images = {}
    for blk in blocks:
        if blk[0] == "img":
            name = f"{stem}_{blk[1]}.png"
            with atomic_path(out_dir / name) as tmp:
                tmp.write_bytes(blk[2])
            images[blk[1]] = name
    html_path = atomic_write_text(out_dir / f"{stem}.html", _html(title, accepted, blocks, width))
    md_path = atomic_write_text(out_dir / f"{stem}.md", _md(title, accepted, blocks, images))
    return html_path, md_path


def write_card(run_dir: str | Path, record: EvidenceRecord, store: EpisodeStore | None,
               extras: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write RUN_DIR/card.html and RUN_DIR/card.md (+ card_*.png); returns (html, md) paths."""
    extras = _check_extras(extras)
    rows = store.to_records() if store is not None else []
    title = (f"Evaluation card: {record.downstream_task} — {record.objective.name} vs "
             f"{record.baseline.name}")
    return write_blocks(run_dir, "card", title, _blocks(record, rows, extras),
                        record.decision.accepted)


def card_from_run_dir(run_dir: str | Path) -> tuple[Path, Path]:
    """Rebuild the card of an evaluate run from evidence.json, episodes.sqlite and extras."""
    run_dir = Path(run_dir)
    ev = run_dir / "evidence.json"
    if not ev.is_file():
        raise JepalabError(f"{run_dir}: no evidence.json (run `jepalab evaluate` first)")
    record = EvidenceRecord.load(ev)
    db = run_dir / "episodes.sqlite"
    extras = load_extras(run_dir)
    if not db.is_file():
        return write_card(run_dir, record, None, extras)
    with EpisodeStore(db) as store:
        return write_card(run_dir, record, store, extras)
