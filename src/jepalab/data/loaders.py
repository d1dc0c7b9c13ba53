"""torch Datasets over a trajectory store: frames, clips and k-step transitions.

Items are uint8 images (normalisation belongs to the model side) and are a pure function of the
index, so any sampler/seed gives reproducible batches. Worker safety: a Dataset holds the store,
whose pickled form is the path + manifest without memory maps, so each DataLoader worker (fork or
spawn) opens its own maps lazily on first access. Pass ``worker_init_fn=seed_worker`` when item
transforms draw from numpy/random, so workers do not share one numpy seed.

Restricting to an episode subset (``episodes=``) keeps whole trajectories out of training:
``train, val = split_episodes(store, 0.1, seed=0)`` then ``ClipDataset(store, 8, episodes=val)``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed
    (which the DataLoader derives from its generator and the worker id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_episodes(
    store: TrajectoryStore, val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out episodes: (train episode ids, val episode ids), both sorted int64 arrays.

    Episode e goes to val when a hash of (seed, e) falls below ``val_fraction``, so the split of
    existing episodes never changes when the dataset is appended to (no train episode of an old
    checkpoint later becomes a val episode). When no episode falls below the threshold but
    val_fraction > 0, the episode with the smallest hash is held out, so val is never empty.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise JepalabError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = store.num_episodes
    ids = np.arange(n, dtype=np.int64)
    if val_fraction == 0.0:
        return ids, ids[:0]
    if n < 2:
        raise JepalabError(f"{store.path}: {n} episode(s) cannot be split into train and val")
    u = np.array([_unit_hash(seed, e) for e in range(n)])
    val = u < val_fraction
    if not val.any():
        val[np.argmin(u)] = True
    if val.all():
        raise JepalabError(
            f"{store.path}: val_fraction={val_fraction} leaves no training episode out of {n}"
        )
    return ids[~val], ids[val]


def _unit_hash(seed: int, e: int) -> float:
    digest = hashlib.sha256(f"jepalab-split:{seed}:{e}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def _as_store(store: TrajectoryStore | str | Path) -> TrajectoryStore:
    return store if isinstance(store, TrajectoryStore) else TrajectoryStore.open(store)


class _WindowDataset(Dataset):
    """Windows of ``span`` consecutive frames (every ``stride``-th), inside selected episodes."""

    def __init__(
        self,
        store: TrajectoryStore | str | Path,
        span: int,
        stride: int,
        episodes: np.ndarray | list[int] | None,
        what: str,
    ) -> None:
        self.store = _as_store(store)
        n = self.store.num_episodes
        eps = np.arange(n) if episodes is None else np.unique(np.asarray(episodes, np.int64))
        if len(eps) and (eps[0] < 0 or eps[-1] >= n):
            raise JepalabError(
                f"{what}: episode ids must be in [0, {n}), got {eps.min()}..{eps.max()}"
            )
        lengths = self.store.episode_lengths[eps]
        counts = np.maximum(lengths - (span - 1) * stride, 0)
        if counts.sum() == 0:
            longest = int(lengths.max()) if len(lengths) else 0
            raise JepalabError(
                f"{what}: no window of {span} frames (stride {stride}) fits in "
                f"the {len(eps)} selected episode(s) of {self.store.path} "
                f"(longest: {longest} frames)"
            )
        self.episodes = eps
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # first item of each episode

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """Item ``i`` -> (episode id, first frame t)."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range [0, {len(self)})")
        j = int(np.searchsorted(self._starts, i, side="right") - 1)
        return int(self.episodes[j]), int(i - self._starts[j])

    def fingerprint(self) -> str:
        """The store's data fingerprint (recorded in checkpoints)."""
        return self.store.fingerprint()


def _chw(frames: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> [..., 3, H, W] (contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(frames, -1, -3)))


class FrameDataset(_WindowDataset):
    """Every frame of the selected episodes -> uint8 [3, H, W]; with ``labels=True``
    dict(obs uint8 [3, H, W], states float32 [S]) (the frame's scene state, for supervision)."""

    def __init__(
        self,
        store: TrajectoryStore | str | Path,
        episodes: np.ndarray | list[int] | None = None,
        labels: bool = False,
    ) -> None:
        super().__init__(store, 1, 1, episodes, "FrameDataset")
        self.labels = labels

    def __getitem__(self, i: int) -> torch.Tensor | dict[str, torch.Tensor]:
        e, t = self.locate(i)
        if not self.labels:
            return _chw(self.store.clip(e, t, 1)[0])
        tr = self.store.transition(e, t, 0)
        return {"obs": _chw(tr["obs"][0]), "states": torch.from_numpy(tr["states"][0])}


class ClipDataset(_WindowDataset):
    """All windows of ``frames`` frames (every ``stride``-th) inside an episode
    -> uint8 [T, 3, H, W]."""

    def __init__(
        self,
        store: TrajectoryStore | str | Path,
        frames: int,
        stride: int = 1,
        episodes: np.ndarray | list[int] | None = None,
    ) -> None:
        if frames < 1 or stride < 1:
            raise JepalabError(
                f"ClipDataset: frames and stride must be >= 1, got frames={frames}, stride={stride}"
            )
        super().__init__(store, frames, stride, episodes, "ClipDataset")
        self.frames, self.stride = frames, stride

    def __getitem__(self, i: int) -> torch.Tensor:
        e, t = self.locate(i)
        return _chw(self.store.clip(e, t, self.frames, self.stride))


class TransitionDataset(_WindowDataset):
    """All k-step transitions inside an episode -> dict(obs uint8 [k+1, 3, H, W],
    actions float32 [k, A], states float32 [k+1, S], episode, t)."""

    def __init__(
        self,
        store: TrajectoryStore | str | Path,
        k: int,
        episodes: np.ndarray | list[int] | None = None,
    ) -> None:
        if k < 1:
            raise JepalabError(f"TransitionDataset: k must be >= 1, got {k}")
        super().__init__(store, k + 1, 1, episodes, f"TransitionDataset(k={k})")
        self.k = k

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, t = self.locate(i)
        tr = self.store.transition(e, t, self.k)
        return {
            "obs": _chw(tr["obs"]),
            "actions": torch.from_numpy(tr["actions"]),
            "states": torch.from_numpy(tr["states"]),
            "episode": torch.tensor(e),
            "t": torch.tensor(t),
        }
