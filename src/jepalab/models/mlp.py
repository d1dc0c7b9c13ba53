"""The plain MLP used by predictors, probes and objective heads."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: int, depth: int) -> nn.Sequential:
    """[..., in_dim] -> [..., out_dim]: `depth` Linear-GELU layers of width `hidden`, then a
    Linear (depth 0: one Linear)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)
