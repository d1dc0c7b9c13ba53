"""Collapse monitors: is the representation still spread out, and does the predictor track it?"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from jepalab.train import distributed

# A representation is flagged as collapsing when its per-dimension spread or its effective rank
# falls below these fractions (of the layer-normed unit scale / of the embedding width).
MIN_STD = 0.05
MIN_RANK_FRACTION = 0.02


def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """Effective rank (RankMe, Garrido et al. 2023): exp(entropy of normalised singular values).

    z: [N, D]. Ranges from 1 (collapsed to a line) to min(N, D).
    """
    s = torch.linalg.svdvals(z.float())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_stats(target_tokens: Tensor, pred: Tensor, tgt: Tensor) -> dict[str, float]:
    """target_tokens [B, N, D]; pred, tgt [K, D] (predicted and target embeddings at target tokens).

    std: mean over dimensions of the per-dimension std of the pooled target embeddings across the
    batch; rankme: effective rank of the token embeddings; cos: mean cosine(pred, target).
    """
    target_tokens = distributed.gather_nograd(target_tokens)
    pred, tgt = distributed.gather_nograd(pred), distributed.gather_nograd(tgt)
    pooled = target_tokens.mean(1)
    tokens = target_tokens.reshape(-1, target_tokens.shape[-1])
    if tokens.shape[0] > 4096:  # SVD cost bound; a strided subset keeps it representative
        tokens = tokens[:: tokens.shape[0] // 4096 + 1]
    return {
        "std": float(pooled.std(0).mean()) if pooled.shape[0] > 1 else float("nan"),
        "token_std": float(tokens.std(0).mean()),
        "rankme": rankme(tokens),
        "cos": float(F.cosine_similarity(pred, tgt, dim=-1).mean()),
    }


def collapse_warning(stats: dict[str, float], dim: int) -> str | None:
    """A one-line warning if the statistics indicate collapse, else None."""
    problems = []
    if stats.get("token_std", 1.0) < MIN_STD:
        problems.append(f"token std {stats['token_std']:.4f} < {MIN_STD}")
    if "rankme" in stats and stats["rankme"] < max(1.5, MIN_RANK_FRACTION * dim):
        problems.append(f"effective rank {stats['rankme']:.1f} of {dim}")
    return ("representation collapse suspected: " + ", ".join(problems)) if problems else None
