from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from fake_scene import make_fake

from jepalab.data.collect import run_episode
from jepalab.data.policies import make_policy
from jepalab.data.store import Episode, TrajectoryStore
from jepalab.errors import JepalabError


def _episodes(seeds, policy="random"):
    env = make_fake("fake", image_size=16)
    pol = make_policy(policy, env.action_space)
    return [run_episode(env, pol, s) for s in seeds]


def test_round_trip_through_chunks(tmp_path):
    eps = _episodes(range(5))
    store = TrajectoryStore.create(tmp_path / "ds", {"scene": "fake"})
    assert store.num_episodes == 0 and store.num_frames == 0
    store.append_episodes(eps[:3])
    store.append_episodes(eps[3:])
    store = TrajectoryStore.open(tmp_path / "ds")
    lengths = [len(e.frames) for e in eps]
    assert store.episode_lengths.tolist() == lengths
    assert store.num_frames == sum(lengths) and store.num_episodes == 5
    assert store.image_shape == (16, 16, 3) and store.action_dim == 2 and store.state_dim == 4
    assert store.meta == {"scene": "fake"}
    all_frames = np.concatenate([e.frames for e in eps])
    for i in range(0, store.num_frames, 7):
        np.testing.assert_array_equal(store.frame(i), all_frames[i])
        e, t = store.locate_frame(i)
        np.testing.assert_array_equal(eps[e].frames[t], all_frames[i])
    for e, ep in enumerate(eps):
        got = store.episode(e)
        for key in ("frames", "actions", "states", "success", "distance"):
            np.testing.assert_array_equal(got[key], getattr(ep, key))
        assert Episode(**got).seed == ep.seed
    ep = eps[3]
    np.testing.assert_array_equal(store.clip(3, 1, 4, stride=2), ep.frames[1:9:2])
    tr = store.transition(3, 2, 3)
    assert tr["obs"].dtype == np.uint8 and tr["obs"].shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(tr["obs"], ep.frames[2:6])
    np.testing.assert_array_equal(tr["actions"], ep.actions[2:5])
    np.testing.assert_array_equal(tr["states"], ep.states[2:6])
    # The padded last-frame action is zero and flagged; arrays record episode and step ids.
    cid, off = store._locate_episode(3)
    last = off + lengths[3] - 1
    index = store._array(cid, "index")
    assert index["last"][last] and not index["last"][last - 1]
    assert not store._array(cid, "actions")[last].any()
    assert index["episode"][last] == 3 and index["step"][last] == last - off
    assert index["last"].sum() == store.manifest["chunks"][cid]["episodes"]


def test_random_access_is_memory_mapped_and_pickles_without_data(tmp_path):
    store = TrajectoryStore.create(tmp_path / "ds", {})
    store.append_episodes(_episodes(range(3)))
    store = TrajectoryStore.open(tmp_path / "ds")
    assert store._maps == {}  # nothing opened until used
    store.frame(5)
    arr = store._maps[(0, "frames")]
    assert isinstance(arr, np.memmap) and arr.shape[0] == store.num_frames
    blob = pickle.dumps(store)
    assert len(blob) < 20_000 and pickle.loads(blob)._maps == {}
    np.testing.assert_array_equal(pickle.loads(blob).frame(5), store.frame(5))


def test_fingerprint_is_content_hash(tmp_path):
    eps = _episodes(range(3))
    a = TrajectoryStore.create(tmp_path / "a", {"x": 1})
    b = TrajectoryStore.create(tmp_path / "b", {"x": 2})
    a.append_episodes(eps)
    b.append_episodes(eps)
    assert a.fingerprint() == b.fingerprint() == TrajectoryStore.open(tmp_path / "a").fingerprint()
    before = a.fingerprint()
    a.append_episodes(_episodes([7]))
    assert a.fingerprint() != before


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_chunk_is_named(fake_dataset, tmp_path, damage):
    path = tmp_path / "copy"
    shutil.copytree(fake_dataset.path, path)
    victim = path / "chunks" / "chunk-000001.frames.npy"
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[:-100]))
    else:
        victim.unlink()
    with pytest.raises(JepalabError, match="chunk-000001.frames.npy"):
        TrajectoryStore.open(path)
    TrajectoryStore.open(path, verify=False)  # opening without verification still works


def test_orphans_of_a_killed_write_are_cleaned(fake_dataset, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(fake_dataset.path, path)
    tmp_file = path / "chunks" / ".chunk-000003.frames.npy.abc.tmp"
    unregistered = path / "chunks" / "chunk-000003.frames.npy"
    manifest_tmp = path / ".manifest.json.xyz.tmp"
    for f in (tmp_file, unregistered, manifest_tmp):
        f.write_bytes(b"partial")
    store = TrajectoryStore.open(path)
    assert not tmp_file.exists() and not unregistered.exists() and not manifest_tmp.exists()
    assert store.num_episodes == fake_dataset.num_episodes


def test_writer_lock_protects_temp_files(fake_dataset, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(fake_dataset.path, path)
    writer = TrajectoryStore.open(path)
    writer.lock()
    in_flight = path / "chunks" / ".chunk-000003.frames.npy.abc.tmp"
    in_flight.write_bytes(b"being written")
    TrajectoryStore.open(path)  # a reader must not delete a live writer's temp file
    assert in_flight.exists()
    with pytest.raises(JepalabError, match="another process is writing"):
        TrajectoryStore.open(path).lock()
    writer.unlock()


def test_errors(tmp_path, fake_dataset):
    with pytest.raises(JepalabError, match="not a jepalab dataset"):
        TrajectoryStore.open(tmp_path)
    with pytest.raises(JepalabError, match="already exists"):
        TrajectoryStore.create(fake_dataset.path, {})
    with pytest.raises(JepalabError, match="empty"):
        _ = TrajectoryStore.create(tmp_path / "empty", {}).image_shape
    with pytest.raises(IndexError, match="outside episode 0"):
        fake_dataset.clip(0, 0, fake_dataset.episode_lengths[0] + 1)
    with pytest.raises(IndexError, match="episode 99"):
        fake_dataset.episode(99)
    with pytest.raises(IndexError):
        fake_dataset.frame(fake_dataset.num_frames)
    store = TrajectoryStore.create(tmp_path / "shapes", {})
    ep = _episodes([0])[0]
    bad = Episode(ep.frames, ep.actions[:-1], ep.states, ep.success, ep.distance, seed=0)
    with pytest.raises(JepalabError, match="actions must have 2 dim"):
        store.append_episodes([bad])
    store.append_episodes([ep])
    small = Episode(ep.frames[:, :8], ep.actions, ep.states, ep.success, ep.distance, seed=1)
    with pytest.raises(JepalabError, match="image"):
        store.append_episodes([small])
    assert TrajectoryStore.open(tmp_path / "shapes").num_episodes == 1


def test_series_reads_one_field_as_episode_does(fake_dataset):
    for e in (0, 4, 8):  # the first, a middle and the last chunk
        ep = fake_dataset.episode(e)
        for key in ("frames", "actions", "states", "success", "distance"):
            np.testing.assert_array_equal(fake_dataset.series(e, key), ep[key])
    assert len(fake_dataset.series(0, "actions")) == fake_dataset.episode_lengths[0] - 1
    with pytest.raises(IndexError, match="episode 99"):
        fake_dataset.series(99, "states")
