"""Cross-entropy method: refit the Gaussian to the `elites` lowest-energy candidates."""

from __future__ import annotations

import torch
from torch import Tensor

from jepalab.planning.base import Cost, PlannerConfig, PlanResult, Unroll, optimize


def cem_update(candidates: Tensor, energies: Tensor, cfg: PlannerConfig) -> tuple[Tensor, Tensor]:
    """candidates [S, H, A], energies [S] -> (mean [H, A], std [H, A]) of the elites.

    The std is the population std (divide by k), so k identical elites give std 0 before the
    `min_std` floor.
    """
    k = int(cfg.elites or 1)
    idx = torch.topk(energies, k, largest=False, sorted=False).indices
    elites = candidates[idx]
    return elites.mean(0), elites.std(0, correction=0)


def cem(
    unroll: Unroll,
    cost: Cost,
    cfg: PlannerConfig,
    generator: torch.Generator,
    init: Tensor | None = None,
) -> PlanResult:
    """Plan [H, A] with CEM; see `jepalab.planning.base` for the shared loop and result."""
    return optimize(unroll, cost, cfg, generator, init, cem_update)
