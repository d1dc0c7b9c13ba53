"""Latent residual diagnostics: which latent dimensions does the predictor still miss?

Given predicted and target embeddings [..., D], report the per-dimension residual (prediction −
target, averaged over samples), the per-dimension squared error, the loss (mean squared error over
all dimensions) and the dimensions whose error spikes relative to the rest (robust z-score of the
per-dimension error against the median, scaled by the median absolute deviation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ResidualReport:
    residual: np.ndarray  # [D] mean of (pred − target)
    sq_error: np.ndarray  # [D] mean of (pred − target)²
    loss: float  # mean over dimensions (and samples) of the squared error
    spikes: list[int]  # dimensions whose error is anomalously high, worst first
    zscores: np.ndarray  # [D] robust z-scores of sq_error

    def to_dict(self, names: list[str] | None = None, top: int = 10) -> dict:
        order = np.argsort(-self.sq_error)[:top]
        label = (lambda i: names[i]) if names else (lambda i: int(i))
        return {
            "loss": self.loss,
            "spikes": [label(i) for i in self.spikes],
            "worst": [
                {
                    "dim": label(i),
                    "sq_error": float(self.sq_error[i]),
                    "residual": float(self.residual[i]),
                    "z": float(self.zscores[i]),
                }
                for i in order
            ],
        }


def latent_residuals(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, z_thresh: float = 3.5
) -> ResidualReport:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    d = p.shape[-1]
    r = (p - t).reshape(-1, d)
    sq = (r**2).mean(0)
    med = np.median(sq)
    mad = np.median(np.abs(sq - med))
    scale = 1.4826 * mad if mad > 0 else max(float(np.std(sq)), 1e-12)
    z = (sq - med) / scale
    spikes = [int(i) for i in np.argsort(-z) if z[i] > z_thresh]
    return ResidualReport(
        residual=r.mean(0), sq_error=sq, loss=float(sq.mean()), spikes=spikes, zscores=z
    )
