"""The perturbation panel: named, parameterised, seeded perturbations of a scene.

A perturbation spec is a "+"-joined list of names (``"lighting_shift+object_reorder"``) with
one severity (0 = none, 1..3 = increasingly strong) and one seed. ``parse_perturbation``
turns it into a :class:`Perturbation`, a frozen, JSON-recordable value
(``to_dict() -> [{name, params, seed}]``).

How it is wired (one way only): ``jepalab.envs.make`` passes the ``Perturbation`` to the scene
constructor. At every reset the scene asks :meth:`PerturbationComponent.rng` for a generator
seeded from (perturbation seed, reset seed, name) and draws its episode conditions from it;
the task layout is drawn from the reset seed alone, so the same reset seed gives the same task
under every perturbation. Step-time perturbations (``occlusion``, ``action_noise``) are applied
by :class:`jepalab.envs.base.SceneEnv` itself; reset-time ones through scene hooks, which know
what "lighting" or "an object" means in their scene.

``params`` hold the severity's magnitudes (the same for every scene); what the scene draws
from them is documented per scene.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Timing = Literal["reset", "step"]

# Magnitudes per severity (index 0 = severity 0 = no change). Kept in one table so a recorded
# (name, severity) pair always means the same strength.
_TABLE: dict[str, tuple[Timing, dict[str, tuple[float, float, float, float]]]] = {
    # 2-D scenes: palette brightness offset, contrast factor offset, hue rotation (degrees).
    # MuJoCo: light direction tilt (degrees), intensity factor offset, colour tint.
    "lighting_shift": (
        "reset",
        {
            "brightness": (0.0, 0.12, 0.22, 0.32),
            "contrast": (0.0, 0.12, 0.22, 0.32),
            "hue_deg": (0.0, 12.0, 24.0, 40.0),
            "tilt_deg": (0.0, 15.0, 30.0, 45.0),
            "intensity": (0.0, 0.25, 0.4, 0.55),
            "tint": (0.0, 0.12, 0.22, 0.35),
        },
    ),
    # Non-target objects moved to a new place at least `min_shift` (fraction of the workspace).
    "object_reorder": ("reset", {"min_shift": (0.0, 0.15, 0.3, 0.45)}),
    # Task-irrelevant extra objects: how many, and their size relative to task objects.
    "distractors": ("reset", {"count": (0, 1, 3, 5), "size": (0.0, 0.8, 1.0, 1.2)}),
    # Camera pose jitter: translation (fraction of view / metres / 10 for MuJoCo), rotation
    # (degrees), zoom (fraction).
    "camera_shift": (
        "reset",
        {
            "translate": (0.0, 0.03, 0.06, 0.1),
            "rotate_deg": (0.0, 3.0, 6.0, 10.0),
            "zoom": (0.0, 0.04, 0.08, 0.12),
        },
    ),
    # A hand-like occluder moving over the view; `size` is its length as a fraction of the view.
    "occlusion": ("step", {"size": (0.0, 0.35, 0.5, 0.65), "speed": (0.0, 0.05, 0.07, 0.09)}),
    # Blend of each object's / the background's colour towards a random colour.
    "color_shift": ("reset", {"amount": (0.0, 0.25, 0.45, 0.7)}),
    # Log-scale factor range for friction/mass (MuJoCo), agent speed/gain (2-D scenes).
    "physics_shift": ("reset", {"log_scale": (0.0, 0.2, 0.4, 0.7)}),
    # Std of Gaussian noise added to the [-1, 1] action every step.
    "action_noise": ("step", {"std": (0.0, 0.1, 0.2, 0.35)}),
}

PERTURBATIONS: tuple[str, ...] = tuple(_TABLE)
MAX_SEVERITY = 3


class PerturbationError(ValueError):
    """A perturbation spec names something unknown or unsupported."""


@dataclass(frozen=True)
class PerturbationComponent:
    """One named perturbation at one severity. ``params`` are the severity's magnitudes."""

    name: str
    severity: int
    seed: int
    params: dict[str, float] = field(default_factory=dict)
    timing: Timing = "reset"

    @property
    def active(self) -> bool:
        return self.severity > 0

    def rng(self, episode_seed: int) -> np.random.Generator:
        """Episode generator from (perturbation seed, reset seed, name).

        The name enters through a stable hash, so a component draws the same values alone or
        composed with others.
        """
        return np.random.default_rng([self.seed, int(episode_seed), zlib.crc32(self.name.encode())])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": {"severity": self.severity, **self.params},
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Perturbation:
    """A composed perturbation (possibly empty). Immutable; record it with ``to_dict()``."""

    components: tuple[PerturbationComponent, ...] = ()
    severity: int = 0
    seed: int = 0

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    @property
    def spec(self) -> str | None:
        return "+".join(self.names) if self.components else None

    def get(self, name: str) -> PerturbationComponent | None:
        """The component called ``name`` if present and severity > 0, else None."""
        for c in self.components:
            if c.name == name and c.active:
                return c
        return None

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON-able record: ``[{"name", "params": {"severity", ...}, "seed"}, ...]``."""
        return [c.to_dict() for c in self.components]

    @classmethod
    def from_dict(cls, records: list[dict[str, Any]]) -> Perturbation:
        """Inverse of ``to_dict`` (magnitudes are re-derived from the severity table)."""
        if not records:
            return cls()
        severities = {int(r["params"]["severity"]) for r in records}
        seeds = {int(r["seed"]) for r in records}
        if len(severities) != 1 or len(seeds) != 1:
            raise PerturbationError(
                f"perturbation record: one severity and seed expected, got {severities}, {seeds}"
            )
        spec = "+".join(str(r["name"]) for r in records)
        return parse_perturbation(spec, severities.pop(), seeds.pop())

    def check_supported(self, scene: str, supported: tuple[str, ...]) -> None:
        """Raise a PerturbationError naming the scene if a component is not supported there."""
        for name in self.names:
            if name not in supported:
                raise PerturbationError(
                    f"scene {scene!r} does not support perturbation {name!r}; "
                    f"supported: {', '.join(supported)}"
                )


def parse_perturbation(spec: str | None, severity: int = 1, seed: int = 0) -> Perturbation:
    """Parse ``"a+b"`` into a Perturbation. ``spec`` None/"" /"none" gives the empty one.

    Raises PerturbationError for unknown names, duplicates or a severity outside 0..3.
    """
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise PerturbationError(f"perturbation severity must be an int 0..3, got {severity!r}")
    if not 0 <= int(severity) <= MAX_SEVERITY:
        raise PerturbationError(f"perturbation severity must be in 0..3, got {severity}")
    if spec is None or spec.strip() in ("", "none"):
        return Perturbation(severity=int(severity), seed=int(seed))
    names = [n.strip() for n in spec.split("+")]
    components: list[PerturbationComponent] = []
    for name in names:
        if name not in _TABLE:
            raise PerturbationError(
                f"unknown perturbation {name!r} in {spec!r}; known: {', '.join(PERTURBATIONS)}"
            )
        if name in [c.name for c in components]:
            raise PerturbationError(f"perturbation {name!r} given twice in {spec!r}")
        timing, table = _TABLE[name]
        params = {k: float(v[int(severity)]) for k, v in table.items()}
        components.append(PerturbationComponent(name, int(severity), int(seed), params, timing))
    return Perturbation(tuple(components), int(severity), int(seed))


def signed_uniform(rng: np.random.Generator, magnitude: float, size: int | None = None) -> Any:
    """Draw from ±U[magnitude/2, magnitude]: never (almost) zero, so a shift is always visible."""
    mag = rng.uniform(0.5 * magnitude, magnitude, size=size)
    sign = rng.choice(np.array([-1.0, 1.0]), size=size)
    return mag * sign


# ---------------------------------------------------------------- step-time perturbations


class ActionNoise:
    """Gaussian noise on the [-1, 1] action, re-clipped. Drawn from its own episode generator."""

    def __init__(self, std: float, rng: np.random.Generator) -> None:
        self.std = float(std)
        self.rng = rng

    def __call__(self, action: np.ndarray) -> np.ndarray:
        noisy = action + self.rng.normal(0.0, self.std, size=action.shape)
        return np.clip(noisy, -1.0, 1.0).astype(np.float32)
