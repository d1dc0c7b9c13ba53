from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_scene import collect_fake, replay

from jepalab.data.collect import collect
from jepalab.data.store import TrajectoryStore
from jepalab.errors import JepalabError

HERE = Path(__file__).parent


def _same_episodes(a: TrajectoryStore, b: TrajectoryStore) -> None:
    assert a.num_episodes == b.num_episodes
    for e in range(a.num_episodes):
        ea, eb = a.episode(e), b.episode(e)
        for key in ("frames", "actions", "states", "success", "distance"):
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"episode {e} {key}")
        assert (ea["seed"], ea["policy"]) == (eb["seed"], eb["policy"])


def test_collected_frames_are_what_the_env_produced(fake_dataset):
    store = fake_dataset
    assert store.episode_seeds == list(range(9))
    assert [c["episodes"] for c in store.manifest["chunks"]] == [4, 4, 1]
    assert len(set(store.episode_lengths.tolist())) > 1  # early termination varies lengths
    modes = store.manifest["episodes"]["policy"]
    assert set(modes) == {"expert", "random"}
    for e in range(store.num_episodes):
        ref = replay(store, e)
        ep = store.episode(e)
        np.testing.assert_array_equal(ep["frames"], ref["frames"])
        np.testing.assert_array_equal(ep["states"], ref["states"])
        assert ep["terminated"] == bool(ep["success"][-1])
        assert ep["terminated"] or len(ep["frames"]) == 13  # else the 12-step time limit
    meta = store.meta
    assert meta["scene"] == "fake" and meta["seed"] == 0
    assert meta["policy"] == "mixture:p=0.5,corr=0.8,scale=0.6"
    assert meta["scene_config"]["image_size"] == 16
    assert meta["env_fn"].endswith("make_fake")


def test_two_rooms_round_trip(tmp_path):
    from jepalab.envs import make

    path = collect(
        "two-rooms",
        3,
        tmp_path / "tr",
        image_size=32,
        max_steps=15,
        perturb="lighting_shift",
        severity=2,
        progress=False,
    )
    store = TrajectoryStore.open(path)
    assert store.image_shape == (32, 32, 3) and store.num_episodes == 3
    assert store.meta["perturbation"][0]["name"] == "lighting_shift"
    assert (store.episode_lengths <= 16).all()
    env = make("two-rooms", image_size=32, perturb="lighting_shift", severity=2, perturb_seed=0)
    for e in range(3):
        ep = store.episode(e)
        obs, _ = env.reset(seed=ep["seed"])
        np.testing.assert_array_equal(ep["frames"][0], obs["pixels"])
        for t, a in enumerate(ep["actions"]):
            obs, *_ = env.step(a)
            np.testing.assert_array_equal(ep["frames"][t + 1], obs["pixels"])
            np.testing.assert_array_equal(ep["states"][t + 1], obs["state"])


def test_workers_do_not_change_the_data(tmp_path, fake_dataset, monkeypatch):
    pids = tmp_path / "pids"
    pids.mkdir()
    # Each process's first reset waits until two processes are running episodes at once.
    monkeypatch.setenv("JEPALAB_TEST_BARRIER_DIR", str(pids))
    two = TrajectoryStore.open(collect_fake(tmp_path / "w2", episodes=9, workers=2))
    workers = {p.name for p in pids.iterdir()}
    assert len(workers) == 2 and str(os.getpid()) not in workers
    assert two.fingerprint() == fake_dataset.fingerprint()
    _same_episodes(two, fake_dataset)


def test_append_and_rerun(tmp_path, fake_dataset):
    path = collect_fake(tmp_path / "a", episodes=5)
    collect_fake(path, episodes=9)
    store = TrajectoryStore.open(path)
    assert [c["episodes"] for c in store.manifest["chunks"]] == [4, 1, 4]
    _same_episodes(store, fake_dataset)
    before = store.fingerprint()
    collect_fake(path, episodes=9)  # already complete: nothing is written
    collect_fake(path, episodes=3)  # fewer than stored: nothing is removed either
    assert TrajectoryStore.open(path).fingerprint() == before


def test_resume_after_sigkill(tmp_path, fake_dataset):
    out = tmp_path / "killed"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from fake_scene import collect_fake; "
        "collect_fake(sys.argv[2], episodes=int(sys.argv[3]))"
    )
    env = {**os.environ, "JEPALAB_TEST_STEP_DELAY": "0.003"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(HERE), str(out), "24"], env=env)
    manifest, chunks, deadline = out / "manifest.json", 0, time.monotonic() + 20
    try:
        while chunks < 1 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
            if manifest.exists():
                chunks = json.loads(manifest.read_text())["counts"]["chunks"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "collect finished before it could be killed"
    stored = TrajectoryStore.open(out, verify=True).num_episodes
    assert 0 < stored < 24 and stored % 4 == 0  # only whole chunks were registered
    collect_fake(out, episodes=24)  # resume (fast: no step delay)
    resumed = TrajectoryStore.open(out)
    assert resumed.episode_seeds == list(range(24))
    reference = TrajectoryStore.open(collect_fake(tmp_path / "ref", episodes=24))
    assert resumed.fingerprint() == reference.fingerprint()
    _same_episodes(resumed, reference)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"policy": "random"}, "policy"),
        ({"image_size": 24}, "scene_config.image_size"),
        ({"seed": 3}, "seed"),
        ({"max_steps": 5}, "max_steps"),
        ({"perturb": "tint"}, "scene_config.perturb"),
    ],
)
def test_incompatible_dataset_names_the_field(fake_dataset, change, field):
    with pytest.raises(JepalabError, match=f"existing dataset has {field}="):
        collect_fake(fake_dataset.path, episodes=10, **change)
    assert TrajectoryStore.open(fake_dataset.path).num_episodes == 9


def test_bad_arguments(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(JepalabError, match="not empty"):
        collect_fake(tmp_path / "junk", episodes=2)
    with pytest.raises(JepalabError, match="workers"):
        collect_fake(tmp_path / "w", episodes=2, workers=0)
    with pytest.raises(JepalabError, match="unknown kind"):
        collect_fake(tmp_path / "p", episodes=2, policy="greedy")
    with pytest.raises(JepalabError, match="scene 'nope'"):
        collect("nope", 2, tmp_path / "s", progress=False)


def test_appending_to_a_dataset_recorded_before_a_policy_parameter_existed(tmp_path):
    """A tour dataset recorded as 'tour:...,edge=0.3' (before `press`) takes more episodes of
    the same policy: the recorded spec is read with today's defaults (press=0)."""
    path = collect("two-rooms", 2, tmp_path / "tr", image_size=16, max_steps=5,
                   policy="tour:0.5,edge=0.3", progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["meta"]["policy"].endswith(",press=0.0")
    manifest["meta"]["policy"] = "tour:p=0.5,corr=0.8,scale=0.6,edge=0.3"
    (path / "manifest.json").write_text(json.dumps(manifest))
    collect("two-rooms", 3, path, image_size=16, max_steps=5, policy="tour:0.5,edge=0.3",
            progress=False)
    assert TrajectoryStore.open(path).num_episodes == 3
    with pytest.raises(JepalabError, match="policy="):
        collect("two-rooms", 4, path, image_size=16, max_steps=5,
                policy="tour:0.5,edge=0.3,press=4", progress=False)
