"""Goal-conditioned planning in latent space: CEM / MPPI over action sequences, and MPC.

    from jepalab.planning import PlannerConfig, goal_energy, plan, run_episode
    cfg = PlannerConfig(method="cem", horizon=10, samples=256, iterations=4, action_dim=2)
    cost = goal_energy(z_goal)                        # L1 to the goal latent, final step
    res = plan(lambda a: wm.unroll_from(z0, a), cost, cfg, torch.Generator().manual_seed(0))
    res.actions  # [H, A], clipped to the bounds; res.final_energy is its exact energy

`unroll(actions [S, H, A]) -> latents [S, H, ...]` is called once per iteration with all S
candidates; `cost(latents) -> [S]`. Everything runs under torch.inference_mode() and on the
generator's device. `base.py` holds the loop CEM and MPPI share; `cem.py` / `mppi.py` only
their distribution updates; `mpc.py` the receding-horizon episode loop and GIF writer.
"""

from __future__ import annotations

from jepalab.planning.base import (
    PlannerConfig,
    PlanningError,
    PlanResult,
    goal_energy,
    plan,
    shift_plan,
    step_energy,
)
from jepalab.planning.cem import cem
from jepalab.planning.mpc import EpisodeCorrection, EpisodeResult, run_episode, write_gif
from jepalab.planning.mppi import mppi

__all__ = [
    "EpisodeResult",
    "PlanResult",
    "PlannerConfig",
    "PlanningError",
    "cem",
    "goal_energy",
    "step_energy",
    "mppi",
    "plan",
    "run_episode",
    "EpisodeCorrection",
    "shift_plan",
    "write_gif",
]
