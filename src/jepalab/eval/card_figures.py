"""Figures of the evaluation card, as PNG bytes (matplotlib `Figure` on an Agg canvas, never
pyplot, so nothing global is touched; frame strips with PIL)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from jepalab.eval.evidence import ARMS, EvidenceRecord, condition_label

COLOURS = {"candidate": "#1f77b4", "baseline": "#ff7f0e"}
MAX_FRAMES = 8


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _figure(w: float = 6.4, h: float = 3.4) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas only

    return Figure(figsize=(w, h), layout="constrained")


def success_plot(record: EvidenceRecord) -> bytes:
    keys = record.conditions()
    fig = _figure(max(4.0, 1.3 * len(keys) + 2), 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    for j, arm in enumerate(ARMS):
        cells = [record.result(k, arm) for k in keys]
        v = np.array([c.value for c in cells])
        err = np.array([[c.value - c.ci_low for c in cells], [c.ci_high - c.value for c in cells]])
        name = record.objective.name if arm == "candidate" else record.baseline.name
        ax.bar(x + (j - 0.5) * 0.38, v, 0.38, yerr=err, capsize=4, color=COLOURS[arm],
               label=f"{arm} ({name})")
    ax.set_xticks(x, [condition_label(*k) for k in keys], rotation=15)
    ax.set_ylabel(f"{record.metric} (95 % CI)")
    ax.set_ylim(0, 1.05 if all(c.ci_high <= 1 for c in record.results) else None)
    ax.legend(fontsize=8)
    return _png(fig)


def curve_plot(data: dict[str, list], xlabel: str, ylabel: str, logx: bool) -> bytes:
    fig = _figure(5.2, 3.2)
    ax = fig.add_subplot()
    for arm, pts in data.items():
        xy = np.asarray(pts, dtype=float).reshape(-1, 2)
        ax.plot(xy[:, 0], xy[:, 1], "o-", label=arm, color=COLOURS.get(arm))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _png(fig)


def pca_plot(latents: dict[str, tuple], colour_name: str) -> bytes:
    fig = _figure(4.2 * len(latents), 3.6)
    rng = np.random.default_rng(0)  # subsample for a readable scatter; fixed for reproducibility
    for i, (arm, (z, c)) in enumerate(latents.items()):
        z, c = np.asarray(z, dtype=np.float64), np.asarray(c, dtype=np.float64)
        if len(z) > 2000:
            keep = rng.choice(len(z), 2000, replace=False)
            z, c = z[keep], c[keep]
        zc = z - z.mean(0)
        _, s, vt = np.linalg.svd(zc, full_matrices=False)
        pcs = zc @ vt[:2].T
        pcs = np.pad(pcs, ((0, 0), (0, 2 - pcs.shape[1])))
        var = s**2 / max((s**2).sum(), 1e-12)
        ax = fig.add_subplot(1, len(latents), i + 1)
        sc = ax.scatter(pcs[:, 0], pcs[:, 1], c=c, s=6, cmap="viridis")
        ax.set_title(arm, fontsize=10)
        ax.set_xlabel(f"PC1 ({100 * var[0]:.0f} %)")
        ax.set_ylabel(f"PC2 ({100 * (var[1] if len(var) > 1 else 0):.0f} %)")
        fig.colorbar(sc, ax=ax, label=colour_name)
    return _png(fig)


def strip(frames: list[np.ndarray]) -> bytes:
    """Up to 8 frames side by side, upscaled (nearest) to >= 96 px high, as PNG."""
    from PIL import Image

    fs = [np.asarray(f) for f in frames[:MAX_FRAMES]]
    h = max(f.shape[0] for f in fs)
    fs = [np.pad(f, ((0, h - f.shape[0]), (0, 2), (0, 0)), constant_values=255) for f in fs]
    img = np.concatenate(fs, axis=1)
    k = max(1, math.ceil(96 / h))
    img = img.repeat(k, axis=0).repeat(k, axis=1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()
