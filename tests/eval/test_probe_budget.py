"""benchmarks/probe_budget.py's within-episode variance share."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from probe_budget import within_episode_share  # noqa: E402


def test_within_episode_share_separates_static_from_moving_content():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 10)
    static = rng.normal(size=(20, 6))[groups]  # constant within every episode
    moving = rng.normal(size=(200, 6))  # no episode structure at all
    assert within_episode_share(static, groups) == pytest.approx(0.0, abs=1e-9)
    assert within_episode_share(moving, groups) == pytest.approx(0.9, abs=0.05)  # 1 - 1/10
    both = np.concatenate([static, moving[:, :2]], 1)  # standardised: 2 of 8 dims move
    assert within_episode_share(both, groups) == pytest.approx(0.25 * 0.9, abs=0.03)
