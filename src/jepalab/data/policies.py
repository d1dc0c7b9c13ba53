"""Data-collection policies, named by a spec string.

    random[:corr=C,scale=S]       temporally correlated Gaussian actions (AR(1) / discretised
                                  Ornstein-Uhlenbeck): z_t = C z_{t-1} + sqrt(1 - C^2) S e_t,
                                  mapped to the Box (z = +-1 at its bounds) and clipped.
                                  Defaults corr=0.8 (a ~5-step memory), scale=0.6.
    expert[:noise=N]              the scene's scripted ``env.unwrapped.expert_action(rng)``, plus
                                  optional Gaussian noise of std N (in [-1, 1] units), clipped.
    mixture:P[,corr=C,scale=S]    per EPISODE: the expert with probability P, else random.
                                  Per-episode rather than per-step mixing keeps every episode a
                                  coherent behaviour (clean demonstrations next to exploratory
                                  wandering) instead of jittered expert paths; the sub-policy of
                                  each episode is recorded (``policy.mode``).
    explore:T[,p=P,corr=C,scale=S]  as mixture:P, but each scripted episode first wanders
                                  (random) for k ~ U{0..T} steps, then follows the expert from
                                  wherever that left it (``policy.mode`` "explore"). Its logged
                                  path pairs the states wandering reaches (against a wall, in a
                                  corner) with the goal, which a learned cost-to-go needs and
                                  neither pure behaviour gives (benchmarks/planning_ceiling.py).
    tour:P[,corr=C,scale=S,edge=E,press=N]
                                  as mixture:P, but a scripted episode tours: the expert goes
                                  to a random point of the scene (``waypoint``), then to the
                                  next, ... (``policy.mode`` "tour"); its path pairs starts and
                                  goals from all over the layout, each leg a near-shortest path.
                                  With probability E (default 0) a waypoint is pressed against
                                  an obstacle (``waypoint(rng, edge=True)``: the wall's faces),
                                  so legs also start where a stuck planner ends. With N > 0,
                                  the first k ~ U{1..N} steps of the leg after such a waypoint
                                  head straight at the next one, obstacles ignored (full speed
                                  along the larger axis; actions are displacements): a stuck
                                  planner's mistake, whose blocked moves a world model must see
                                  to predict them.

``policy.spec`` is the canonical spec with every default written out; two specs that mean the
same policy have the same canonical spec (datasets compare it when resuming).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from jepalab.errors import JepalabError

_DEFAULTS: dict[str, dict[str, float]] = {
    "random": {"corr": 0.8, "scale": 0.6},
    "expert": {"noise": 0.0},
    "mixture": {"p": 0.5, "corr": 0.8, "scale": 0.6},
    "explore": {"steps": 40.0, "p": 0.5, "corr": 0.8, "scale": 0.6},
    "tour": {"p": 0.5, "corr": 0.8, "scale": 0.6, "edge": 0.0, "press": 0.0},
}
KINDS = tuple(_DEFAULTS)
# The parameter a bare leading number sets.
_LEADING = {"mixture": "p", "explore": "steps", "tour": "p"}


def _fmt(x: float) -> str:
    return repr(float(x))


def parse_policy_spec(spec: str) -> tuple[str, dict[str, float]]:
    """'mixture:0.3,corr=0.9' -> ('mixture', {'p': 0.3, 'corr': 0.9, 'scale': 0.6})."""
    if not isinstance(spec, str) or not spec.strip():
        raise JepalabError(
            f"policy: expected a spec like 'random', 'expert' or 'mixture:0.5', got {spec!r}"
        )
    kind, _, rest = spec.strip().partition(":")
    if kind not in KINDS:
        raise JepalabError(f"policy {spec!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    params = dict(_DEFAULTS[kind])
    for i, part in enumerate(p.strip() for p in rest.split(",") if rest.strip()):
        key, eq, value = part.partition("=")
        if not eq:  # a bare leading number: mixture's / tour's probability, explore's steps
            if kind not in _LEADING or i != 0:
                raise JepalabError(f"policy {spec!r}: expected key=value, got {part!r}")
            key, value = _LEADING[kind], part
        key = key.strip()
        if key not in params:
            raise JepalabError(
                f"policy {spec!r}: unknown parameter {key!r} for {kind}; valid: {', '.join(params)}"
            )
        try:
            params[key] = float(value)
        except ValueError:
            raise JepalabError(f"policy {spec!r}: {key}={value!r} is not a number") from None
    checks = {
        "p": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
        "edge": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
        "corr": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        "scale": (lambda v: v > 0.0, "> 0"),
        "noise": (lambda v: v >= 0.0, ">= 0"),
        "steps": (lambda v: v >= 0.0 and v == int(v), "a whole number >= 0"),
        "press": (lambda v: v >= 0.0 and v == int(v), "a whole number >= 0"),
    }
    for key, v in params.items():
        ok, why = checks[key]
        if not (np.isfinite(v) and ok(v)):
            raise JepalabError(f"policy {spec!r}: {key}={v} must be {why}")
    return kind, params


def _spec(kind: str, params: dict[str, float]) -> str:
    return f"{kind}:" + ",".join(f"{k}={_fmt(params[k])}" for k in _DEFAULTS[kind])


def canonical_spec(spec: str) -> str:
    """The spec with every default written out: 'random' -> 'random:corr=0.8,scale=0.6'."""
    return _spec(*parse_policy_spec(spec))


class Policy:
    """reset(rng) at each episode start, then act(env, obs, rng) -> float32 [A] in the Box."""

    spec: str
    mode: str  # the sub-policy acting in the current episode ("random" / "expert")

    def __init__(self, action_space: gym.spaces.Box, params: dict[str, float]) -> None:
        if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
            raise JepalabError(f"policy: needs a 1-D Box action space, got {action_space}")
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise JepalabError(f"policy: action space bounds must be finite, got {action_space}")
        self.space = action_space
        self.low = action_space.low.astype(np.float32)
        self.high = action_space.high.astype(np.float32)
        self.params = params
        self.mid, self.half = (self.high + self.low) / 2, (self.high - self.low) / 2

    def reset(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def act(self, env: gym.Env, obs: Any, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _to_box(self, z: np.ndarray) -> np.ndarray:
        """z in [-1, 1] units -> action in the Box, clipped, float32 [A]."""
        return np.clip(self.mid + self.half * z, self.low, self.high).astype(np.float32)

    def _from_box(self, a: np.ndarray) -> np.ndarray:
        return (np.asarray(a, np.float32) - self.mid) / np.where(self.half > 0, self.half, 1)


class RandomPolicy(Policy):
    mode = "random"

    def __init__(self, action_space: gym.spaces.Box, params: dict[str, float]) -> None:
        super().__init__(action_space, params)
        self.spec = _spec("random", params)
        self.z = np.zeros(action_space.shape, np.float64)

    def reset(self, rng: np.random.Generator) -> None:
        # Start from the stationary distribution so the first steps look like the rest.
        self.z = rng.normal(0.0, self.params["scale"], self.space.shape)

    def act(self, env: gym.Env, obs: Any, rng: np.random.Generator) -> np.ndarray:
        c, s = self.params["corr"], self.params["scale"]
        self.z = c * self.z + np.sqrt(1.0 - c * c) * s * rng.normal(size=self.space.shape)
        return self._to_box(self.z)


class ExpertPolicy(Policy):
    mode = "expert"

    def __init__(self, action_space: gym.spaces.Box, params: dict[str, float]) -> None:
        super().__init__(action_space, params)
        self.spec = _spec("expert", params)

    def reset(self, rng: np.random.Generator) -> None:
        pass  # stateless: the scripted expert reads the env's current state

    def _expert(self, env: gym.Env, rng: np.random.Generator, *target: np.ndarray) -> np.ndarray:
        expert = getattr(env.unwrapped, "expert_action", None)
        if not callable(expert):
            raise JepalabError(
                f"policy 'expert': scene {type(env.unwrapped).__name__} has no "
                "expert_action(); use policy 'random'"
            )
        try:
            return np.asarray(expert(rng, *target), np.float32).reshape(self.space.shape)
        except NotImplementedError:
            raise JepalabError(
                f"policy 'expert': scene {type(env.unwrapped).__name__} has no "
                f"scripted expert{' for targets (tour)' if target else ''}; use policy 'random'"
            ) from None

    def _targets(self, env: gym.Env, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        return ()  # the scene's own goal

    def act(self, env: gym.Env, obs: Any, rng: np.random.Generator) -> np.ndarray:
        return self._towards(env, rng, *self._targets(env, rng))

    def _towards(self, env: gym.Env, rng: np.random.Generator, *target: np.ndarray
                 ) -> np.ndarray:
        """The expert's action (to the scene's goal, or to `target`), plus noise."""
        a = self._expert(env, rng, *target)
        if self.params["noise"] > 0:
            z = self._from_box(a) + rng.normal(0.0, self.params["noise"], self.space.shape)
            return self._to_box(z)
        return np.clip(a, self.low, self.high).astype(np.float32)


class MixturePolicy(Policy):
    """Per episode: expert with probability p, else correlated random."""

    def __init__(self, action_space: gym.spaces.Box, params: dict[str, float]) -> None:
        super().__init__(action_space, params)
        self.spec = _spec("mixture", params)
        self.expert = ExpertPolicy(action_space, {"noise": 0.0})
        self.random = RandomPolicy(action_space, {k: params[k] for k in ("corr", "scale")})
        self.current: Policy = self.random
        self.mode = "random"

    def reset(self, rng: np.random.Generator) -> None:
        # One uniform draw decides the episode, so the choice is a function of the rng alone.
        self.current = self.expert if rng.random() < self.params["p"] else self.random
        self.mode = self.current.mode
        self.current.reset(rng)

    def act(self, env: gym.Env, obs: Any, rng: np.random.Generator) -> np.ndarray:
        return self.current.act(env, obs, rng)


class ExplorePolicy(MixturePolicy):
    """As MixturePolicy, but a scripted episode first wanders for k ~ U{0..steps} steps."""

    def __init__(self, action_space: gym.spaces.Box, params: dict[str, float]) -> None:
        super().__init__(action_space, params)
        self.spec = _spec("explore", params)
        self.wander = 0

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.wander = 0
        if self.mode == "expert":
            self.mode, self.wander = "explore", int(rng.integers(int(self.params["steps"]) + 1))
            self.random.reset(rng)

    def act(self, env: gym.Env, obs: Any, rng: np.random.Generator) -> np.ndarray:
        if self.wander > 0:
            self.wander -= 1
            return self.random.act(env, obs, rng)
        return self.current.act(env, obs, rng)


class TourPolicy(ExpertPolicy):
    """The expert going from one random point of the scene to the next (``waypoint``); after
    an edge waypoint, with ``press`` N > 0, the next leg's first k ~ U{1..N} steps head straight
    at its target."""

    mode = "tour"

    def reset(self, rng: np.random.Generator) -> None:
        self.target: np.ndarray | None = None
        self.edge, self.straight = False, 0  # steps left of heading straight at the target

    def act(self, env: gym.Env, obs: Any, rng: np.random.Generator) -> np.ndarray:
        target = self._targets(env, rng)[0]
        if self.straight > 0:
            self.straight -= 1
            d = target - env.unwrapped.agent  # waypoint scenes: the agent's position
            return self._to_box(d / max(float(np.abs(d).max()), 1e-9))
        return self._towards(env, rng, target)

    def _targets(self, env: gym.Env, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        u = env.unwrapped
        try:
            if self.target is None or u.reached(self.target):
                p, press = self.params["edge"], int(self.params["press"])
                if self.target is not None and self.edge and press:
                    self.straight = int(rng.integers(1, press + 1))
                self.edge = p > 0 and rng.random() < p  # no draw at edge 0: tours as before
                self.target = u.waypoint(rng, edge=True) if self.edge else u.waypoint(rng)
        except (AttributeError, NotImplementedError):
            raise JepalabError(
                f"policy 'tour': scene {type(u).__name__} has no waypoint(); use 'explore'"
            ) from None
        return (self.target,)


class TourMixture(MixturePolicy):
    """Per episode: a tour with probability p, else correlated random."""

    def __init__(self, action_space: gym.spaces.Box, params: dict[str, float]) -> None:
        super().__init__(action_space, params)
        self.spec = _spec("tour", params)
        self.expert = TourPolicy(action_space, {"noise": 0.0, "edge": params["edge"],
                                                "press": params["press"]})


def make_policy(
    spec: str, action_space: gym.spaces.Box, rng: np.random.Generator | None = None
) -> Policy:
    """Build the policy named by ``spec`` (see the module docstring) for ``action_space``.

    ``rng``, when given, performs an initial ``reset`` (collection resets every episode with
    its own generator anyway)."""
    kind, params = parse_policy_spec(spec)
    cls = {"random": RandomPolicy, "expert": ExpertPolicy, "mixture": MixturePolicy,
           "explore": ExplorePolicy, "tour": TourMixture}[kind]
    policy = cls(action_space, params)
    if rng is not None:
        policy.reset(rng)
    return policy
