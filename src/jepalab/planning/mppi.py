"""MPPI: refit the Gaussian to all candidates, weighted by a softmax of their energies.

Weights are ``softmax(-(E - min E) / (temperature * std(E)))``: energies are standardised per
iteration, so `temperature` is in units of the batch's energy spread rather than of the
(encoder-dependent) latent distance. Candidates with infinite energy get weight 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jepalab.planning.base import Cost, PlannerConfig, PlanResult, Unroll, optimize


def mppi_update(
    candidates: Tensor, energies: Tensor, cfg: PlannerConfig
) -> tuple[Tensor, Tensor]:
    """candidates [S, H, A], energies [S] -> weighted (mean [H, A], std [H, A]).

    Written without host syncs (no boolean indexing), so it stays fast on accelerators.
    """
    finite = torch.isfinite(energies)
    n = finite.sum().clamp_min(1)
    e = torch.where(finite, energies, 0.0)
    centred = torch.where(finite, e - e.sum() / n, 0.0)
    spread = torch.sqrt(centred.square().sum() / n).clamp_min(1e-8)
    e_min = torch.where(finite, e, torch.inf).min()
    logits = torch.where(finite, -(e - e_min) / (cfg.temperature * spread), -torch.inf)
    # All candidates non-finite: fall back to uniform weights instead of a NaN softmax.
    logits = torch.where(finite.any(), logits, 0.0)
    w = torch.softmax(logits, 0)[:, None, None]
    mean = (w * candidates).sum(0)
    std = torch.sqrt((w * (candidates - mean).square()).sum(0))
    return mean, std


def mppi(
    unroll: Unroll,
    cost: Cost,
    cfg: PlannerConfig,
    generator: torch.Generator,
    init: Tensor | None = None,
) -> PlanResult:
    """Plan [H, A] with MPPI; see `jepalab.planning.base` for the shared loop and result."""
    return optimize(unroll, cost, cfg, generator, init, mppi_update)
