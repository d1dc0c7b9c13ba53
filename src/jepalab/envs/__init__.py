"""Simulated scenes behind one contract (see ``jepalab.envs.base``) and the perturbation panel.

    env = make("two-rooms", image_size=64, perturb="lighting_shift+occlusion", severity=2)
    obs, info = env.reset(seed=0)      # obs = {"pixels": uint8 [64, 64, 3], "state": float32 [S]}
    goal = env.unwrapped.render_goal() # uint8 [64, 64, 3], same conditions, no occluder
    a = env.unwrapped.expert_action(np.random.default_rng(0))   # scripted, in [-1, 1]^A
    record = env.unwrapped.perturbation.to_dict()               # [{name, params, seed}]

Scenes (``SCENES``): "two-rooms", "tabletop-push", "tabletop-reach", "pusht", plus
"gym:<gymnasium id>" for any gymnasium env with rgb_array rendering and a Box action space.
Registered with gymnasium as ``jepalab/TwoRooms-v0``, ``jepalab/TabletopPush-v0``,
``jepalab/TabletopReach-v0``, ``jepalab/PushT-v0`` (same kwargs as ``make``). MuJoCo and
gym-pusht are imported only when their scene is made.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from jepalab.envs.base import SceneEnv
from jepalab.envs.perturb import (
    PERTURBATIONS,
    Perturbation,
    PerturbationError,
    parse_perturbation,
)

__all__ = [
    "PERTURBATIONS",
    "SCENES",
    "Perturbation",
    "PerturbationError",
    "SceneEnv",
    "SceneSpec",
    "make",
    "parse_perturbation",
    "supported_perturbations",
]


@dataclass(frozen=True)
class SceneSpec:
    """A named scene: its gymnasium id, the extra it needs, its supported perturbations."""

    name: str
    gym_id: str
    requires: str | None
    supported_perturbations: tuple[str, ...]
    fixed_kwargs: tuple[tuple[str, Any], ...] = ()


_ALL = PERTURBATIONS
_NO_REORDER = tuple(p for p in PERTURBATIONS if p != "object_reorder")

SCENES: dict[str, SceneSpec] = {
    "two-rooms": SceneSpec("two-rooms", "jepalab/TwoRooms-v0", None, _NO_REORDER),
    "tabletop-push": SceneSpec(
        "tabletop-push", "jepalab/TabletopPush-v0", "mujoco", _ALL, (("task", "push"),)
    ),
    "tabletop-reach": SceneSpec(
        "tabletop-reach", "jepalab/TabletopReach-v0", "mujoco", _ALL, (("task", "reach"),)
    ),
    "pusht": SceneSpec("pusht", "jepalab/PushT-v0", "gym-pusht", _NO_REORDER),
}
GYM_PREFIX = "gym:"
GYM_ADAPTER_PERTURBATIONS = ("lighting_shift", "camera_shift", "occlusion", "action_noise")


def supported_perturbations(name: str) -> tuple[str, ...]:
    """Perturbations the scene ``name`` supports (the generic ``gym:`` adapter included)."""
    if name.startswith(GYM_PREFIX):
        return GYM_ADAPTER_PERTURBATIONS
    return _spec(name).supported_perturbations


def _spec(name: str) -> SceneSpec:
    if name not in SCENES:
        valid = ", ".join([*SCENES, GYM_PREFIX + "<gymnasium id>"])
        raise ValueError(f"unknown scene {name!r}; valid names: {valid}")
    return SCENES[name]


def _scene_class(name: str) -> type[SceneEnv]:
    # Imported here so that importing jepalab.envs never needs MuJoCo or gym-pusht.
    if name == "two-rooms":
        from jepalab.envs.two_rooms import TwoRoomsEnv

        return TwoRoomsEnv
    if name.startswith("tabletop-"):
        from jepalab.envs.tabletop import TabletopEnv

        return TabletopEnv
    if name == "pusht":
        from jepalab.envs.pusht import PushTEnv

        return PushTEnv
    raise ValueError(f"unknown scene {name!r}")


def make(
    name: str,
    *,
    image_size: int = 64,
    perturb: str | None = None,
    severity: int = 1,
    perturb_seed: int = 0,
    **scene_kwargs: Any,
) -> gym.Env:
    """Build scene ``name`` with an optional perturbation ("a+b", severity 0..3, seeded).

    Unknown names raise ValueError listing the valid ones; an unsupported perturbation raises
    PerturbationError naming the scene, the perturbation and the supported ones. Scene kwargs
    (e.g. ``random_wall``, ``max_episode_steps``, ``terminate_on_success``) go to the scene.
    """
    perturbation = parse_perturbation(perturb, severity, perturb_seed)
    if name.startswith(GYM_PREFIX):
        from jepalab.envs.gym_adapter import GymAdapterEnv

        return GymAdapterEnv(
            name[len(GYM_PREFIX) :],
            image_size=image_size,
            perturbation=perturbation,
            **scene_kwargs,
        )
    spec = _spec(name)
    perturbation.check_supported(name, spec.supported_perturbations)
    kwargs = dict(spec.fixed_kwargs)
    clash = set(kwargs) & set(scene_kwargs)
    if clash:
        raise ValueError(f"scene {name!r} fixes {sorted(clash)}; do not pass them")
    return _scene_class(name)(
        image_size=image_size, perturbation=perturbation, **kwargs, **scene_kwargs
    )


def _register() -> None:
    for name, spec in SCENES.items():
        if spec.gym_id not in gym.registry:
            gym.register(spec.gym_id, entry_point=functools.partial(make, name))


_register()
