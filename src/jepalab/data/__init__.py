"""Offline trajectory datasets: collection, the on-disk store, torch loaders, previews.

    from jepalab.data import TrajectoryStore, ClipDataset, split_episodes
    from jepalab.data.collect import collect
    from jepalab.data.show import show
    path = collect("two-rooms", 64, "runs/data/two-rooms", policy="mixture:0.5", workers=2)
    store = TrajectoryStore.open(path)            # verifies chunk hashes
    train, val = split_episodes(store, 0.1, seed=0)
    clips = ClipDataset(store, frames=8, episodes=train)   # uint8 [8, 3, H, W]

Submodules are imported lazily so ``import jepalab.data`` does not pull in torch or gymnasium.
``collect`` and ``show`` are not re-exported: they share their submodule's name, and a package
attribute would resolve to the function or the module depending on import order.
(``images.py`` holds the simulator-free image sources used by pretraining.)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrajectoryStore": "store",
    "Episode": "store",
    "run_episode": "collect",
    "make_policy": "policies",
    "FrameDataset": "loaders",
    "ClipDataset": "loaders",
    "TransitionDataset": "loaders",
    "split_episodes": "loaders",
    "seed_worker": "loaders",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"jepalab.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'jepalab.data' has no attribute {name!r}")
