from __future__ import annotations

import json

import numpy as np
import pytest

from jepalab.envs import SCENES, make, supported_perturbations
from jepalab.envs.perturb import (
    PERTURBATIONS,
    Perturbation,
    PerturbationError,
    parse_perturbation,
)


def test_parse_compose_and_record() -> None:
    p = parse_perturbation("lighting_shift+object_reorder", severity=2, seed=7)
    assert p.names == ["lighting_shift", "object_reorder"]
    rec = p.to_dict()
    assert json.loads(json.dumps(rec)) == rec
    assert rec[0]["name"] == "lighting_shift" and rec[0]["seed"] == 7
    assert rec[0]["params"]["severity"] == 2 and rec[0]["params"]["tilt_deg"] > 0
    assert Perturbation.from_dict(rec) == p


def test_severity_zero_is_recorded_but_inactive() -> None:
    p = parse_perturbation("occlusion", severity=0, seed=1)
    assert p.names == ["occlusion"]
    assert p.get("occlusion") is None
    assert all(v == 0 for k, v in p.to_dict()[0]["params"].items() if k != "severity")


def test_severity_increases_magnitude() -> None:
    stds = [parse_perturbation("action_noise", s).components[0].params["std"] for s in (1, 2, 3)]
    assert stds[0] < stds[1] < stds[2]


@pytest.mark.parametrize(
    ("spec", "severity", "match"),
    [
        ("lighting", 1, "unknown perturbation 'lighting'"),
        ("occlusion+occlusion", 1, "given twice"),
        ("occlusion", 4, "severity"),
        ("occlusion", True, "severity"),
    ],
)
def test_parse_errors(spec: str, severity: int, match: str) -> None:
    with pytest.raises(PerturbationError, match=match):
        parse_perturbation(spec, severity)


def test_component_rng_is_seeded_and_composition_stable() -> None:
    alone = parse_perturbation("lighting_shift", 2, seed=3).components[0]
    composed = parse_perturbation("occlusion+lighting_shift", 2, seed=3).components[1]
    assert alone.rng(11).uniform() == composed.rng(11).uniform()
    assert alone.rng(11).uniform() != alone.rng(12).uniform()
    other_seed = parse_perturbation("lighting_shift", 2, seed=4).components[0]
    assert alone.rng(11).uniform() != other_seed.rng(11).uniform()


def test_unsupported_perturbation_names_scene_and_lists_supported() -> None:
    with pytest.raises(PerturbationError) as err:
        make("two-rooms", perturb="lighting_shift+object_reorder")
    msg = str(err.value)
    assert "two-rooms" in msg and "object_reorder" in msg and "color_shift" in msg


def test_unknown_scene_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="two-rooms.*tabletop-push.*pusht"):
        make("three-rooms")


def test_scene_table() -> None:
    assert set(SCENES) >= {"two-rooms", "tabletop-push", "tabletop-reach", "pusht"}
    for name, spec in SCENES.items():
        assert set(spec.supported_perturbations) <= set(PERTURBATIONS)
        assert supported_perturbations(name) == spec.supported_perturbations
    assert set(supported_perturbations("tabletop-push")) == set(PERTURBATIONS)
    assert "distractors" not in supported_perturbations("gym:Pendulum-v1")


def test_action_noise_is_clipped_and_seeded() -> None:
    from jepalab.envs.perturb import ActionNoise

    a = np.array([0.99, -0.99], np.float32)
    n1 = ActionNoise(0.5, np.random.default_rng(0))
    n2 = ActionNoise(0.5, np.random.default_rng(0))
    out = [n1(a) for _ in range(20)]
    assert all(np.all(np.abs(o) <= 1.0) for o in out)
    assert np.array_equal(out[0], n2(a)) and not np.array_equal(out[0], out[1])


def test_scene_table_matches_scene_classes() -> None:
    from jepalab.envs import _scene_class

    for name, spec in SCENES.items():
        assert _scene_class(name).supported_perturbations == spec.supported_perturbations
