"""Two-rooms navigation (the PLDM / eb_jepa task): a point agent, a wall with a door.

Arena [0, 1]^2 with x to the right and y downwards (y = image row / image_size). A vertical
wall of thickness 0.04 at ``wall_x`` has a door of width ``door_width`` centred at ``door_y``.
Defaults: wall_x = 0.5, door_y = 0.5 (fixed); ``random_wall=True`` draws wall_x in
[0.35, 0.65] and door_y in [0.2, 0.8] per episode, or, with ``layout_every=K``, once per K
consecutive reset seeds (seed // K): K episodes of each layout, with their own starts and goals,
as a robot gathers several episodes in one room (`TrajectoryStore.layout_ids`).

Task: the agent (radius 0.03) starts in one room and the goal lies in the *other* room, so every
episode needs the door. Action = 2-D displacement, ``action * max_step`` (max_step = 0.05 of
the arena per axis). The wall blocks the agent's disc; it slides along it. Success: agent
centre within ``success_radius`` = 0.05 of the goal. ``distance`` is the Euclidean distance.

State: [agent_x, agent_y, wall_x, door_y]. Rendering is pure numpy: the floor and wall are
drawn once per episode, the agent (and moving distractors) are stamped per frame.

Perturbations (each drawn per episode from its own generator):
lighting_shift: brightness / contrast / hue of the whole palette; color_shift: floor, wall and
agent colours blended towards random colours; distractors: 1/3/5 coloured discs or squares
drifting across the view (drawn, never colliding); camera_shift: view translation, rotation
and zoom; physics_shift: per-axis agent speed factor; occlusion, action_noise: see base.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jepalab.envs import raster
from jepalab.envs.base import SceneEnv
from jepalab.envs.perturb import Perturbation
from jepalab.envs.view2d import Conditions2D

_FLOOR = np.array([0.80, 0.77, 0.70])
_WALL = np.array([0.22, 0.25, 0.32])
_AGENT = np.array([0.86, 0.22, 0.16])
LAYOUT_STREAM = 0x5EED1A7  # salt of the generator a shared layout is drawn from


class TwoRoomsEnv(SceneEnv):
    scene_name = "two-rooms"
    supported_perturbations = (
        "lighting_shift",
        "distractors",
        "camera_shift",
        "occlusion",
        "color_shift",
        "physics_shift",
        "action_noise",
    )
    default_max_episode_steps = 100

    def __init__(
        self,
        *,
        image_size: int = 64,
        perturbation: Perturbation | None = None,
        max_episode_steps: int | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
        random_wall: bool = False,
        layout_every: int = 1,
        wall_x: float = 0.5,
        door_y: float = 0.5,
        door_width: float = 0.2,
        max_step: float = 0.05,
        agent_radius: float = 0.03,
        success_radius: float = 0.05,
        expert_noise: float = 0.1,
    ) -> None:
        super().__init__(
            action_dim=2,
            state_low=np.zeros(4),
            state_high=np.ones(4),
            image_size=image_size,
            perturbation=perturbation,
            max_episode_steps=max_episode_steps,
            terminate_on_success=terminate_on_success,
            render_mode=render_mode,
        )
        if not 0.3 <= wall_x <= 0.7 or not 0.15 <= door_y <= 0.85:
            raise ValueError(
                "two-rooms: wall_x must be in [0.3, 0.7] and door_y in [0.15, 0.85], "
                f"got {wall_x}, {door_y}"
            )
        if not 2.5 * agent_radius <= door_width <= 0.5:
            raise ValueError(
                f"two-rooms: door_width must be in [{2.5 * agent_radius}, 0.5], got {door_width}"
            )
        if int(layout_every) < 1:
            raise ValueError(f"two-rooms: layout_every must be >= 1, got {layout_every}")
        self.random_wall, self.layout_every = bool(random_wall), int(layout_every)
        self.default_wall = (float(wall_x), float(door_y))
        self.door_width = float(door_width)
        self.wall_thickness = 0.04
        self.max_step = float(max_step)
        self.agent_radius = float(agent_radius)
        self.success_radius = float(success_radius)
        self.expert_noise = float(expert_noise)
        self.state_names = ["agent_x", "agent_y", "wall_x", "door_y"]
        self.wall_x, self.door_y = self.default_wall
        self.agent = np.zeros(2)
        self.goal = np.zeros(2)
        self.goal_state = np.zeros(4, np.float32)

    # ------------------------------------------------------------------ layout and dynamics

    def _slab(self) -> tuple[float, float, float, float]:
        """Wall slab inflated by the agent radius (x range) and the allowed door band (y)."""
        hw, r, hd = self.wall_thickness / 2, self.agent_radius, self.door_width / 2
        return (
            self.wall_x - hw - r,
            self.wall_x + hw + r,
            self.door_y - hd + r,
            self.door_y + hd - r,
        )

    def _room_point(self, rng: np.random.Generator, side: int) -> np.ndarray:
        xl, xr, _, _ = self._slab()
        m = self.agent_radius + 0.03
        lo, hi = (m, xl - 0.03) if side < 0 else (xr + 0.03, 1 - m)
        return np.array([rng.uniform(lo, hi), rng.uniform(m, 1 - m)])

    def _reset_scene(self, layout_rng: np.random.Generator) -> None:
        wall = (layout_rng.uniform(0.35, 0.65), layout_rng.uniform(0.2, 0.8))
        if self.layout_every > 1:  # the same draws as above, from the layout's own generator
            assert self.episode_seed is not None
            shared = np.random.default_rng([self.episode_seed // self.layout_every, LAYOUT_STREAM])
            wall = (shared.uniform(0.35, 0.65), shared.uniform(0.2, 0.8))
        side = int(layout_rng.choice([-1, 1]))
        self.wall_x, self.door_y = wall if self.random_wall else self.default_wall
        self.agent = self._room_point(layout_rng, side)
        self.goal = self._room_point(layout_rng, -side)
        self.goal_state = np.array([*self.goal, self.wall_x, self.door_y], np.float32)
        assert self.episode_seed is not None
        self._cond = Conditions2D.sample(
            self.perturbation,
            self.episode_seed,
            np.stack([_FLOOR, _WALL, _AGENT]),
            self.image_size,
            0.045,
        )
        self._background = self._draw_background()

    def move(self, p: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Move agent discs p [..., 2] by d [..., 2], blocked by the wall (they slide along it);
        vectorised, so a perfect model of the scene can roll out many candidates at once."""
        xl, xr, dl, dh = self._slab()
        r = self.agent_radius
        p, d = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(d, np.float64))
        # Per row, sub-steps shorter than half the slab (as `_move`): no tunnelling.
        k = np.maximum(1, np.ceil(np.abs(d).max(-1, keepdims=True) / (0.5 * (xr - xl))))
        for i in range(int(k.max(initial=1))):
            q = np.where(i < k, np.clip(p + d / k, r, 1 - r), p)
            x, qx = p[..., 0], q[..., 0]
            inside = (xl < x) & (x < xr)  # inside the door corridor: its sides bound y
            cross = ~inside & (((x <= xl) & (xl < qx)) | ((qx < xr) & (xr <= x)))
            bx = np.where(x <= xl, xl, xr)
            with np.errstate(divide="ignore", invalid="ignore"):
                y_cross = p[..., 1] + (bx - x) / (qx - x) * (q[..., 1] - p[..., 1])
            through = inside | (cross & (dl <= y_cross) & (y_cross <= dh))
            q[..., 1] = np.where(through, np.clip(q[..., 1], dl, dh), q[..., 1])
            q[..., 0] = np.where(cross & ~through, bx, qx)
            p = q
        return p

    def unroll(self, p: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Agent positions p [S or 1, 2] moved by action sequences [S, H, 2] (in the units
        `step` takes) -> the positions after each step [S, H, 2]: the scene's own dynamics over
        many candidates at once, a perfect model for the benchmarks' planners."""
        d = np.asarray(actions, np.float64) * self.max_step * self._cond.physics
        p = np.broadcast_to(np.asarray(p, np.float64), (d.shape[0], 2))
        out = []
        for t in range(d.shape[1]):
            p = self.move(p, d[:, t])
            out.append(p)
        return np.stack(out, 1)

    def _move(self, p: np.ndarray, d: np.ndarray) -> np.ndarray:
        """`move` for one point in plain scalar steps (3-4x faster per env step than the
        vectorised rule; tests check the two agree)."""
        xl, xr, dl, dh = self._slab()
        r = self.agent_radius
        # Sub-steps shorter than half the slab so a fast agent cannot tunnel through the wall.
        k = max(1, int(np.ceil(np.abs(d).max() / (0.5 * (xr - xl)))))
        for _ in range(k):
            q = np.clip(p + d / k, r, 1 - r)
            if xl < p[0] < xr:  # inside the door corridor: its sides bound y
                q[1] = np.clip(q[1], dl, dh)
            elif (p[0] <= xl < q[0]) or (q[0] < xr <= p[0]):
                bx = xl if p[0] <= xl else xr
                y_cross = p[1] + (bx - p[0]) / (q[0] - p[0]) * (q[1] - p[1])
                if dl <= y_cross <= dh:
                    q[1] = np.clip(q[1], dl, dh)
                else:
                    q[0] = bx
            p = q
        return p

    def path_length(self, p: np.ndarray) -> np.ndarray:
        """Shortest distance from agent centres p [..., 2] to the goal around the wall: straight
        on the goal's side, else through the door (the best of 9 crossing heights); the exact
        cost-to-go a learned value could at best recover (benchmarks/planning_ceiling.py)."""
        xl, xr, dl, dh = self._slab()
        p = np.asarray(p, np.float64)
        g_left = self.goal[0] < self.wall_x
        same = (p[..., 0] < self.wall_x) == g_left
        ys = np.linspace(dl, dh, 9)
        bp = np.where(p[..., 0] < self.wall_x, xl, xr)[..., None]
        bg = xl if g_left else xr
        via = (np.hypot(p[..., :1] - bp, p[..., 1:] - ys) + (xr - xl)
               + np.hypot(self.goal[0] - bg, self.goal[1] - ys)).min(-1)
        return np.where(same, np.linalg.norm(p - self.goal, axis=-1), via)

    def _apply_action(self, action: np.ndarray) -> None:
        self.agent = self._move(
            self.agent, action.astype(np.float64) * self.max_step * self._cond.physics
        )

    def _state(self) -> np.ndarray:
        return np.array([*self.agent, self.wall_x, self.door_y], np.float32)

    def _distance(self) -> float:
        return float(np.linalg.norm(self.agent - self.goal))

    def set_agent(self, xy: np.ndarray) -> dict[str, np.ndarray]:
        """Place the agent (tests / hand-built states; no collision check); returns the new
        observation, which `render()` then shows."""
        self.agent = np.asarray(xy, np.float64).copy()
        return self._observe()

    # ------------------------------------------------------------------ expert

    def expert_action(
        self, rng: np.random.Generator, target: np.ndarray | None = None
    ) -> np.ndarray:
        """Go to the front of the door, through it, then straight to the goal (or to ``target``,
        a point of the arena: `waypoint`); plus noise."""
        xl, xr, dl, dh = self._slab()
        x, y = self.agent
        goal = self.goal if target is None else np.asarray(target, np.float64)
        goal_side = -1 if goal[0] < self.wall_x else 1
        side = 0 if xl < x < xr else (-1 if x <= xl else 1)
        clear = 0.06
        if side == goal_side:
            target = goal
        elif side == 0 or abs(y - self.door_y) < 0.5 * (dh - dl) / 2:
            target = np.array([(xr + clear) if goal_side > 0 else (xl - clear), self.door_y])
        else:
            target = np.array([(xl - clear) if side < 0 else (xr + clear), self.door_y])
        a = np.clip((target - self.agent) / self.max_step, -1.0, 1.0)
        a = a + rng.normal(0.0, self.expert_noise, size=2)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def waypoint(self, rng: np.random.Generator, edge: bool = False) -> np.ndarray:
        """A random free point of either room: the next target of a tour (`policy: tour`); with
        ``edge``, a point pressed against either face of the wall (at any height, so a tour's
        next leg slides along the wall from where a planner gets stuck)."""
        side = int(rng.choice([-1, 1]))
        if not edge:
            return self._room_point(rng, side)
        xl, xr, _, _ = self._slab()
        m = self.agent_radius
        return np.array([xl if side < 0 else xr, rng.uniform(m, 1 - m)])

    def reached(self, target: np.ndarray) -> bool:
        return bool(np.linalg.norm(self.agent - np.asarray(target)) < self.success_radius)

    # ------------------------------------------------------------------ rendering

    def _draw_background(self) -> np.ndarray:
        n = self.image_size
        img = np.empty((n, n, 3), np.float32)
        img[:] = self._cond.colors[0]
        hw, hd = self.wall_thickness / 2, self.door_width / 2
        x0, x1 = (self.wall_x - hw) * n, (self.wall_x + hw) * n
        for y0, y1 in ((-1.0, (self.door_y - hd) * n), ((self.door_y + hd) * n, n + 1.0)):
            raster.blend(img, *raster.box_coverage(x0, y0, x1, y1, n, n), self._cond.colors[1])
        return img

    def _frame(self, agent: np.ndarray, t: int) -> np.ndarray:
        n = self.image_size
        img = self._background.copy()
        self._cond.draw_distractors(img, t)
        cov = raster.disc_coverage(agent[0] * n, agent[1] * n, self.agent_radius * n, n, n)
        raster.blend(img, *cov, self._cond.colors[2])
        return self._cond.finish(img)

    def _render_pixels(self) -> np.ndarray:
        return self._frame(self.agent, self.elapsed_steps)

    def render_goal(self) -> np.ndarray:
        return self.render_at(self.goal)

    def render_at(self, xy: np.ndarray) -> np.ndarray:
        """The frame with the agent at xy, the scene otherwise as it is (nothing moves): what a
        perfect model of the scene predicts (benchmarks/value_planning.py)."""
        if self.episode_seed is None:
            raise RuntimeError("two-rooms: call reset() before rendering")
        return self._frame(np.asarray(xy, np.float64), 0)

    def _extra_info(self) -> dict[str, Any]:
        return {"goal": self.goal.astype(np.float32)}
