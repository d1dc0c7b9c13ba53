"""Tabletop manipulation in MuJoCo: a pusher end effector, a cube and a mug on a table.

Frame: table top at z = 0, x right, y away from the front camera, metres. The end effector
(ee) is a body on x / y / z slide joints (gravity compensated) tracked by position servos;
an action a in [-1, 1]^2 moves the servo target by ``a * max_step`` (0.01 m) in x, y per
control step (5 physics steps of 4 ms), clipped to the workspace [-0.25, 0.25]^2 and kept
within 3 cm of the ee so it cannot wind up. The z joint (fixed by the task) and the body layout
leave room for a two-finger gripper on the same body, which a grasp task would add.

Tasks (``task=``):
- "push": push ``target_object`` ("cube" default, or "mug") to a goal position (x, y); the
  goal pose also has a yaw (shown in the goal image). Success: position error <
  ``success_radius`` (0.025 m) and, for the cube, yaw error (modulo pi/2, the cube's
  symmetry) < ``yaw_tolerance`` (0.3 rad; None drops the yaw condition). ``distance`` =
  position error (m); ``info["yaw_error"]`` the yaw error (0 for the mug).
- "reach": move the ee (at z = 0.1, above the objects) to a goal (x, y); success within
  0.02 m. ``distance`` = ee position error (m).

State: [ee_x, ee_y, ee_z, cube_x, cube_y, cube_z, cube_yaw, mug_x, mug_y, mug_z, mug_yaw].
Cameras: "front" (3/4 view, default), "top" (overhead), "wrist" (on the ee). The goal is not
drawn in observations; ``render_goal()`` renders the start state with the task entity moved to
its goal (a second MjData, so the episode's physics state is never touched) and, for a push,
the ee where a straight push ends (`push_end`: touching the object from behind on the start ->
goal line), as a frame at the end of a successful push shows it. (Before 2026-12-01 the push
goal showed the ee at its start, a state no push reaches: with a perfect model, a value learned
on the true state pushed 5 % of episodes towards that goal and 15 % towards this one;
benchmarks/push_ceiling.py, 200 episodes; 0 % and 50 % from 1,000.)

Perturbations, all physical changes of the model (except occlusion / action noise, see base):
lighting_shift: key light tilted, its intensity scaled and tinted, headlight scaled;
object_reorder: the non-target objects moved >= min_shift * 0.4 m elsewhere (off the push
corridor); distractors: extra visual-only shapes (no collisions) on the table; camera_shift:
camera position (translate * 1 m), orientation and field of view jittered; color_shift: table,
floor, objects and ee recoloured; physics_shift: object/table sliding friction and object mass
scaled by exp(+-U[m/2, m]).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jepalab.envs.base import SceneEnv
from jepalab.envs.perturb import Perturbation, signed_uniform

WORKSPACE = 0.2
CUBE_HALF = 0.025
MUG_RADIUS, MUG_HALF_H = 0.03, 0.035
EE_RADIUS = 0.015
PUSH_Z, REACH_Z = 0.025, 0.10
_COLORS = {
    "floor": (0.35, 0.36, 0.40),
    "table": (0.66, 0.56, 0.44),
    "cube": (0.85, 0.20, 0.15),
    "mug": (0.20, 0.42, 0.85),
    "mug_handle": (0.20, 0.42, 0.85),
    "ee": (0.15, 0.15, 0.18),
    "ee_rod": (0.55, 0.55, 0.60),
}
_CAMERAS = ("front", "top", "wrist")


def build_mjcf(n_distractors: int = 0, shadows: bool = False) -> str:
    """The scene as an MJCF string; ``n_distractors`` visual-only mocap bodies are added."""
    c = {k: " ".join(f"{x:.3f}" for x in v) + " 1" for k, v in _COLORS.items()}
    shadow = "true" if shadows else "false"
    shapes = ("sphere", "box", "cylinder")
    distractors = "\n".join(
        f'    <body name="distractor{i}" mocap="true" pos="0 0 -1">'
        f'<geom name="distractor{i}" type="{shapes[i % 3]}" size="0.02 0.02 0.02" '
        'contype="0" conaffinity="0" rgba="0.5 0.5 0.5 1"/></body>'
        for i in range(n_distractors)
    )
    return f"""
<mujoco model="jepalab_tabletop">
  <option timestep="0.004" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="{2048 if shadows else 0}" offsamples="0" numslices="16" numstacks="8"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
  </visual>
  <default>
    <geom friction="0.6 0.005 0.0001" solref="0.01 1"/>
  </default>
  <worldbody>
    <light name="key" pos="0.3 -0.4 1.2" dir="-0.25 0.33 -1" diffuse="0.6 0.6 0.6"
           specular="0.1 0.1 0.1" castshadow="{shadow}"/>
    <geom name="floor" type="plane" pos="0 0 -0.3" size="3 3 0.1" rgba="{c["floor"]}"/>
    <geom name="table" type="box" pos="0 0 -0.02" size="0.35 0.35 0.02" rgba="{c["table"]}"/>
    <camera name="front" pos="0 -0.48 0.52" xyaxes="1 0 0 0 0.749 0.663" fovy="54"/>
    <camera name="top" pos="0 0 0.7" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <body name="ee" pos="0 0 0" gravcomp="1">
      <joint name="ee_x" type="slide" axis="1 0 0" damping="40"/>
      <joint name="ee_y" type="slide" axis="0 1 0" damping="40"/>
      <joint name="ee_z" type="slide" axis="0 0 1" damping="40"/>
      <geom name="ee" type="cylinder" size="{EE_RADIUS} 0.02" mass="0.5" rgba="{c["ee"]}"/>
      <geom name="ee_rod" type="cylinder" fromto="0 0 0.02 0 0 0.3" size="0.006" mass="0.01"
            contype="0" conaffinity="0" rgba="{c["ee_rod"]}"/>
      <camera name="wrist" pos="0 -0.1 0.16" xyaxes="1 0 0 0 0.8 0.6" fovy="60"/>
    </body>
    <body name="cube" pos="0 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.1"
            rgba="{c["cube"]}"/>
    </body>
    <body name="mug" pos="0.1 0 {MUG_HALF_H}">
      <freejoint name="mug"/>
      <geom name="mug" type="cylinder" size="{MUG_RADIUS} {MUG_HALF_H}" mass="0.12"
            rgba="{c["mug"]}"/>
      <geom name="mug_handle" type="box" pos="{MUG_RADIUS + 0.008} 0 0.005"
            size="0.008 0.004 0.018" mass="0.005" rgba="{c["mug_handle"]}"/>
    </body>
{distractors}
  </worldbody>
  <actuator>
    <position name="ee_x" joint="ee_x" kp="1500" ctrlrange="-0.3 0.3"/>
    <position name="ee_y" joint="ee_y" kp="1500" ctrlrange="-0.3 0.3"/>
    <position name="ee_z" joint="ee_z" kp="1500" ctrlrange="0 0.3"/>
  </actuator>
</mujoco>
"""


def _yaw(quat: np.ndarray) -> Any:
    """Yaw of quaternions [..., 4] (w, x, y, z): a float, or an array for a batch."""
    w, x, y, z = np.moveaxis(np.asarray(quat), -1, 0)
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _quat_yaw(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _wrap(a: float, period: float = 2 * np.pi) -> float:
    return float((a + period / 2) % period - period / 2)


def _seg_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip((p - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - a - t * ab))


class TabletopEnv(SceneEnv):
    scene_name = "tabletop"
    supported_perturbations = (
        "lighting_shift",
        "object_reorder",
        "distractors",
        "camera_shift",
        "occlusion",
        "color_shift",
        "physics_shift",
        "action_noise",
    )
    default_max_episode_steps = 200

    def __init__(
        self,
        *,
        task: str = "push",
        target_object: str = "cube",
        camera: str = "front",
        image_size: int = 64,
        perturbation: Perturbation | None = None,
        max_episode_steps: int | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
        max_step: float = 0.01,
        success_radius: float | None = None,
        yaw_tolerance: float | None = 0.3,
        shadows: bool = False,
        expert_noise: float = 0.1,
    ) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        try:
            import mujoco
        except ImportError as e:  # the [mujoco] extra is optional
            raise ImportError("tabletop scenes need mujoco: pip install 'jepalab[mujoco]'") from e
        if task not in ("push", "reach"):
            raise ValueError(f"tabletop: task must be 'push' or 'reach', got {task!r}")
        if target_object not in ("cube", "mug"):
            raise ValueError(
                f"tabletop: target_object must be 'cube' or 'mug', got {target_object!r}"
            )
        if camera not in _CAMERAS:
            raise ValueError(f"tabletop: camera must be one of {_CAMERAS}, got {camera!r}")
        self.scene_name = f"tabletop-{task}"
        big = np.array([2.0, 2.0, 2.0])
        low = np.concatenate([-big, -big, [-np.pi], -big, [-np.pi]])
        super().__init__(
            action_dim=2,
            state_low=low,
            state_high=-low,
            image_size=image_size,
            perturbation=perturbation,
            max_episode_steps=max_episode_steps,
            terminate_on_success=terminate_on_success,
            render_mode=render_mode,
        )
        self._mj = mujoco
        self.task, self.target_object, self.camera = task, target_object, camera
        self.max_step = float(max_step)
        default_radius = 0.025 if task == "push" else 0.02
        self.success_radius = float(success_radius or default_radius)
        self.yaw_tolerance = yaw_tolerance
        self.expert_noise = float(expert_noise)
        self.ee_z = PUSH_Z if task == "push" else REACH_Z
        self.state_names = [
            "ee_x", "ee_y", "ee_z",
            "cube_x", "cube_y", "cube_z", "cube_yaw",
            "mug_x", "mug_y", "mug_z", "mug_yaw",
        ]  # fmt: skip
        dis = self.perturbation.get("distractors")
        self.n_distractors = int(dis.params["count"]) if dis else 0
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.n_distractors, shadows))
        self.data = mujoco.MjData(self.model)
        self.goal_data = mujoco.MjData(self.model)
        try:
            self.renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        except mujoco.FatalError as e:
            raise RuntimeError(
                "tabletop: no OpenGL context; set MUJOCO_GL=egl before mujoco is first imported "
                f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): {e}"
            ) from e
        m = self.model
        self._cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        self._qadr = {
            name: int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)])
            for name in ("ee_x", "cube", "mug")
        }
        self._geom = {
            name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name) for name in _COLORS
        }
        self._body = {
            name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name) for name in ("cube", "mug")
        }
        # Model fields the perturbations touch; restored at every reset.
        self._defaults = {
            f: getattr(m, f).copy()
            for f in (
                "light_dir", "light_diffuse", "cam_pos", "cam_quat", "cam_fovy",
                "geom_rgba", "geom_friction", "body_mass", "body_inertia",
            )
        }  # fmt: skip
        self._headlight = (m.vis.headlight.ambient.copy(), m.vis.headlight.diffuse.copy())
        self.goal = np.zeros(3)  # x, y, yaw
        self.goal_state = np.zeros(len(self.state_names), np.float32)
        self._target = np.zeros(2)
        self._sim: Any = None  # scratch MjData of `unroll`

    # ------------------------------------------------------------------ layout

    def _pose(self, data: Any, obj: str) -> np.ndarray:
        return self._qpos_pose(data.qpos, obj)

    def _qpos_pose(self, qpos: np.ndarray, obj: str) -> np.ndarray:
        """x, y, z, yaw [..., 4] of `obj` from joint positions [..., nq]."""
        a = self._qadr[obj]
        return np.concatenate([qpos[..., a : a + 3], _yaw(qpos[..., a + 3 : a + 7])[..., None]], -1)

    def _set_pose(self, data: Any, obj: str, xy: np.ndarray, yaw: float) -> None:
        a = self._qadr[obj]
        z = CUBE_HALF if obj == "cube" else MUG_HALF_H
        data.qpos[a : a + 3] = [xy[0], xy[1], z]
        data.qpos[a + 3 : a + 7] = _quat_yaw(yaw)

    def _free(self, p: np.ndarray, keep_out: list[tuple[np.ndarray, np.ndarray, float]]) -> bool:
        return all(_seg_dist(p, a, b) > r for a, b, r in keep_out)

    def _draw_layout(self, rng: np.random.Generator) -> dict[str, Any]:
        """Start poses and goal, drawn from the reset seed only (fixed call sequence)."""
        lay: dict[str, Any] = {}
        if self.task == "push":
            tgt, other = self.target_object, "mug" if self.target_object == "cube" else "cube"
            start = rng.uniform(-0.12, 0.12, size=2)
            lay[tgt] = (start, rng.uniform(-np.pi, np.pi))
            goal = start
            for _ in range(100):
                ang, dist = rng.uniform(-np.pi, np.pi), rng.uniform(0.08, 0.16)
                goal = start + dist * np.array([np.cos(ang), np.sin(ang)])
                if np.all(np.abs(goal) <= 0.14):
                    break
            self.goal = np.array([*goal, rng.uniform(-np.pi, np.pi)])
            u = (goal - start) / np.linalg.norm(goal - start)
            # The push corridor: from behind the object's start to the goal.
            self._corridor = [(start - 0.08 * u, goal, 0.1)]
            lay[other] = (self._place(rng, [*self._corridor], 0.16), rng.uniform(-np.pi, np.pi))
            near = [(lay[o][0], lay[o][0], 0.08) for o in (tgt, other)]
            lay["ee"] = self._place(rng, near, 0.18)
        else:
            self.goal = np.array([*rng.uniform(-0.16, 0.16, size=2), 0.0])
            self._corridor = []
            cube = self._place(rng, [], 0.15)
            lay["cube"] = (cube, rng.uniform(-np.pi, np.pi))
            lay["mug"] = (self._place(rng, [(cube, cube, 0.09)], 0.15), rng.uniform(-np.pi, np.pi))
            lay["ee"] = self._place(rng, [(self.goal[:2], self.goal[:2], 0.1)], 0.18)
        return lay

    def _place(self, rng: np.random.Generator, keep_out: list, half: float) -> np.ndarray:
        """A point in [-half, half]^2 clear of ``keep_out`` segments (best of 200 draws)."""
        best, best_margin = np.zeros(2), -np.inf
        for _ in range(200):
            p = rng.uniform(-half, half, size=2)
            margin = min((_seg_dist(p, a, b) - r for a, b, r in keep_out), default=1.0)
            if margin > 0:
                return p
            if margin > best_margin:
                best, best_margin = p, margin
        return best

    def _reorder(self, lay: dict[str, Any]) -> None:
        """object_reorder: move each non-target object >= min_shift * 0.4 m elsewhere."""
        c = self.perturbation.get("object_reorder")
        if c is None:
            return
        assert self.episode_seed is not None
        rng = c.rng(self.episode_seed)
        movable = (
            ["cube", "mug"]
            if self.task == "reach"
            else [o for o in ("cube", "mug") if o != self.target_object]
        )
        for obj in movable:
            old = lay[obj][0]
            others = [(lay[o][0], lay[o][0], 0.09) for o in ("cube", "mug") if o != obj]
            keep = [
                *self._corridor,
                *others,
                (lay["ee"], lay["ee"], 0.07),
                (old, old, c.params["min_shift"] * 0.4),
            ]
            if self.task == "reach":
                keep.append((self.goal[:2], self.goal[:2], 0.05))
            lay[obj] = (self._place(rng, keep, 0.16), rng.uniform(-np.pi, np.pi))

    # ------------------------------------------------------------------ perturbations

    def _apply_conditions(self, lay: dict[str, Any]) -> None:
        m, seed = self.model, self.episode_seed
        assert seed is not None
        for f, v in self._defaults.items():
            getattr(m, f)[:] = v
        m.vis.headlight.ambient[:], m.vis.headlight.diffuse[:] = self._headlight
        if c := self.perturbation.get("lighting_shift"):
            rng, p = c.rng(seed), c.params
            axis = np.array([*rng.normal(size=2), 0.0])
            d = _rotate(m.light_dir[0], axis, np.deg2rad(signed_uniform(rng, p["tilt_deg"])))
            m.light_dir[0] = d / np.linalg.norm(d)
            gain = 1.0 + signed_uniform(rng, p["intensity"])
            tint = 1.0 + p["tint"] * rng.uniform(-1.0, 1.0, size=3)
            m.light_diffuse[0] = np.clip(m.light_diffuse[0] * gain * tint, 0.0, 1.0)
            m.vis.headlight.diffuse[:] = np.clip(self._headlight[1] * gain, 0.0, 1.0)
            m.vis.headlight.ambient[:] = np.clip(self._headlight[0] * (1 + 0.5 * (gain - 1)), 0, 1)
        if c := self.perturbation.get("camera_shift"):
            rng, p = c.rng(seed), c.params
            k = self._cam
            m.cam_pos[k] += signed_uniform(rng, p["translate"], size=3)
            axis = rng.normal(size=3)
            dq = _axis_quat(axis, np.deg2rad(signed_uniform(rng, p["rotate_deg"])))
            m.cam_quat[k] = _quat_mul(dq, m.cam_quat[k])
            m.cam_fovy[k] = m.cam_fovy[k] / (1.0 + signed_uniform(rng, p["zoom"]))
        if c := self.perturbation.get("color_shift"):
            rng = c.rng(seed)
            for name in ("floor", "table", "cube", "mug", "ee"):
                g = self._geom[name]
                m.geom_rgba[g, :3] += c.params["amount"] * (
                    rng.uniform(0, 1, 3) - m.geom_rgba[g, :3]
                )
            m.geom_rgba[self._geom["mug_handle"]] = m.geom_rgba[self._geom["mug"]]
        if c := self.perturbation.get("physics_shift"):
            f_fric, f_mass = np.exp(signed_uniform(c.rng(seed), c.params["log_scale"], size=2))
            for name in ("table", "cube", "mug", "mug_handle"):
                m.geom_friction[self._geom[name], 0] *= f_fric
            for name in ("cube", "mug"):
                m.body_mass[self._body[name]] *= f_mass
                m.body_inertia[self._body[name]] *= f_mass
        self.data.mocap_pos[:] = [0.0, 0.0, -1.0]
        if c := self.perturbation.get("distractors"):
            rng = c.rng(seed)
            size = 0.02 * c.params["size"]
            keep = [(lay[o][0], lay[o][0], 0.06) for o in ("cube", "mug")] + [
                (self.goal[:2], self.goal[:2], 0.06)
            ]
            for i in range(self.n_distractors):
                xy = self._place(rng, keep, 0.2)
                keep.append((xy, xy, 0.05))
                self.data.mocap_pos[i] = [xy[0], xy[1], size]
                g = self._mj.mj_name2id(m, self._mj.mjtObj.mjOBJ_GEOM, f"distractor{i}")
                m.geom_size[g] = size
                m.geom_rgba[g, :3] = rng.uniform(0, 1, 3)

    # ------------------------------------------------------------------ gymnasium hooks

    def _reset_scene(self, layout_rng: np.random.Generator) -> None:
        mj, m, d = self._mj, self.model, self.data
        lay = self._draw_layout(layout_rng)
        self._reorder(lay)
        mj.mj_resetData(m, d)
        self._apply_conditions(lay)
        for obj in ("cube", "mug"):
            self._set_pose(d, obj, *lay[obj])
        ee = self._qadr["ee_x"]
        d.qpos[ee : ee + 3] = [*lay["ee"], self.ee_z]
        self._target = np.array(lay["ee"], np.float64)
        d.ctrl[:] = [*self._target, self.ee_z]
        mj.mj_forward(m, d)
        # Goal state: the start state with the task entity at its goal.
        g = self.goal_data
        mj.mj_resetData(m, g)
        g.qpos[:] = d.qpos
        g.mocap_pos[:] = d.mocap_pos
        if self.task == "push":
            self._set_pose(g, self.target_object, self.goal[:2], self.goal[2])
            g.qpos[ee : ee + 2] = self.push_end(self._pose(d, self.target_object)[:2])
        else:
            g.qpos[ee : ee + 2] = self.goal[:2]
        mj.mj_forward(m, g)
        self.goal_state = self._state_of(g)

    def _servo_step(self, data: Any, target: np.ndarray, action: np.ndarray) -> np.ndarray:
        """One control step of `data`: the servo target moved by ``action * max_step`` (inside
        the workspace, within 3 cm of the ee), then 5 physics steps; returns the new target."""
        ee = data.qpos[self._qadr["ee_x"] : self._qadr["ee_x"] + 2]
        t = np.clip(target + np.asarray(action, np.float64) * self.max_step, -WORKSPACE, WORKSPACE)
        t = np.clip(t, ee - 0.03, ee + 0.03)
        data.ctrl[:] = [*t, self.ee_z]
        self._mj.mj_step(self.model, data, nstep=5)
        return t

    def _apply_action(self, action: np.ndarray) -> None:
        self._target = self._servo_step(self.data, self._target, action)

    def unroll(self, actions: np.ndarray) -> np.ndarray:
        """States [S, H, 11] after each step of action sequences [S, H, 2] (the units `step`
        takes) from the current state: the scene's own physics, candidate by candidate in a
        scratch MjData (the episode is not touched); a perfect model for the benchmarks'
        planners (benchmarks/push_ceiling.py)."""
        mj, m = self._mj, self.model
        if self._sim is None:
            self._sim = mj.MjData(m)
        spec = mj.mjtState.mjSTATE_INTEGRATION  # all that the next step reads
        state = np.empty(mj.mj_stateSize(m, spec))
        mj.mj_getState(m, self.data, state, spec)
        actions = np.asarray(actions, np.float64)
        qpos = np.empty((*actions.shape[:2], m.nq))
        for i, seq in enumerate(actions):
            mj.mj_setState(m, self._sim, state, spec)
            target = self._target
            for t, a in enumerate(seq):
                target = self._servo_step(self._sim, target, a)
                qpos[i, t] = self._sim.qpos
        return self._qpos_states(qpos)

    def _qpos_states(self, qpos: np.ndarray) -> np.ndarray:
        """States [..., 11] (`state_names`) of joint positions [..., nq]."""
        ee = self._qadr["ee_x"]
        return np.concatenate(
            [qpos[..., ee : ee + 3], self._qpos_pose(qpos, "cube"), self._qpos_pose(qpos, "mug")],
            -1,
        ).astype(np.float32)

    def _state_of(self, data: Any) -> np.ndarray:
        return self._qpos_states(data.qpos)

    def _state(self) -> np.ndarray:
        return self._state_of(self.data)

    def _errors(self) -> tuple[float, float]:
        """(position error in m, yaw error in rad; 0 when yaw does not count)."""
        if self.task == "reach":
            ee = self._qadr["ee_x"]
            return float(np.linalg.norm(self.data.qpos[ee : ee + 2] - self.goal[:2])), 0.0
        pose = self._pose(self.data, self.target_object)
        pos = float(np.linalg.norm(pose[:2] - self.goal[:2]))
        yaw = abs(_wrap(pose[3] - self.goal[2], np.pi / 2)) if self.target_object == "cube" else 0.0
        return pos, yaw

    def _distance(self) -> float:
        return self._errors()[0]

    def _is_success(self) -> bool:
        pos, yaw = self._errors()
        ok_yaw = self.yaw_tolerance is None or yaw < self.yaw_tolerance
        return pos < self.success_radius and ok_yaw

    def _extra_info(self) -> dict[str, Any]:
        return {"yaw_error": self._errors()[1]}

    def _render_data(self, data: Any) -> np.ndarray:
        self.renderer.update_scene(data, camera=self._cam)
        return self.renderer.render().copy()

    def _render_pixels(self) -> np.ndarray:
        return self._render_data(self.data)

    def render_goal(self) -> np.ndarray:
        if self.episode_seed is None:
            raise RuntimeError(f"{self.scene_name}: call reset() before render_goal()")
        return self._render_data(self.goal_data)

    def close(self) -> None:
        renderer = getattr(self, "renderer", None)
        if renderer is not None:
            renderer.close()
            self.renderer = None

    # ------------------------------------------------------------------ expert

    def expert_action(self, rng: np.random.Generator) -> np.ndarray:
        """Reach: straight to the goal. Push: get behind the object (rounding it when it is in
        the way) on the line to the goal, then push along that line, correcting drift."""
        ee_adr = self._qadr["ee_x"]
        ee = self.data.qpos[ee_adr : ee_adr + 2].copy()
        move = self.goal[:2] - ee if self.task == "reach" else self._push_move(ee)
        a = np.clip(move / self.max_step, -1.0, 1.0) + rng.normal(0.0, self.expert_noise, size=2)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def _push_move(self, ee: np.ndarray) -> np.ndarray:
        pose = self._pose(self.data, self.target_object)
        p = pose[:2]
        err = self.goal[:2] - p
        dist = float(np.linalg.norm(err))
        if self.yaw_tolerance is not None and self.target_object == "cube":
            yaw_err = _wrap(self.goal[2] - pose[3], np.pi / 2)
            if dist < 0.7 * self.success_radius and abs(yaw_err) > 0.6 * self.yaw_tolerance:
                return self._turn_move(ee, pose, yaw_err)
        u = err / max(dist, 1e-9)
        n = np.array([-u[1], u[0]])
        reach = self._reach(pose[3], u)
        rel = ee - p
        along, lateral = float(rel @ u), float(rel @ n)
        if -(reach + 0.03) < along < -(reach - 0.012) and abs(lateral) < 0.012:
            speed = min(self.max_step, dist + 0.003)
            return u * speed - n * lateral * 0.5  # pushing: move on, steer back to the line
        pre = p - u * (reach + 0.012)
        return _go_around(ee, p, pre, CUBE_HALF * np.sqrt(2) + EE_RADIUS + 0.008)

    def _reach(self, yaw: float, u: np.ndarray) -> float:
        """Centre distance of the ee touching the object (yaw) from behind, pushing along u."""
        if self.target_object == "cube":
            back = _rot2(-yaw) @ -u  # push-from direction in the cube's frame
            return CUBE_HALF / max(abs(back[0]), abs(back[1])) + EE_RADIUS
        return MUG_RADIUS + EE_RADIUS

    def push_end(self, start: np.ndarray) -> np.ndarray:
        """Where the ee ends a straight push of the object from `start` (x, y) to its goal pose:
        5 mm behind the object's face on the start -> goal line."""
        u = self.goal[:2] - start
        u = u / max(float(np.linalg.norm(u)), 1e-9)
        return self.goal[:2] - u * (self._reach(self.goal[2], u) + 0.005)

    def _turn_move(self, ee: np.ndarray, pose: np.ndarray, yaw_err: float) -> np.ndarray:
        """Turn the cube: push a face off-centre (torque = offset), from the face nearest the
        ee, preferring faces whose push also heads for the goal."""
        p = pose[:2]
        offset = 0.016 * np.sign(yaw_err)
        best, best_score = None, -np.inf
        for k in range(4):
            normal = _rot2(pose[3] + k * np.pi / 2) @ np.array([1.0, 0.0])
            tangent = np.array([-normal[1], normal[0]])
            contact = p + normal * CUBE_HALF + tangent * offset
            pre = contact + normal * (EE_RADIUS + 0.01)
            score = -float(np.linalg.norm(pre - ee)) + 0.5 * float(-normal @ (self.goal[:2] - p))
            if score > best_score:
                best, best_score = (contact, normal, tangent, pre), score
        assert best is not None
        contact, normal, tangent, pre = best
        rel = ee - contact
        along, lateral = float(rel @ -normal), float(rel @ tangent)
        if -(EE_RADIUS + 0.02) < along < -(EE_RADIUS - 0.01) and abs(lateral) < 0.006:
            return -normal * 0.006 - tangent * lateral * 0.5
        return _go_around(ee, p, pre, CUBE_HALF * np.sqrt(2) + EE_RADIUS + 0.004)


def _go_around(ee: np.ndarray, p: np.ndarray, pre: np.ndarray, clearance: float) -> np.ndarray:
    """Displacement towards ``pre``; if the object at ``p`` is in the way, move on a circle
    about it, turning towards ``pre``."""
    clearance = min(clearance, float(np.linalg.norm(pre - p)) - 0.004)
    if _seg_dist(p, ee, pre) < clearance and np.linalg.norm(ee - pre) > 0.01:
        rel, to_pre = ee - p, pre - p
        ang_e = np.arctan2(rel[1], rel[0])
        ang_p = np.arctan2(to_pre[1], to_pre[0])
        ang = ang_e + np.clip(_wrap(ang_p - ang_e), -0.6, 0.6)
        return p + (clearance + 0.015) * np.array([np.cos(ang), np.sin(ang)]) - ee
    return pre - ee


def _rot2(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _axis_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / (np.linalg.norm(axis) + 1e-12)
    return np.array([np.cos(angle / 2), *(np.sin(angle / 2) * axis)])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])  # fmt: skip


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of v [3] about axis by angle."""
    k = np.asarray(axis, np.float64) / (np.linalg.norm(axis) + 1e-12)
    v = np.asarray(v, np.float64)
    return v * np.cos(angle) + np.cross(k, v) * np.sin(angle) + k * (k @ v) * (1 - np.cos(angle))
