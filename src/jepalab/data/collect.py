"""Collect trajectory datasets from a scene: deterministic, resumable, parallel.

Episode e is reset with seed ``seed + e`` and its policy draws from a generator derived from that
reset seed alone, so the data do not depend on the number of workers or on interruptions.
Re-running with the same settings continues after the episodes already stored (a killed run
loses at most its unwritten chunk); asking for more episodes appends. Workers (spawn-safe
processes, one env each) return whole episodes; the parent writes chunks in episode order.

    python -m jepalab.data.collect two-rooms 200 runs/data/two-rooms --workers 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import pickle
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from jepalab.data.policies import Policy, canonical_spec, make_policy
from jepalab.data.store import MANIFEST, Episode, TrajectoryStore
from jepalab.errors import JepalabError
from jepalab.io import git_info

POLICY_STREAM = 0x9E3779B9  # salt separating the policy's generator from the env's reset seed
NOT_COMPARED = ("provenance", "perturbation")  # recorded, but not part of compatibility


def policy_rng(reset_seed: int) -> np.random.Generator:
    """The policy's generator for the episode reset with ``reset_seed``."""
    return np.random.default_rng([int(reset_seed), POLICY_STREAM])


def _default_env_fn(name: str, **kwargs: Any) -> gym.Env:
    from jepalab.envs import make

    return make(name, **kwargs)


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to rebuild the env and policy (picklable)."""

    scene: str
    env_kwargs: dict[str, Any]
    policy: str
    seed: int
    max_steps: int | None
    env_fn: Callable[..., gym.Env] = _default_env_fn

    def build(self) -> tuple[gym.Env, Policy]:
        try:
            env = self.env_fn(self.scene, **self.env_kwargs)
        except (ValueError, TypeError) as e:  # unknown scene / kwarg / perturbation
            raise JepalabError(f"scene {self.scene!r}: {e}") from None
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise JepalabError(f"scene {self.scene!r}: needs a Box action space, got {space}")
        return env, make_policy(self.policy, space)


class Recorder(gym.Wrapper):
    """Records every reset and step of the env it wraps; `episode` returns them as a dataset
    `Episode` (collection's episodes, and any other driver's, e.g. an MPC loop's)."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.seed, self.rows = int(kwargs["seed"]), [(obs, info)]
        self.actions: list[np.ndarray] = []
        self.terminated = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.rows.append((obs, info))
        self.actions.append(np.asarray(action, np.float32))
        self.terminated = bool(terminated)
        return obs, reward, terminated, truncated, info

    def episode(self, policy: str, terminated: bool | None = None) -> Episode:
        """The recorded episode; `terminated` defaults to the env's flag at the last step."""
        obs, info = zip(*self.rows)
        a_dim = int(np.prod(self.action_space.shape or (1,)))
        return Episode(
            frames=np.stack([o["pixels"] for o in obs]).astype(np.uint8, copy=False),
            actions=np.stack(self.actions) if self.actions else np.zeros((0, a_dim), np.float32),
            states=np.stack([o["state"] for o in obs]).astype(np.float32, copy=False),
            success=np.asarray([i["is_success"] for i in info], bool),
            distance=np.asarray([i["distance"] for i in info], np.float32),
            seed=self.seed,
            terminated=self.terminated if terminated is None else bool(terminated),
            policy=policy,
        )


def run_episode(
    env: gym.Env, policy: Policy, reset_seed: int, max_steps: int | None = None
) -> Episode:
    """Roll out one episode until terminated, truncated or ``max_steps`` actions."""
    rng = policy_rng(reset_seed)
    rec = Recorder(env)
    obs, _ = rec.reset(seed=int(reset_seed))
    policy.reset(rng)
    while max_steps is None or len(rec.actions) < max_steps:
        obs, _, terminated, truncated, _ = rec.step(policy.act(env, obs, rng))
        if terminated or truncated:
            break
    return rec.episode(policy.mode)


# One env + policy per worker process, built once by the pool initializer.
_worker_state: dict[str, Any] = {}


def _init_worker(job: Job) -> None:
    env, policy = job.build()
    _worker_state.update(job=job, env=env, policy=policy)


def _worker_episode(e: int) -> Episode:
    s = _worker_state
    return run_episode(s["env"], s["policy"], s["job"].seed + e, s["job"].max_steps)


def _episodes(job: Job, todo: range, workers: int, env: gym.Env, pol: Policy) -> Iterator[Episode]:
    if workers == 1 or len(todo) <= 1:
        for e in todo:
            yield run_episode(env, pol, job.seed + e, job.max_steps)
        return
    ctx = mp.get_context("spawn")  # fork is unsafe with MuJoCo/EGL contexts and threads
    with ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(job,)) as pool:
        yield from pool.imap(_worker_episode, todo, chunksize=1)  # ordered by episode


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "scene_kwargs":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_compatible(path: Path, existing: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Raise naming the first setting where an existing dataset differs from this request."""
    old = {k: v for k, v in _flatten(existing).items() if k.split(".")[0] not in NOT_COMPARED}
    new = {k: v for k, v in _flatten(wanted).items() if k.split(".")[0] not in NOT_COMPARED}
    keys = list(dict.fromkeys([*new, *old]))
    for key in sorted(keys, key=lambda k: k.count(".")):  # top-level settings named first
        if old.get(key) != new.get(key):
            raise JepalabError(
                f"{path}: existing dataset has {key}={old.get(key)!r} but this run asks for "
                f"{key}={new.get(key)!r}; use the same settings to resume/append, or another out"
            )


def collect(
    scene: str,
    episodes: int,
    out: str | Path,
    *,
    policy: str = "mixture:0.5",
    workers: int = 1,
    seed: int = 0,
    image_size: int = 64,
    max_steps: int | None = None,
    scene_kwargs: dict[str, Any] | None = None,
    perturb: str | None = None,
    severity: int = 1,
    episodes_per_chunk: int = 16,
    progress: bool = True,
    env_fn: Callable[..., gym.Env] | None = None,
) -> Path:
    """Make ``out`` hold episodes 0..episodes-1 of ``scene``; returns the dataset path.

    Episode e is reset with seed ``seed + e``; the policy's generator is ``policy_rng(seed + e)``.
    An existing dataset at ``out`` is resumed/appended when its recorded settings (scene,
    scene_config, policy, seed, max_steps, env_fn) equal this call's, else JepalabError names
    the first differing field; a dataset holding >= ``episodes`` is left as it is.
    ``max_steps`` caps actions per episode on top of the scene's own time limit. The perturbation
    seed is ``seed``. ``env_fn`` (default ``jepalab.envs.make``) builds the env from the scene
    name and the ``make`` keywords; it must be a module-level function when ``workers > 1``.
    """
    for name, v, lo in (
        ("episodes", episodes, 0),
        ("workers", workers, 1),
        ("episodes_per_chunk", episodes_per_chunk, 1),
    ):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise JepalabError(f"collect: {name} must be an int >= {lo}, got {v!r}")
    if max_steps is not None and max_steps < 1:
        raise JepalabError(f"collect: max_steps must be >= 1 or None, got {max_steps!r}")
    out = Path(out)
    kwargs = json.loads(json.dumps(scene_kwargs or {}))  # what the manifest will hold
    clash = {"image_size", "perturb", "severity", "perturb_seed"} & set(kwargs)
    if clash:
        raise JepalabError(f"collect: scene_kwargs may not set {sorted(clash)}; use the arguments")
    env_kwargs = {
        "image_size": image_size,
        "perturb": perturb,
        "severity": severity,
        "perturb_seed": seed,
        **kwargs,
    }
    fn = env_fn or _default_env_fn
    job = Job(scene, env_kwargs, canonical_spec(policy), int(seed), max_steps, fn)
    if workers > 1:
        try:
            pickle.dumps(job)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise JepalabError(
                f"collect: workers={workers} needs a picklable env_fn (a module-level function), "
                f"got {fn!r} ({e})"
            ) from None
    env, pol = job.build()
    try:
        perturbation = getattr(env.unwrapped, "perturbation", None)
        meta = {
            "scene": scene,
            "scene_config": {
                "image_size": image_size,
                "scene_kwargs": kwargs,
                "perturb": perturb,
                "severity": severity,
                "perturb_seed": seed,
            },
            "perturbation": perturbation.to_dict() if perturbation is not None else [],
            "policy": job.policy,
            "seed": int(seed),
            "max_steps": max_steps,
            "env_fn": "jepalab.envs.make"
            if env_fn is None
            else f"{fn.__module__}.{fn.__qualname__}",
            "provenance": {"git": git_info(), "created_by": "jepalab.data.collect"},
        }
        if (out / MANIFEST).exists():
            store = TrajectoryStore.open(out, verify=True)
            # a spec recorded before a policy gained a parameter means its default
            recorded = {**store.meta, "policy": canonical_spec(store.meta["policy"])}
            check_compatible(out, recorded, meta)
        else:
            store = TrajectoryStore.create(out, meta)
        store.lock()
        try:
            _fill(store, job, episodes, workers, episodes_per_chunk, progress, env, pol)
        finally:
            store.unlock()
    finally:
        env.close()
    return out


def _fill(
    store: TrajectoryStore,
    job: Job,
    episodes: int,
    workers: int,
    per_chunk: int,
    progress: bool,
    env: gym.Env,
    pol: Policy,
) -> None:
    expected = [job.seed + e for e in range(store.num_episodes)]
    if store.episode_seeds != expected:
        raise JepalabError(
            f"{store.path}: stored episode seeds are not seed + e "
            f"(seed={job.seed}); the dataset was not written by collect"
        )
    todo = range(store.num_episodes, episodes)
    bar = tqdm(
        desc=f"collect {job.scene}",
        unit="frame",
        unit_scale=True,
        disable=not progress,
        dynamic_ncols=True,
    )
    # One background writer thread: chunk writes (file I/O, fsync, hashing release the GIL)
    # overlap with collecting the next chunk. At most one write is in flight, so chunks land in
    # episode order and at most two chunks are held in memory.
    pending: Future[None] | None = None
    buffer: list[Episode] = []
    done = store.num_episodes
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-writer") as writer:
        bar.set_postfix_str(f"episodes {done}/{episodes}")
        for ep in _episodes(job, todo, workers, env, pol):
            buffer.append(ep)
            done += 1
            bar.update(len(ep))
            bar.set_postfix_str(f"episodes {done}/{episodes}")
            if len(buffer) == per_chunk or done == episodes:
                if pending is not None:
                    pending.result()  # re-raises a failed write here
                pending = writer.submit(store.append_episodes, buffer)
                buffer = []
        if pending is not None:
            pending.result()


def collect_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``jepalab collect`` (see ``collect_from_args``)."""
    p.add_argument("scene", help="two-rooms | tabletop-push | tabletop-reach | pusht | gym:<id>")
    p.add_argument("episodes", type=int, help="total episodes the dataset should hold")
    p.add_argument("out", help="dataset directory (created, resumed or appended to)")
    p.add_argument(
        "--policy",
        default="mixture:0.5",
        help="random[:corr=,scale=] | expert[:noise=] | mixture:P | explore:T[,p=P] | tour:P",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--perturb", default=None, help="e.g. lighting_shift+occlusion")
    p.add_argument("--severity", type=int, default=1)
    p.add_argument("--episodes-per-chunk", type=int, default=16)
    p.add_argument("--scene-kwargs", default="{}", help="JSON object passed to the scene")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def collect_from_args(args: argparse.Namespace) -> Path:
    try:
        kwargs = json.loads(args.scene_kwargs)
    except json.JSONDecodeError as e:
        raise JepalabError(f"--scene-kwargs: not JSON ({e})") from None
    if not isinstance(kwargs, dict):
        raise JepalabError(f"--scene-kwargs: expected a JSON object, got {args.scene_kwargs}")
    return collect(
        args.scene,
        args.episodes,
        args.out,
        policy=args.policy,
        workers=args.workers,
        seed=args.seed,
        image_size=args.image_size,
        max_steps=args.max_steps,
        scene_kwargs=kwargs,
        perturb=args.perturb,
        severity=args.severity,
        episodes_per_chunk=args.episodes_per_chunk,
        progress=not args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepalab.data.collect", description=__doc__)
    collect_arguments(p)
    args = p.parse_args(argv)
    try:
        path = collect_from_args(args)
    except JepalabError as e:
        print(f"collect: error: {e}", file=sys.stderr)
        return 2
    store = TrajectoryStore.open(path, verify=False)
    print(
        f"dataset: {path} ({store.num_episodes} episodes, {store.num_frames} frames, "
        f"fingerprint {store.fingerprint()[:12]})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
