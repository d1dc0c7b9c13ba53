"""Fixtures for data tests; the fake scene and helpers live in fake_scene.py."""

from __future__ import annotations

import pytest
from fake_scene import collect_fake

from jepalab.data.store import TrajectoryStore


@pytest.fixture(scope="session")
def fake_dataset(tmp_path_factory) -> TrajectoryStore:
    """9 episodes of the fake scene in chunks of 4 (chunks 4 + 4 + 1); tests must not modify."""
    path = collect_fake(tmp_path_factory.mktemp("data") / "fake", episodes=9)
    return TrajectoryStore.open(path)
