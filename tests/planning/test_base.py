"""PlannerConfig validation, goal energies and the warm-start shift."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from jepalab.errors import JepalabError
from jepalab.planning import PlannerConfig, PlanningError, goal_energy, shift_plan


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "adam"),
        ("horizon", 0),
        ("horizon", 2.5),
        ("samples", 1),
        ("iterations", 0),
        ("elites", 0),
        ("elites", 300),  # > samples
        ("temperature", 0.0),
        ("init_std", -1.0),
        ("min_std", 2.0),  # > init_std
        ("momentum", 1.0),
        ("action_low", [0.0, 0.0, 0.0]),  # 3 values for action_dim 2
        ("action_low", float("nan")),
        ("action_high", -2.0),  # below action_low
        ("action_dim", 0),
        ("warm_start", "yes"),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(PlanningError, match=rf"PlannerConfig\.{field}:"):
        PlannerConfig(**{field: value})


def test_config_error_types_and_defaults():
    assert issubclass(PlanningError, JepalabError) and issubclass(PlanningError, ValueError)
    with pytest.raises(TypeError):  # unknown fields: the dataclass's own error
        PlannerConfig(horizn=3)
    cfg = PlannerConfig(samples=300, action_low=[-1, -0.5], action_high=[1, 0.5])
    assert cfg.elites == 30  # None -> samples // 10
    assert cfg.action_low == (-1.0, -0.5)
    lo, hi = cfg.bounds()
    assert lo.tolist() == [-1.0, -0.5] and hi.tolist() == [1.0, 0.5]
    assert PlannerConfig(samples=8).elites == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.horizon = 3  # type: ignore[misc]
    assert PlannerConfig(**cfg.to_dict()) == cfg


def test_goal_energy_metrics_by_hand():
    goal = torch.tensor([1.0, 0.0])
    lat = torch.tensor([[[0.0, 0.0], [1.0, 2.0]],     # S=2, H=2, D=2
                        [[1.0, 0.0], [-1.0, 0.0]]])
    assert goal_energy(goal)(lat).tolist() == [1.0, 1.0]  # final step, mean |z-g|
    assert goal_energy(goal, "l2")(lat).tolist() == [2.0, 2.0]
    assert goal_energy(goal, "l1", "all")(lat).tolist() == [0.75, 0.5]
    w = torch.tensor([2.0, 0.0])
    assert goal_energy(goal, "l1", w)(lat).tolist() == [1.0, 0.0]
    cos = goal_energy(goal, "cosine")(lat)
    assert torch.allclose(cos, torch.tensor([1 - 1 / 5**0.5, 2.0]))


def test_goal_energy_tokens_and_batch_dim():
    g = torch.Generator().manual_seed(0)
    goal = torch.randn(1, 3, 4, generator=g)  # [1, N, D] as an encoder returns it
    lat = torch.randn(5, 2, 3, 4, generator=g)  # [S, H, N, D]
    e = goal_energy(goal)(lat)
    assert e.shape == (5,)
    assert torch.allclose(e, (lat[:, -1] - goal).abs().mean((1, 2)))
    lat[0, -1] = goal[0]
    assert goal_energy(goal, "cosine")(lat)[0].abs() < 1e-6
    with pytest.raises(PlanningError, match="does not match"):
        goal_energy(torch.randn(4))(lat)


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [({"metric": "l3"}, "metric"), ({"weights": "last"}, "weights"),
     ({"weights": torch.tensor([1.0, -1.0])}, "weights")],
)
def test_goal_energy_bad_spec(kwargs, where):
    with pytest.raises(PlanningError, match=f"goal_energy.{where}"):
        goal_energy(torch.zeros(2), **kwargs)


def test_goal_energy_weight_length_checked_at_call():
    cost = goal_energy(torch.zeros(2), weights=torch.ones(3))
    with pytest.raises(PlanningError, match="horizon is 2"):
        cost(torch.zeros(4, 2, 2))


def test_shift_plan():
    prev = torch.arange(8.0).reshape(4, 2)  # [[0,1],[2,3],[4,5],[6,7]]
    assert shift_plan(prev).tolist() == [[2, 3], [4, 5], [6, 7], [6, 7]]
    assert shift_plan(prev, 2, fill="zero").tolist() == [[4, 5], [6, 7], [0, 0], [0, 0]]
    assert shift_plan(prev, 4).tolist() == [[6, 7]] * 4
    assert prev[0].tolist() == [0, 1]  # input untouched
    with pytest.raises(PlanningError, match="steps"):
        shift_plan(prev, 5)
    with pytest.raises(PlanningError, match="fill"):
        shift_plan(prev, fill="mean")
