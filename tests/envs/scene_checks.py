"""Checks shared by the scene tests (imported by them; collects no tests itself)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jepalab.envs import make

VISUAL = ("lighting_shift", "distractors", "camera_shift", "color_shift", "object_reorder")


def rollout(env: Any, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reset with ``seed``, play ``actions``: (pixels [T+1, H, W, 3], states [T+1, S])."""
    obs, _ = env.reset(seed=seed)
    pix, states = [obs["pixels"]], [obs["state"]]
    for a in actions:
        obs, *_ = env.step(a)
        pix.append(obs["pixels"])
        states.append(obs["state"])
    return np.stack(pix), np.stack(states)


def expert_episode(env: Any, seed: int, rng_seed: int = 0) -> dict[str, Any]:
    """Run the scripted expert to the end of the episode; return the last info."""
    rng = np.random.default_rng(rng_seed)
    env.reset(seed=seed)
    info: dict[str, Any] = {}
    for _ in range(env.unwrapped.max_episode_steps):
        _, _, term, trunc, info = env.step(env.unwrapped.expert_action(rng))
        if term or trunc:
            break
    return info


def check_perturbation_claim(name: str, perturb: str, seed: int = 5, **kw: Any) -> None:
    """The perturbation changes what it claims, keeps the layout, and severity 0 is clean."""
    clean = make(name, **kw)
    pert = make(name, perturb=perturb, severity=2, **kw)
    zero = make(name, perturb=perturb, severity=0, **kw)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(6, *clean.action_space.shape)).astype(np.float32)
    pix_c, st_c = rollout(clean, seed, actions)
    pix_p, st_p = rollout(pert, seed, actions)
    pix_z, st_z = rollout(zero, seed, actions)
    assert np.array_equal(pix_c, pix_z) and np.array_equal(st_c, st_z), "severity 0 must be clean"
    # The task layout is drawn from the reset seed only.
    assert np.array_equal(clean.unwrapped.goal_state, pert.unwrapped.goal_state) or (
        perturb == "object_reorder"
    )
    if perturb in ("physics_shift", "action_noise"):
        assert np.array_equal(st_c[0], st_p[0])
        assert not np.allclose(st_c[1:], st_p[1:]), f"{perturb} must change the dynamics"
    elif perturb == "occlusion":
        assert np.array_equal(st_c, st_p)
        assert not np.array_equal(pix_c, pix_p)
        # Goal images carry the episode's conditions but never the per-step occluder.
        assert np.array_equal(clean.unwrapped.render_goal(), pert.unwrapped.render_goal())
    else:
        assert perturb in VISUAL
        if perturb != "object_reorder":
            assert np.array_equal(st_c, st_p)
        frac = np.mean(np.any(pix_c[0] != pix_p[0], axis=-1))
        assert frac > 0.002, f"{perturb} changed only {frac:.4f} of the pixels"
        assert not np.array_equal(clean.unwrapped.render_goal(), pert.unwrapped.render_goal())
