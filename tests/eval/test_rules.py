"""Acceptance rules on constructed per-episode outcomes."""

from __future__ import annotations

import pytest
from evidence_helpers import episode_rows

from jepalab.errors import JepalabError
from jepalab.eval.rules import RULES, decide, describe, result_cells, rule_params

DEFAULT = "beats_baseline_clean_and_robust"
CLEAR = (32, 12)  # clean: 0.80 vs 0.30 over 40 paired episodes


def test_accepts_clear_and_robust():
    rows = episode_rows({("clean", 1): CLEAR, ("lighting_shift", 2): (24, 24),
                         ("distractors", 2): (20, 21)})
    d = decide(DEFAULT, rows)
    assert d.accepted and d.rule == DEFAULT
    assert len(d.reasons) == 3 and all(r.startswith("PASS ") for r in d.reasons)
    assert d.rule_params == {"delta": 0.05, "n_boot": 2000, "seed": 0, "level": 0.95,
                             "min_perturbations": 1}
    assert d.compared["clean.diff"] == pytest.approx(0.5)
    assert d.compared["clean.ci_low"] > 0.2
    assert d.compared["distractors@2.gap"] == pytest.approx(-0.025)
    assert "0.800" in d.reasons[0] or "+0.500" in d.reasons[0]


def test_rejects_when_clean_ci_touches_zero():
    # two episodes better out of 40: diff 0.05, but resamples without them are likely (> 2.5 %)
    rows = episode_rows({("clean", 1): (14, 12), ("lighting_shift", 2): (20, 20)})
    d = decide(DEFAULT, rows)
    assert not d.accepted
    assert d.reasons[0].startswith("FAIL clean") and d.reasons[1].startswith("PASS")
    assert d.compared["clean.diff"] == pytest.approx(0.05)
    assert d.compared["clean.ci_low"] <= 0 < d.compared["clean.ci_high"]


def test_rejects_one_degraded_perturbation():
    rows = episode_rows({("clean", 1): CLEAR, ("lighting_shift", 2): (12, 20),
                         ("distractors", 2): (30, 20)})
    d = decide(DEFAULT, rows)
    assert not d.accepted
    fails = [r for r in d.reasons if r.startswith("FAIL")]
    assert len(fails) == 1 and "lighting_shift@2" in fails[0] and "-0.200" in fails[0]
    assert d.compared["lighting_shift@2.gap"] == pytest.approx(-0.2)
    # a looser delta accepts the same data; the params are recorded
    d2 = decide(DEFAULT, rows, delta=0.25)
    assert d2.accepted and d2.rule_params["delta"] == 0.25


def test_gap_equal_to_delta_passes():
    rows = episode_rows({("clean", 1): CLEAR, ("fog", 1): (6, 8)})  # 6/40 - 8/40 < -0.05 in fp
    assert decide(DEFAULT, rows).accepted
    rows = episode_rows({("clean", 1): CLEAR, ("fog", 1): (5, 8)})  # 0.125 vs 0.20
    assert not decide(DEFAULT, rows).accepted


def test_no_perturbation_fails_robustness_unless_allowed():
    rows = episode_rows({("clean", 1): CLEAR})
    d = decide(DEFAULT, rows)
    assert not d.accepted and d.reasons[-1].startswith("FAIL robustness")
    assert decide(DEFAULT, rows, min_perturbations=0).accepted


def test_pairs_average_over_pretrain_seeds_and_deterministic():
    rows = episode_rows({("clean", 1): CLEAR, ("fog", 1): (20, 20)}, pretrain_seeds=(0, 1),
                        eval_seeds=(0, 3))
    d = decide(DEFAULT, rows)
    assert d.compared["clean.pairs"] == 80  # (eval_seed, episode) pairs, seeds averaged
    assert d.compared["fog@1.n_candidate"] == 160
    assert decide(DEFAULT, rows) == d
    # an episode missing from one arm is left out of the pairs and counted
    d2 = decide(DEFAULT, rows[1:])
    assert d2.compared["clean.pairs"] == 80 and d2.compared["clean.unpaired"] == 0
    clean_cand = [r for r in rows if r["condition"] == "clean" and r["arm"] == "candidate"]
    drop = {(r["eval_seed"], r["episode"]) for r in clean_cand[:1]}
    kept = [r for r in rows if not (r["condition"] == "clean" and r["arm"] == "candidate"
                                    and (r["eval_seed"], r["episode"]) in drop)]
    assert decide(DEFAULT, kept).compared["clean.unpaired"] == 1


def test_non_inferior_in_registry():
    assert set(RULES) >= {DEFAULT, "non_inferior"}
    same = episode_rows({("clean", 1): (20, 20), ("fog", 1): (20, 20)}, n=200)
    d = decide("non_inferior", same)
    assert d.accepted and len(d.reasons) == 2
    worse = episode_rows({("clean", 1): (20, 20), ("fog", 1): (100, 140)}, n=200)
    d = decide("non_inferior", worse)
    assert not d.accepted and d.reasons[1].startswith("FAIL fog@1")
    assert not decide(DEFAULT, same).accepted  # equal arms never "beat" the baseline


def test_describe_and_errors():
    text = describe(DEFAULT, {"delta": 0.1})
    assert "0.10" in text and "paired bootstrap" in text and "clean" in text
    assert "−0.05" in describe("non_inferior")
    assert rule_params("non_inferior")["delta"] == 0.05
    rows = episode_rows({("clean", 1): CLEAR})
    with pytest.raises(JepalabError, match="unknown rule 'nope'"):
        decide("nope", rows)
    with pytest.raises(JepalabError, match="rule.params.detla"):
        decide(DEFAULT, rows, detla=0.1)
    with pytest.raises(JepalabError, match="delta"):
        decide(DEFAULT, rows, delta=-1)
    with pytest.raises(JepalabError, match="no 'baseline' episodes"):
        decide(DEFAULT, [r for r in rows if r["arm"] == "candidate"])
    with pytest.raises(JepalabError, match="no 'clean' condition"):
        decide(DEFAULT, episode_rows({("fog", 1): CLEAR}))


def test_result_cells_wilson():
    cells = result_cells(episode_rows({("fog", 2): (5, 9), ("clean", 1): (8, 10)}, n=10))
    assert [(c.label, c.arm) for c in cells][:2] == [("clean", "candidate"), ("clean", "baseline")]
    c = cells[0]
    assert (c.value, c.n, round(c.ci_low, 4), round(c.ci_high, 4)) == (0.8, 10, 0.4902, 0.9433)
