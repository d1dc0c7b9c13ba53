"""What CEM and MPPI share: the config, the result, energies, the warm-start shift and the loop.

Both planners are one sampling loop (`optimize`) that differs only in how a batch of scored
candidates updates the Gaussian over action sequences (`DistributionUpdate`). Each iteration:

1. draw S candidate sequences ``clip(mean + std * eps)`` with ``eps ~ N(0, 1)`` from the caller's
   generator; candidate 0 is the current mean itself (so a warm-started plan is always scored);
2. ``latents = unroll(candidates)`` -- ONE batched call, [S, H, A] -> [S, H, ...];
3. ``energies = cost(latents)`` -> [S] (NaN counts as +inf);
4. ``new_mean, new_std = update(candidates, energies, cfg)``, then
   ``mean = momentum * mean + (1 - momentum) * new_mean`` (same for std) and
   ``std = max(std, min_std)``.

The returned plan is the lowest-energy candidate scored over all iterations, so
`PlanResult.final_energy` is that plan's exact energy (no extra unroll call is spent scoring a
final mean) and is never worse than any mean that was scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from jepalab.errors import JepalabError

Unroll = Callable[[Tensor], Tensor]  # actions [S, H, A] -> latents [S, H, ...]
Cost = Callable[[Tensor], Tensor]  # latents [S, H, ...] -> energies [S]
DistributionUpdate = Callable[[Tensor, Tensor, "PlannerConfig"], tuple[Tensor, Tensor]]

METHODS = ("cem", "mppi")
METRICS = ("l1", "l2", "cosine")


class PlanningError(JepalabError, ValueError):
    """A bad planner config, energy spec or unroll/cost output (also a ValueError)."""


# ---------------------------------------------------------------------------- config


def _bound(name: str, value: Any, action_dim: int) -> float | tuple[float, ...]:
    """A scalar or a per-dimension sequence of finite floats (lists from YAML become tuples)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        vals: tuple[float, ...] = (float(value),)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        vals = tuple(float(v) for v in value)
        if len(vals) not in (1, action_dim):
            raise PlanningError(
                f"PlannerConfig.{name}: needs 1 or action_dim={action_dim} values, "
                f"got {len(vals)}"
            )
    else:
        raise PlanningError(f"PlannerConfig.{name}: must be a float or a list, got {value!r}")
    if not all(math.isfinite(v) for v in vals):
        raise PlanningError(f"PlannerConfig.{name}: must be finite, got {value!r}")
    return vals[0] if len(vals) == 1 else vals


@dataclass(frozen=True)
class PlannerConfig:
    """Settings of a sampling planner over action sequences [horizon, action_dim].

    method:      "cem" (mean/std of the `elites` lowest-energy candidates) or "mppi"
                 (softmax-weighted mean/std, see `mppi.py`).
    horizon:     H, steps per planned sequence.
    samples:     S, candidates per iteration (all scored in one unroll call).
    iterations:  distribution updates per plan (= unroll calls per plan).
    elites:      CEM only; None -> max(2, samples // 10), capped at samples.
    temperature: MPPI only; in units of the batch's energy std (energies are standardised
                 before the softmax, so one value suits encoders with different latent scales).
    init_std:    std of the sampling Gaussian at the start of every plan (action units).
    min_std:     floor on the std after each update (keeps exploring; 0 allows collapse).
    momentum:    new = momentum * old + (1 - momentum) * update, for mean and std; 0 = no
                 smoothing.
    action_low, action_high: bounds, a scalar or one value per action dim; every candidate
                 and the returned plan are clipped to them.
    warm_start:  MPC starts each plan from the previous plan shifted by the executed steps.
    """

    method: str = "cem"
    horizon: int = 10
    samples: int = 256
    iterations: int = 4
    elites: int | None = None
    temperature: float = 0.25
    init_std: float = 0.5
    min_std: float = 0.05
    momentum: float = 0.0
    action_low: float | tuple[float, ...] = -1.0
    action_high: float | tuple[float, ...] = 1.0
    action_dim: int = 2
    warm_start: bool = True

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> PlanningError:
            return PlanningError(f"PlannerConfig.{name}: {rule}, got {getattr(self, name)!r}")

        if self.method not in METHODS:
            raise fail("method", f"must be one of {METHODS}")
        for name, lo in (("horizon", 1), ("samples", 2), ("iterations", 1), ("action_dim", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise fail(name, f"must be an int >= {lo}")
        elites = self.elites
        if elites is None:
            elites = min(self.samples, max(2, self.samples // 10))
            object.__setattr__(self, "elites", elites)
        if not isinstance(elites, int) or isinstance(elites, bool) or not elites >= 1:
            raise fail("elites", "must be an int >= 1 (or None)")
        if elites > self.samples:
            raise fail("elites", f"must be <= samples={self.samples}")
        for name in ("temperature", "init_std", "min_std", "momentum"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise fail(name, "must be a finite number")
            object.__setattr__(self, name, float(v))
        if self.temperature <= 0:
            raise fail("temperature", "must be > 0")
        if self.init_std <= 0:
            raise fail("init_std", "must be > 0")
        if not 0 <= self.min_std <= self.init_std:
            raise fail("min_std", f"must be in [0, init_std={self.init_std}]")
        if not 0 <= self.momentum < 1:
            raise fail("momentum", "must be in [0, 1)")
        if not isinstance(self.warm_start, bool):
            raise fail("warm_start", "must be a bool")
        low = _bound("action_low", self.action_low, self.action_dim)
        high = _bound("action_high", self.action_high, self.action_dim)
        object.__setattr__(self, "action_low", low)
        object.__setattr__(self, "action_high", high)
        lo_t, hi_t = self.bounds()
        if not bool((lo_t < hi_t).all()):
            raise fail("action_high", f"must be > action_low={low!r} in every dim")

    def bounds(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(low [A], high [A]) float32 on `device`."""
        lo, hi = (
            torch.as_tensor(v, dtype=torch.float32, device=device).expand(self.action_dim).clone()
            for v in (self.action_low, self.action_high)
        )
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- result


@dataclass(frozen=True)
class PlanResult:
    """actions: [H, A] float32, clipped to the bounds, on the generator's device.
    energy_trace: per iteration, the LOWEST energy among that iteration's S candidates.
    final_energy: energy of `actions` (= min(energy_trace)).
    time_s: wall time of the plan call.  iterations: unroll calls made."""

    actions: Tensor
    energy_trace: list[float]
    final_energy: float
    time_s: float
    iterations: int


# ---------------------------------------------------------------------------- energies


def check_weights(weights: str | Tensor, where: str) -> Tensor | None:
    """Validate an energy's step weights ("final", "all" or a Tensor [H] >= 0); returns the
    tensor as float32, or None for the named kinds. `where` names the caller in errors."""
    if isinstance(weights, Tensor):
        w = weights.detach().to(torch.float32)
        if w.ndim != 1 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise PlanningError(
                f"{where}.weights: a tensor must be [H], finite and >= 0, got {weights}"
            )
        return w
    if weights not in ("final", "all"):
        raise PlanningError(
            f"{where}.weights: must be 'final', 'all' or a Tensor [H], got {weights!r}"
        )
    return None


def step_energy(
    per_step: Callable[[Tensor], Tensor],
    weights: str | Tensor = "final",
    where: str = "step_energy",
) -> Cost:
    """A cost callable from a per-step cost, predicted latents [S, H, ...] -> [S, H]:
    weights "final" -> last step only; "all" -> uniform mean over the H steps; a Tensor [H]
    (>= 0) -> weighted sum over steps. `where` names the caller in errors."""
    w = check_weights(weights, where)

    def cost(latents: Tensor) -> Tensor:
        steps = per_step(latents)
        if w is not None:
            if w.shape[0] != steps.shape[1]:
                raise PlanningError(
                    f"{where}.weights: has {w.shape[0]} entries, horizon is {steps.shape[1]}"
                )
            return (steps * w.to(steps.device)).sum(1)
        return steps[:, -1] if weights == "final" else steps.mean(1)

    return cost


def goal_energy(
    goal_latent: Tensor,
    metric: str = "l1",
    weights: str | Tensor = "final",
) -> Cost:
    """A cost callable: distance of predicted latents [S, H, ...] to the goal latent.

    goal_latent: [...] (the latents' trailing shape, e.g. [D] or [N, D]) or [1, ...].
    metric, per step: "l1" = mean |z - g| over all latent dims; "l2" = mean (z - g)^2 over all
    latent dims; "cosine" = 1 - cos(z, g) along the last dim (D), averaged over tokens.
    weights: over the steps, as in `step_energy`.
    """
    if metric not in METRICS:
        raise PlanningError(f"goal_energy.metric: must be one of {METRICS}, got {metric!r}")
    goal = goal_latent.detach()

    def distance(latents: Tensor) -> Tensor:
        trailing = latents.shape[2:]
        g = goal[0] if goal.shape != trailing and goal.shape == (1, *trailing) else goal
        if g.shape != trailing:
            raise PlanningError(
                f"goal_energy: goal latent {tuple(goal.shape)} does not match predicted "
                f"latents [S, H, ...] = {tuple(latents.shape)}"
            )
        if metric == "cosine":
            d = 1.0 - torch.nn.functional.cosine_similarity(latents, g.expand_as(latents), dim=-1)
            return d.flatten(2).mean(-1) if d.ndim > 2 else d
        diff = (latents - g).flatten(2)
        return (diff.abs() if metric == "l1" else diff.square()).mean(-1)

    return step_energy(distance, weights, "goal_energy")


# ---------------------------------------------------------------------------- warm start


def shift_plan(prev_actions: Tensor, steps: int = 1, fill: str = "repeat") -> Tensor:
    """Warm start: drop the `steps` executed actions of a plan [H, A] and pad at the end.

    fill="repeat" repeats the last action (a plan that was holding a direction keeps it);
    fill="zero" pads with zeros. Returns a new [H, A] tensor; `steps` must be in 1..H.
    """
    if prev_actions.ndim != 2:
        raise PlanningError(f"shift_plan: prev_actions must be [H, A], got {prev_actions.shape}")
    h = prev_actions.shape[0]
    if not 1 <= steps <= h:
        raise PlanningError(f"shift_plan.steps: must be in 1..H={h}, got {steps}")
    if fill not in ("repeat", "zero"):
        raise PlanningError(f"shift_plan.fill: must be 'repeat' or 'zero', got {fill!r}")
    tail = prev_actions[-1:] if fill == "repeat" else torch.zeros_like(prev_actions[-1:])
    return torch.cat([prev_actions[steps:], tail.expand(steps, -1)], 0)


# ---------------------------------------------------------------------------- the loop


def plan(
    unroll: Unroll,
    cost: Cost,
    cfg: PlannerConfig,
    generator: torch.Generator,
    init: Tensor | None = None,
) -> PlanResult:
    """Plan [H, A] with the method named by cfg.method ("cem" | "mppi")."""
    # Imported here: cem.py and mppi.py import this module for the loop they share.
    from jepalab.planning.cem import cem_update
    from jepalab.planning.mppi import mppi_update

    update = {"cem": cem_update, "mppi": mppi_update}[cfg.method]
    return optimize(unroll, cost, cfg, generator, init, update)


def optimize(
    unroll: Unroll,
    cost: Cost,
    cfg: PlannerConfig,
    generator: torch.Generator,
    init: Tensor | None,
    update: DistributionUpdate,
) -> PlanResult:
    """The sampling loop shared by CEM and MPPI (module docstring); runs in inference mode.

    Samples are drawn on `generator.device`; `init` ([H, A]) must live there too.
    """
    t0 = time.perf_counter()
    device = generator.device
    h, a, s = cfg.horizon, cfg.action_dim, cfg.samples
    low, high = cfg.bounds(device)
    with torch.inference_mode():
        if init is None:
            mean = ((low + high) / 2).expand(h, a).clone()
        else:
            if init.shape != (h, a):
                raise PlanningError(f"plan.init: must be [H, A] = [{h}, {a}], got {init.shape}")
            if init.device != device:
                raise PlanningError(
                    f"plan.init: is on {init.device}, the generator on {device}; "
                    "sampling happens on the generator's device"
                )
            mean = torch.clamp(init.to(torch.float32), low, high)
        std = torch.full((h, a), cfg.init_std, device=device)
        best_actions, best_energy = mean.clone(), torch.tensor(math.inf, device=device)
        trace = []
        for _ in range(cfg.iterations):
            eps = torch.randn((s, h, a), generator=generator, device=device)
            candidates = torch.clamp(mean + std * eps, low, high)
            candidates[0] = mean
            latents = unroll(candidates)
            if latents.shape[:2] != (s, h):
                raise PlanningError(
                    f"unroll: must return [S, H, ...] = [{s}, {h}, ...], got {latents.shape}"
                )
            energies = cost(latents)
            if energies.shape != (s,):
                raise PlanningError(f"cost: must return [S] = [{s}], got {energies.shape}")
            energies = torch.nan_to_num(energies.float(), nan=math.inf)
            i = torch.argmin(energies)
            better = energies[i] < best_energy
            best_energy = torch.where(better, energies[i], best_energy)
            best_actions = torch.where(better, candidates[i], best_actions)
            trace.append(energies[i])
            new_mean, new_std = update(candidates, energies, cfg)
            mean = cfg.momentum * mean + (1 - cfg.momentum) * new_mean
            std = (cfg.momentum * std + (1 - cfg.momentum) * new_std).clamp_min(cfg.min_std)
        energy_trace = torch.stack(trace).tolist()  # one device sync, after the loop
    return PlanResult(
        actions=best_actions,
        energy_trace=energy_trace,
        final_energy=float(min(energy_trace)),
        time_s=time.perf_counter() - t0,
        iterations=cfg.iterations,
    )
