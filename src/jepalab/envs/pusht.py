"""Push-T: an adapter over gym-pusht (pymunk physics) with its own fast 2-D rasteriser.

gym-pusht's physics, reset distribution (agent, block pose drawn from the reset seed) and
success rule (coverage of the goal T > 0.95) are used as they are. Its stock renderer draws a
512x512 pygame surface and resizes it every step; here the T and the agent are rasterised
directly at ``image_size`` from the pymunk state (anti-aliased, same colours), which is
several times faster.

Units: gym-pusht pixels, [0, 512]^2, y downwards. Action a in [-1, 1]^2 is the absolute target
of the agent's PD controller: target = (a + 1) / 2 * 512. State: [agent_x, agent_y, block_x,
block_y, block_angle] (gym-pusht's layout; block position is the body origin, angle in
[0, 2 pi)). ``distance`` = mean distance of the T's 8 keypoints to their goal positions;
``info["coverage"]`` is gym-pusht's coverage. The goal zone is not drawn in observations by
default (``draw_goal_zone=False``): the goal is given by ``render_goal()``, which shows the T
at the goal pose (256, 256, pi/4) and the agent where the scripted pusher (``expert_target``,
no noise, stock physics) ends its push from this episode's start, as the last frame of a
successful push shows it (computed on first use by a private copy of the physics: 0.1-0.4 s).
``goal_state`` holds the same. (Before 2026-12-03 the goal showed the agent at its start.)

Perturbations: lighting_shift, color_shift, distractors, camera_shift as in ``view2d``;
physics_shift: agent PD gain x f1 and agent-T contact friction 1.5 |log f2| (stock: 0);
action_noise: std x ``action_noise_scale`` = 0.25, since an action here is an absolute
position over the whole workspace (0.2 would jitter the target by 51 units); occlusion: base.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jepalab.envs import raster
from jepalab.envs.base import SceneEnv
from jepalab.envs.perturb import Perturbation
from jepalab.envs.view2d import Conditions2D

_BG = np.array([255, 255, 255]) / 255.0
_WALL = np.array([211, 211, 211]) / 255.0  # LightGray
_BLOCK = np.array([119, 136, 153]) / 255.0  # LightSlateGray
_AGENT = np.array([65, 105, 225]) / 255.0  # RoyalBlue
_GOAL = np.array([144, 238, 144]) / 255.0  # LightGreen

WORLD = 512.0
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])
AGENT_RADIUS = 15.0
# The T in body coordinates (gym-pusht: scale 30, length 4). The stem is extended into the
# bar by 4 units for drawing only, so the anti-aliased seam between the two quads vanishes.
_BAR = np.array([[-60.0, 30.0], [60.0, 30.0], [60.0, 0.0], [-60.0, 0.0]])
_STEM = np.array([[-15.0, 30.0], [-15.0, 120.0], [15.0, 120.0], [15.0, 30.0]])
_STEM_DRAW = _STEM + np.array([[0, -4], [0, 0], [0, 0], [0, -4]])
_KEYPOINTS = np.concatenate([_BAR, _STEM])
_COG = np.array([0.0, 45.0])  # mean of the two rectangles' centres, as gym-pusht sets it


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def to_world(pose: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Body-frame points [K, 2] -> world [K, 2] for pose (x, y, angle)."""
    return np.asarray(local) @ _rot(pose[2]).T + pose[:2]


def to_local(pose: np.ndarray, world: np.ndarray) -> np.ndarray:
    return (np.asarray(world) - pose[:2]) @ _rot(pose[2])


def inside_t(local: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Which body-frame points [K, 2] lie in the T grown by ``margin``: bool [K]."""
    x, y = local[:, 0], local[:, 1]
    m = margin
    bar = (np.abs(x) <= 60 + m) & (y >= -m) & (y <= 30 + m)
    stem = (np.abs(x) <= 15 + m) & (y >= 30 - m) & (y <= 120 + m)
    return bar | stem


class PushTEnv(SceneEnv):
    scene_name = "pusht"
    supported_perturbations = (
        "lighting_shift",
        "distractors",
        "camera_shift",
        "occlusion",
        "color_shift",
        "physics_shift",
        "action_noise",
    )
    default_max_episode_steps = 300
    action_noise_scale = 0.25

    def __init__(
        self,
        *,
        image_size: int = 64,
        perturbation: Perturbation | None = None,
        max_episode_steps: int | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
        draw_goal_zone: bool = False,
    ) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            from gym_pusht.envs.pusht import PushTEnv as _Inner
        except ImportError as e:  # the [pusht] extra is optional
            raise ImportError("scene 'pusht' needs gym-pusht: pip install 'jepalab[pusht]'") from e
        super().__init__(
            action_dim=2,
            # A little slack: the PD-driven agent is kinematic and may graze past the walls.
            state_low=np.array([-64.0, -64.0, -64.0, -64.0, 0.0]),
            state_high=np.array([WORLD + 64, WORLD + 64, WORLD + 64, WORLD + 64, 2 * np.pi]),
            image_size=image_size,
            perturbation=perturbation,
            max_episode_steps=max_episode_steps,
            terminate_on_success=terminate_on_success,
            render_mode=render_mode,
        )
        self.inner = _Inner(obs_type="state", render_mode="rgb_array")
        self.draw_goal_zone = bool(draw_goal_zone)
        self.state_names = ["agent_x", "agent_y", "block_x", "block_y", "block_angle"]
        self.success_coverage = 0.95
        self.success_radius = float("nan")  # success is coverage-based, see _is_success
        self._coverage = 0.0
        self._end_agent: np.ndarray | None = None

    # ------------------------------------------------------------------ physics

    def _reset_scene(self, layout_rng: np.random.Generator) -> None:
        # gym-pusht draws the layout from its own generator, seeded by the reset seed.
        self.inner.reset(seed=self.episode_seed)
        assert self.episode_seed is not None
        palette = np.stack([_BG, _WALL, _BLOCK, _AGENT, _GOAL])
        self._cond = Conditions2D.sample(
            self.perturbation, self.episode_seed, palette, self.image_size, 30.0 / WORLD
        )
        if self.perturbation.get("physics_shift"):
            f_gain, f_fric = self._cond.physics
            self.inner.k_p = 100.0 * f_gain  # k_v keeps the PD loop critically damped
            self.inner.k_v = 20.0 * np.sqrt(f_gain)
            # Stock shapes are frictionless; friction at the agent-T contact changes how
            # off-centre pushes turn the T (pymunk mixes the two shapes' coefficients).
            friction = float(min(1.5 * abs(np.log(f_fric)), 1.0))
            for shape in (*self.inner.block.shapes, *self.inner.agent.shapes):
                shape.friction = friction
        else:
            self.inner.k_p, self.inner.k_v = 100.0, 20.0
        self._end_agent = None
        self._coverage = float(self.inner._get_coverage())
        self._background = self._draw_background()

    def _apply_action(self, action: np.ndarray) -> None:
        target = (action.astype(np.float64) + 1.0) * 0.5 * WORLD
        _, _, _, _, info = self.inner.step(target)
        self._coverage = float(info["coverage"])

    def _block_pose(self) -> np.ndarray:
        return _block_pose(self.inner)

    @property
    def goal_state(self) -> np.ndarray:  # type: ignore[override]
        return np.array([*self._goal_agent(), *GOAL_POSE], np.float32)

    def _goal_agent(self) -> np.ndarray:
        """Where the agent ends the scripted push from this episode's start: the expert drives
        a fresh copy of the stock physics (reset with the episode's seed; no perturbation, no
        noise) until success or ``default_max_episode_steps``."""
        if self.episode_seed is None:
            raise RuntimeError("pusht: call reset() before render_goal() or goal_state")
        if self._end_agent is None:
            sim = type(self.inner)(obs_type="state", render_mode="rgb_array")
            sim.reset(seed=self.episode_seed)
            for _ in range(self.default_max_episode_steps):
                _, _, _, _, info = sim.step(_expert_target(sim))
                if info["coverage"] > self.success_coverage:
                    break
            self._end_agent = np.array(sim.agent.position)
        return self._end_agent

    def _state(self) -> np.ndarray:
        a = self.inner.agent.position
        p = self._block_pose()
        return np.array([a[0], a[1], p[0], p[1], p[2] % (2 * np.pi)], np.float32)

    def _distance(self) -> float:
        d = to_world(self._block_pose(), _KEYPOINTS) - to_world(GOAL_POSE, _KEYPOINTS)
        return float(np.linalg.norm(d, axis=1).mean())

    def _is_success(self) -> bool:
        return self._coverage > self.success_coverage

    def _extra_info(self) -> dict[str, Any]:
        return {"coverage": self._coverage}

    # ------------------------------------------------------------------ rendering

    def _draw_background(self) -> np.ndarray:
        n = self.image_size
        img = np.empty((n, n, 3), np.float32)
        img[:] = self._cond.colors[0]
        k = n / WORLD
        for a, b in (((5, 5), (506, 5)), ((506, 5), (506, 506)), ((5, 506), (506, 506))):
            self._segment(img, np.array(a) * k, np.array(b) * k, 2 * k)
        self._segment(img, np.array([5, 5]) * k, np.array([5, 506]) * k, 2 * k)
        if self.draw_goal_zone:
            for poly in (_BAR, _STEM_DRAW):
                pts = to_world(GOAL_POSE, poly) * k
                raster.blend(img, *raster.convex_coverage(pts, n, n), self._cond.colors[4])
        return img

    def _segment(self, img: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> None:
        d = (b - a) / (np.linalg.norm(b - a) + 1e-9)
        nrm = np.array([-d[1], d[0]]) * max(r, 0.5)
        poly = np.array([a - d * r + nrm, b + d * r + nrm, b + d * r - nrm, a - d * r - nrm])
        n = img.shape[0]
        raster.blend(img, *raster.convex_coverage(poly, n, n), self._cond.colors[1])

    def _frame(self, agent: np.ndarray, block_pose: np.ndarray, t: int) -> np.ndarray:
        n = self.image_size
        k = n / WORLD
        img = self._background.copy()
        self._cond.draw_distractors(img, t)
        for poly in (_BAR, _STEM_DRAW):
            cov = raster.convex_coverage(to_world(block_pose, poly) * k, n, n)
            raster.blend(img, *cov, self._cond.colors[2])
        cov = raster.disc_coverage(agent[0] * k, agent[1] * k, AGENT_RADIUS * k, n, n)
        raster.blend(img, *cov, self._cond.colors[3])
        return self._cond.finish(img)

    def _render_pixels(self) -> np.ndarray:
        a = self.inner.agent.position
        return self._frame(np.array([a[0], a[1]]), self._block_pose(), self.elapsed_steps)

    def render_goal(self) -> np.ndarray:
        return self._frame(self._goal_agent(), GOAL_POSE, 0)

    # ------------------------------------------------------------------ expert

    def expert_action(self, rng: np.random.Generator) -> np.ndarray:
        """A scripted pusher (see ``expert_target``), with small Gaussian noise."""
        act = _expert_target(self.inner) / WORLD * 2.0 - 1.0 + rng.normal(0.0, 0.01, size=2)
        return np.clip(act, -1.0, 1.0).astype(np.float32)


def _block_pose(inner: Any) -> np.ndarray:
    b = inner.block
    return np.array([b.position[0], b.position[1], b.angle])


def _expert_target(inner: Any) -> np.ndarray:
    """The scripted pusher's target (world units) in a gym-pusht env's current state."""
    return expert_target(np.array(inner.agent.position), _block_pose(inner), GOAL_POSE)


# ---------------------------------------------------------------------- scripted pusher

_SAFE_R = 95.0  # circle around the centre of mass that clears the T plus the agent
_STEP = 80.0  # the furthest target ahead of the agent per step


def _contacts() -> tuple[np.ndarray, np.ndarray]:
    """Reachable contact points on the T's faces (body frame) and push directions into them.

    The agent-T contact is frictionless, so a push acts along the face normal: the T can be
    pushed along +-x or +-y of its own frame, with a torque set by where on the face.
    """
    pts, dirs = [], []

    def face(xs: np.ndarray, ys: np.ndarray, d: tuple[float, float]) -> None:
        for x, y in zip(
            np.broadcast_to(xs, np.broadcast(xs, ys).shape),
            np.broadcast_to(ys, np.broadcast(xs, ys).shape),
        ):
            pts.append((x, y))
            dirs.append(d)

    face(np.linspace(-55, 55, 9), np.array(0.0), (0.0, 1.0))  # bar top, push down
    face(np.array([-55, -45, -35, 35, 45, 55.0]), np.array(30.0), (0.0, -1.0))  # bar underside
    face(np.linspace(-10, 10, 3), np.array(120.0), (0.0, -1.0))  # stem end
    for sx in (-1.0, 1.0):
        face(np.array(60.0 * sx), np.linspace(5, 25, 3), (-sx, 0.0))  # bar ends
        face(np.array(15.0 * sx), np.linspace(50, 110, 5), (-sx, 0.0))  # stem sides
    return np.array(pts, float), np.array(dirs, float)


_CONTACTS, _DIRS = _contacts()


def _segment_blocked(pose: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    pts = a + np.linspace(0.0, 1.0, 12)[:, None] * (b - a)
    return bool(inside_t(to_local(pose, pts), margin=AGENT_RADIUS + 2).any())


def _approach(agent: np.ndarray, com: np.ndarray, pose: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """Go to ``pre`` or, when the T is in the way, round it on a circle about its centre."""
    if not _segment_blocked(pose, agent, pre):
        return pre
    ang_a = np.arctan2(*(agent - com)[::-1])
    ang_p = np.arctan2(*(pre - com)[::-1])
    turn = (ang_p - ang_a + np.pi) % (2 * np.pi) - np.pi
    ang = ang_a + np.clip(turn, -0.8, 0.8)
    return com + _SAFE_R * np.array([np.cos(ang), np.sin(ang)])


def expert_target(agent: np.ndarray, pose: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Absolute agent target (world units) for the current block pose.

    Scores every reachable face contact by how well its push (along the face normal) moves
    the T towards the goal position and turns it towards the goal angle, picks the best,
    moves to a pre-contact point (rounding the T when it is in the way), then pushes by about
    the remaining error.
    """
    com = to_world(pose, _COG[None])[0]
    err = to_world(goal, _COG[None])[0] - com
    dist = float(np.linalg.norm(err))
    dth = float((goal[2] - pose[2] + np.pi) % (2 * np.pi) - np.pi)
    rot = _rot(pose[2])
    dirs = _DIRS @ rot.T  # world push directions [K, 2]
    arms = (_CONTACTS - _COG) @ rot.T
    torque = arms[:, 0] * dirs[:, 1] - arms[:, 1] * dirs[:, 0]  # per unit push
    move = dirs @ err / max(dist, 1e-6)
    w_rot = min(1.0, abs(dth) / 0.3)
    w_pos = min(1.0, dist / 40.0) * (0.4 if abs(dth) > 0.5 else 1.0)  # turn first
    contacts = to_world(pose, _CONTACTS)
    score = (
        w_pos * move
        + w_rot * np.sign(dth) * torque / 60.0
        - 0.1 * np.linalg.norm(contacts - agent, axis=1) / 100.0
    )
    k = int(np.argmax(score))
    contact, u = contacts[k], dirs[k]
    n = np.array([-u[1], u[0]])
    rel = agent - contact
    along, lateral = float(rel @ u), float(rel @ n)
    if abs(lateral) < 8.0 and -AGENT_RADIUS - 25.0 < along < 2.0:
        need = max(float(u @ err), abs(dth) * 60.0)
        target = agent + u * float(np.clip(need, 2.0, _STEP))  # in contact: push
    else:
        target = _approach(agent, com, pose, contact - u * (AGENT_RADIUS + 8.0))
    step = target - agent
    norm = float(np.linalg.norm(step))
    if norm > _STEP:
        target = agent + step * (_STEP / norm)
    return np.clip(target, 20.0, WORLD - 20.0)
