"""Evidence record schema (round trip, one-line field errors) and the statistics under it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evidence_helpers import SHA_A, episode_rows, make_record

from jepalab.errors import JepalabError
from jepalab.eval.evidence import SCHEMA_VERSION, EvidenceRecord, build_record
from jepalab.eval.stats import bootstrap_mean_ci, paired_bootstrap_diff, wilson_ci

SPEC = {("clean", 1): (32, 12), ("lighting_shift", 2): (24, 22)}


@pytest.fixture(scope="module")
def record() -> EvidenceRecord:
    return make_record(episode_rows(SPEC))


def test_round_trip(tmp_path, record):
    path = record.save(tmp_path / "evidence.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["git"].keys() == {"commit", "dirty"}
    back = EvidenceRecord.load(path)
    assert back == record
    assert back.decision.accepted is True
    assert [(c.label, c.arm) for c in back.results] == [
        ("clean", "candidate"), ("clean", "baseline"),
        ("lighting_shift@2", "candidate"), ("lighting_shift@2", "baseline")]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temp file


def test_as_row(record):
    row = record.as_row()
    assert row["candidate_clean"] == pytest.approx(32 / 40)
    assert row["baseline_clean"] == pytest.approx(12 / 40)
    assert row["accepted"] is True and row["encoder_sha256"] == SHA_A
    assert row["rule"] == "beats_baseline_clean_and_robust"
    assert all(not isinstance(v, (dict, list)) for v in row.values())  # flat


def _edit(tmp_path, record, fn) -> str:
    data = record.model_dump(mode="json")
    fn(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(JepalabError) as e:
        EvidenceRecord.load(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p))
    return msg


def test_bad_sha_names_field(tmp_path, record):
    msg = _edit(tmp_path, record, lambda d: d["encoder_checkpoint"].update(sha256="abc123"))
    assert "encoder_checkpoint.sha256" in msg and "64 hex" in msg
    msg = _edit(tmp_path, record,
                lambda d: d["baseline"]["encoder_checkpoint"].update(sha256="z" * 64))
    assert "baseline.encoder_checkpoint.sha256" in msg


def test_missing_arm_names_condition(tmp_path, record):
    def drop(d):
        d["results"] = [c for c in d["results"]
                        if not (c["condition"] == "lighting_shift" and c["arm"] == "baseline")]
    msg = _edit(tmp_path, record, drop)
    assert "results" in msg and "lighting_shift@2" in msg and "'baseline'" in msg


def test_ci_out_of_order_names_cell(tmp_path, record):
    def swap(d):
        d["results"][2].update(ci_low=0.9, ci_high=0.95)
    msg = _edit(tmp_path, record, swap)
    assert "results[2]" in msg and "ci_low" in msg


def test_decision_must_match_reasons_and_other_errors(tmp_path, record):
    msg = _edit(tmp_path, record, lambda d: d["decision"].update(accepted=False))
    assert "decision" in msg and "contradicts" in msg
    msg = _edit(tmp_path, record, lambda d: d.update(schema_version="jepalab.evidence/0"))
    assert "schema_version" in msg
    msg = _edit(tmp_path, record, lambda d: d.update(surprise=1))
    assert "surprise: unknown field" in msg
    msg = _edit(tmp_path, record, lambda d: d["perturbation_panel"].clear())
    assert "not in perturbation_panel" in msg
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(JepalabError, match="not valid JSON"):
        EvidenceRecord.load(tmp_path / "junk.json")


def test_save_revalidates_mutations(tmp_path, record):
    bad = record.model_copy(deep=True)
    bad.results[0].ci_high = -1.0  # models do not validate assignment; save must catch it
    with pytest.raises(JepalabError, match=r"results\[0\]"):
        bad.save(tmp_path / "e.json")
    assert not (tmp_path / "e.json").exists()
    with pytest.raises(JepalabError, match="rollout_horizon"):
        build_record(**{**record.model_dump(), "rollout_horizon": 0})


# ---------------------------------------------------------------- statistics


def test_wilson_known_values():
    # Reference values (Wilson score interval, z = 1.959964): 8/10 and 0/10, 10/10.
    p, lo, hi = wilson_ci(8, 10)
    assert (p, round(lo, 4), round(hi, 4)) == (0.8, 0.4902, 0.9433)
    assert wilson_ci(0, 10)[1:] == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_ci(10, 10)[1:] == pytest.approx((0.72247, 1.0), abs=1e-5)
    p, lo, hi = wilson_ci(np.array([5, 50]), np.array([10, 100]))  # vectorised, narrows with n
    assert np.allclose(p, 0.5) and hi[1] - lo[1] < hi[0] - lo[0]
    with pytest.raises(JepalabError):
        wilson_ci(11, 10)


def test_paired_bootstrap_identical_and_clear_difference():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 50).astype(float)
    diff, lo, hi = paired_bootstrap_diff(a, a.copy(), seed=1)
    assert diff == 0.0 and lo <= 0.0 <= hi
    cand = np.ones(50)
    cand[:10] = 0  # 0.8
    base = np.zeros(50)
    base[:15] = 1  # 0.3, overlapping the candidate's failures
    diff, lo, hi = paired_bootstrap_diff(cand, base, seed=1)
    assert diff == pytest.approx(0.5) and lo > 0.2 and hi < 0.8
    assert paired_bootstrap_diff(cand, base, seed=1) == (diff, lo, hi)  # deterministic
    assert paired_bootstrap_diff(cand, base, seed=2) != (diff, lo, hi)
    with pytest.raises(JepalabError, match="equal lengths"):
        paired_bootstrap_diff(cand, base[:-1])


def test_bootstrap_mean_ci_covers_mean():
    x = np.random.default_rng(3).normal(2.0, 1.0, 400)
    m, lo, hi = bootstrap_mean_ci(x, n_boot=1000, seed=0)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert lo < m < hi and (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
