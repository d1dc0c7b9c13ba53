"""Append-only SQLite episode store: add, duplicates, resume keys, filters, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jepalab.errors import JepalabError
from jepalab.eval.store import DuplicateEpisode, EpisodeStore


def row(**kw):
    base = {"arm": "candidate", "encoder_sha": "a" * 64, "condition": "clean", "severity": 1,
            "pretrain_seed": 0, "eval_seed": 0, "episode": 0, "success": 1,
            "final_distance": 0.2, "steps": 12, "plan_time_s": 0.4, "extra": {"note": "x"}}
    return {**base, **kw}


def test_add_duplicate_done_keys_filters(tmp_path):
    path = tmp_path / "run" / "episodes.sqlite"
    with EpisodeStore(path) as s:
        assert s.add(row()) is True
        assert s.add(row(episode=1, success=False, extra=None)) is True
        assert s.add(row(arm="baseline", condition="fog", severity=2, episode=np.int64(0),
                         final_distance=np.float32(1.5))) is True
        with pytest.raises(DuplicateEpisode, match="already stored"):
            s.add(row(success=0))  # same key, different outcome: refused, not overwritten
        assert s.add(row(success=0), ignore_duplicate=True) is False
        assert len(s) == 3
        assert s.done_keys() == {("candidate", "clean", 1, 0, 0, 0), ("candidate", "clean", 1,
                                 0, 0, 1), ("baseline", "fog", 2, 0, 0, 0)}
        assert [r["episode"] for r in s.rows(arm="candidate")] == [0, 1]
        assert s.rows(condition="fog")[0]["final_distance"] == 1.5
        assert len(s.rows(condition=["fog", "clean"], success=1)) == 2
        assert s.rows(episode=[]) == []
        first = s.to_records()[0]
        assert first["extra"] == {"note": "x"} and first["success"] == 1 and first["created_at"]
        assert s.rows(episode=1)[0]["extra"] == {}
    with EpisodeStore(path) as s:  # persisted; reopened
        assert len(s) == 3 and s.rows(success=1)[0]["steps"] == 12


def test_rows_are_never_updated_or_deleted(tmp_path):
    path = tmp_path / "e.sqlite"
    EpisodeStore(path).add(row())
    con = sqlite3.connect(path)
    for sql in ("UPDATE episodes SET success = 0", "DELETE FROM episodes"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute(sql)
    con.close()


def test_bad_rows_name_the_field(tmp_path):
    s = EpisodeStore(tmp_path / "e.sqlite")
    cases = [({"episod": 1}, "unknown field 'episod'"), ({"success": 2}, "rejected"),
             ({"arm": "other"}, "rejected"), ({"steps": 1.5}, r"row\.steps"),
             ({"final_distance": float("nan")}, "final_distance"),
             ({"extra": "[1]"}, "extra"), ({"condition": ""}, "condition")]
    for kw, pattern in cases:
        with pytest.raises(JepalabError, match=pattern):
            s.add(row(**kw))
    bad = row()
    del bad["eval_seed"]
    with pytest.raises(JepalabError, match="missing field 'eval_seed'"):
        s.add(bad)
    with pytest.raises(JepalabError, match="unknown column"):
        s.rows(colour="red")
    assert len(s) == 0


def test_add_many_is_all_or_nothing(tmp_path):
    s = EpisodeStore(tmp_path / "e.sqlite")
    assert s.add_many([row(episode=i) for i in range(5)]) == 5
    with pytest.raises(DuplicateEpisode, match="nothing from this batch"):
        s.add_many([row(episode=i) for i in range(3, 8)])
    assert len(s) == 5
    assert s.add_many([row(episode=i) for i in range(3, 8)], ignore_duplicate=True) == 3
    assert len(s) == 8


def test_meta(tmp_path):
    s = EpisodeStore(tmp_path / "e.sqlite")
    assert "created_at" in s.meta
    s.meta["contract"] = '{"name": "x"}'
    assert EpisodeStore(tmp_path / "e.sqlite").meta["contract"] == '{"name": "x"}'
    assert s.meta.get("missing") is None
    with pytest.raises(JepalabError, match="strings"):
        s.meta["n"] = 3


_WRITER = textwrap.dedent("""
    import os, sys, time
    from jepalab.eval.store import EpisodeStore
    path, arm, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = EpisodeStore(path)
    open(go + "." + arm, "w").close()  # ready
    while not os.path.exists(go):  # start together so the writes overlap
        time.sleep(0.005)
    for e in range(n):  # one transaction per episode, as the panel writes them
        s.add({"arm": arm, "encoder_sha": "b" * 64, "condition": "clean", "severity": 1,
               "pretrain_seed": 0, "eval_seed": e % 3, "episode": e, "success": e % 2})
        s.add({"arm": arm, "encoder_sha": "b" * 64, "condition": "clean", "severity": 1,
               "pretrain_seed": 0, "eval_seed": 0, "episode": 0, "success": 0},
              ignore_duplicate=True)
        time.sleep(0.0005)  # episodes end at different times; let the writers interleave
""")


def test_two_processes_write_concurrently(tmp_path):
    path = tmp_path / "e.sqlite"
    EpisodeStore(path).close()
    n, go = 300, tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), arm, str(n), str(go)],
                              stderr=subprocess.PIPE, text=True)
             for arm in ("candidate", "baseline")]
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"go.{a}").exists() for a in ("candidate", "baseline")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    s = EpisodeStore(path)
    assert len(s) == 2 * n
    for arm in ("candidate", "baseline"):
        assert sorted(r["episode"] for r in s.rows(arm=arm)) == list(range(n))
    arms = [r["arm"] for r in s.rows()]
    switches = sum(a != b for a, b in zip(arms, arms[1:]))
    assert switches > 1, "the two writers did not overlap; the test proved nothing"
