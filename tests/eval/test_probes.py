"""Probes, rollout metrics, value heads and label efficiency on synthetic latents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jepalab.errors import JepalabError
from jepalab.eval.downstream import (
    BudgetPoint,
    ValueHead,
    area_under_curve,
    fit_value_head,
    label_efficiency,
    mean_ci,
    rankdata,
    spearman,
    t_quantile,
    value_metrics,
)
from jepalab.eval.probes import (
    Probe,
    fit_linear_probe,
    fit_mlp_probe,
    probe_error,
    probed_rollout_errors,
    regression_metrics,
    rollout_errors,
    split_rows,
)
from jepalab.train.checkpoint import save_checkpoint

NOISE = 0.01


def linear_data(n: int = 800, d: int = 6, s: int = 3, seed: int = 0, noise: float = NOISE):
    rng = np.random.default_rng(seed)
    # latents with unequal scales and offsets, so standardisation matters
    z = rng.normal(size=(n, d)) * rng.uniform(0.2, 5.0, size=d) + rng.normal(size=d) * 3
    w, b = rng.normal(size=(d, s)), rng.normal(size=s)
    y = z @ w + b + noise * rng.normal(size=(n, s))
    return z, y, w, b


def test_linear_probe_recovers_the_map_and_error_is_at_noise_level():
    z, y, w, b = linear_data()
    probe = fit_linear_probe(z[:600], y[:600], ridge=1e-6, names=["x", "y", "yaw"])
    w_hat, b_hat = probe.linear_map()
    np.testing.assert_allclose(w_hat, w, atol=5e-3)
    np.testing.assert_allclose(b_hat, b, atol=2e-2)
    err = probe_error(probe, z[600:], y[600:])
    assert set(err["rmse"]) == {"x", "y", "yaw"}
    assert 0.7 * NOISE < err["rmse_mean"] < 1.5 * NOISE
    assert 0.5 * NOISE < err["mae_mean"] < err["rmse_mean"]
    assert err["r2_mean"] > 0.999 and err["n"] == 200


def test_ridge_shrinks_and_one_dim_targets_work():
    z, y, _, _ = linear_data(n=200, s=1)
    small = fit_linear_probe(z, y[:, 0], ridge=1e-6)
    big = fit_linear_probe(z, y[:, 0], ridge=10.0)
    assert small.out_dim == 1 and small.predict(z).shape == (200, 1)
    assert np.linalg.norm(big.tensors["weight"]) < 0.2 * np.linalg.norm(small.tensors["weight"])
    # constant latent dims are centred, never divided by zero
    zc = np.concatenate([z, np.ones((200, 1))], axis=1)
    assert np.isfinite(fit_linear_probe(zc, y).predict(zc)).all()


def test_mlp_probe_beats_linear_on_a_nonlinear_map():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1500, 8))
    w = rng.normal(size=(8, 2))
    y = np.sin(1.5 * z @ (w / np.linalg.norm(w, axis=0)))
    tr, te = slice(0, 1200), slice(1200, None)
    threads = torch.get_num_threads()
    lin = probe_error(fit_linear_probe(z[tr], y[tr]), z[te], y[te])["rmse_mean"]
    mlp_probe = fit_mlp_probe(z[tr], y[tr], hidden=64, steps=600, seed=0)
    mlp = probe_error(mlp_probe, z[te], y[te])["rmse_mean"]
    assert mlp < 0.4 * lin, (mlp, lin)
    assert mlp_probe.fit["val_rows"] > 0 and mlp_probe.fit["best_val_mse_std"] is not None
    assert torch.get_num_threads() == threads  # the one-thread training setting is undone


def test_mlp_probe_is_deterministic_per_seed():
    z, y, _, _ = linear_data(n=200)
    kw = {"hidden": 32, "steps": 60, "eval_every": 20}
    a = fit_mlp_probe(z, y, seed=3, **kw).predict(z)
    b = fit_mlp_probe(z, y, seed=3, **kw).predict(z)
    c = fit_mlp_probe(z, y, seed=4, **kw).predict(z)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_held_out_split_keeps_episodes_whole():
    groups = np.repeat(np.arange(20), 7)
    tr, va = split_rows(len(groups), 0.2, np.random.default_rng(0), groups)
    assert len(np.unique(groups[va])) == 4
    assert not set(groups[tr]) & set(groups[va])
    assert len(tr) + len(va) == len(groups)
    tr, va = split_rows(3, 0.15, np.random.default_rng(0))  # too small to hold any out
    assert len(va) == 0 and len(tr) == 3


def test_probe_error_per_variable_and_r2():
    y = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    pred = y + np.array([[0.1, 0.0], [-0.1, 0.0], [0.3, 0.2], [-0.3, 0.2]])
    probe = fit_linear_probe(y, y)  # only used for its default names
    m = regression_metrics(pred, y, ["x", "c"])
    assert m["rmse"]["x"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0.09 + 0.09) / 4))
    assert m["mae"]["x"] == pytest.approx(0.2) and m["mae"]["c"] == pytest.approx(0.1)
    assert m["r2"]["x"] == pytest.approx(1 - 0.2 / 5.0)
    assert math.isnan(m["r2"]["c"]) and m["r2_mean"] == pytest.approx(m["r2"]["x"])
    assert set(probe_error(probe, y, y)["rmse"]) == {"y0", "y1"}
    with pytest.raises(JepalabError, match="names"):
        regression_metrics(pred, y, ["only_one"])


def test_bad_inputs_name_the_problem():
    z, y, _, _ = linear_data(n=50)
    with pytest.raises(JepalabError, match="rows"):
        fit_linear_probe(z, y[:40])
    bad = z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(JepalabError, match="NaN"):
        fit_linear_probe(bad, y)
    probe = fit_linear_probe(z, y)
    with pytest.raises(JepalabError, match="expects 6 dims"):
        probe.predict(z[:, :4])


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_probe_save_load_round_trip(tmp_path, kind):
    z, y, _, _ = linear_data(n=120)
    probe = (fit_linear_probe(z, y, names=["a", "b", "c"]) if kind == "linear"
             else fit_mlp_probe(z, y, hidden=16, steps=30, names=["a", "b", "c"]))
    path = probe.save(tmp_path / "probe")
    assert (path / "probe.safetensors").is_file() and (path / "manifest.json").is_file()
    loaded = Probe.load(path)
    assert loaded.kind == kind and loaded.names == ["a", "b", "c"] and loaded.config
    np.testing.assert_array_equal(loaded.predict(z), probe.predict(z))


def test_corrupt_or_foreign_probe_is_refused(tmp_path):
    z, y, _, _ = linear_data(n=60)
    path = fit_linear_probe(z, y).save(tmp_path / "probe")
    f = path / "probe.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(JepalabError, match="sha256"):
        Probe.load(path)
    other = save_checkpoint(tmp_path / "enc", {"model": {"w": torch.zeros(2)}},
                            {"kind": "pretrain"})
    with pytest.raises(JepalabError, match="not a probe"):
        Probe.load(other)


def test_rollout_errors_grow_as_constructed():
    rng = np.random.default_rng(0)
    n, h, d = 5, 4, 8
    target = rng.normal(size=(n, h, d))
    signs = rng.choice([-1.0, 1.0], size=(n, h, d))
    step_err = 0.1 * np.arange(1, h + 1)
    pred = target + signs * step_err[None, :, None]
    np.testing.assert_allclose(rollout_errors(pred, target, "l1"), step_err)
    np.testing.assert_allclose(rollout_errors(pred, target, "l2"), step_err**2)
    np.testing.assert_allclose(rollout_errors(torch.from_numpy(pred), target, "dist"),
                               step_err * math.sqrt(d))
    with pytest.raises(JepalabError, match="must be equal"):
        rollout_errors(pred, target[:, :3])
    with pytest.raises(JepalabError, match="metric"):
        rollout_errors(pred, target, "l3")


def test_probed_rollout_errors_decode_predictions_to_state_error():
    z, y, w, _ = linear_data(n=300, noise=0.0)
    probe = fit_linear_probe(z, y, ridge=0.0)
    n, h = 10, 3
    z_true = z[: n * h].reshape(n, h, -1)
    s_true = y[: n * h].reshape(n, h, -1)
    np.testing.assert_allclose(probed_rollout_errors(probe, z_true, s_true), 0.0, atol=1e-8)
    delta = np.random.default_rng(5).normal(size=z.shape[1])
    pred = z_true + np.arange(1, h + 1)[None, :, None] * delta
    expect = np.arange(1, h + 1) * np.sqrt(((delta @ w) ** 2).mean())  # same error every row
    np.testing.assert_allclose(probed_rollout_errors(probe, pred, s_true), expect, rtol=1e-6)
    dist = probed_rollout_errors(probe, pred, s_true, metric="dist", dims=[0, 1])
    np.testing.assert_allclose(dist, np.arange(1, h + 1) * np.linalg.norm((delta @ w)[:2]),
                               rtol=1e-6)


def test_rank_statistics_and_t_quantiles():
    np.testing.assert_array_equal(rankdata([3.0, 1.0, 2.0, 2.0]), [4.0, 1.0, 2.5, 2.5])
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # Student-t table values
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(4.303 / math.sqrt(3), abs=1e-3) and lo < m
    assert math.isnan(mean_ci([1.0])[1])


def _value_data(n: int, d: int = 16, seed: int = 0):
    """Positions and goals in the unit square seen through a fixed random non-linear encoder;
    the value is the number of 0.05-long steps from position to goal."""
    enc = np.random.default_rng(99).normal(size=(2, d))
    rng = np.random.default_rng(seed)
    pos, goal = rng.uniform(size=(n, 2)), rng.uniform(size=(n, 2))
    steps = np.ceil(np.linalg.norm(pos - goal, axis=1) / 0.05)
    return np.tanh(pos @ enc), np.tanh(goal @ enc), steps


def test_value_head_learns_a_monotone_relation(tmp_path):
    z, zg, steps = _value_data(1200, seed=0)
    zt, zgt, steps_t = _value_data(300, seed=1)
    head = fit_value_head(z, zg, steps, head="mlp", seed=0, hidden=64, steps=800)
    m = head.evaluate(zt, zgt, steps_t)
    baseline_mae = np.abs(steps_t - steps.mean()).mean()
    assert m["spearman"] > 0.9, m
    assert m["mae"] < 0.4 * baseline_mae, (m, baseline_mae)
    loaded = ValueHead.load(head.save(tmp_path / "value"))
    np.testing.assert_array_equal(loaded.predict(zt, zgt), head.predict(zt, zgt))
    assert value_metrics([1.0, 2.0], [1.0, 4.0])["mae"] == pytest.approx(1.0)
    lin = fit_value_head(z, zg[0], steps, head="linear")  # one goal for all rows broadcasts
    assert lin.predict(zt, zgt[0]).shape == (300,)


def test_label_efficiency_error_falls_with_budget_and_cis_are_ordered():
    z, y, _, _ = linear_data(n=1000, d=12, noise=0.1, seed=2)
    groups = np.repeat(np.arange(80), 10)  # 80 training episodes of 10 frames
    pts = label_efficiency(z[:800], y[:800], z[800:], y[800:], budgets=(1, 2, 5, 20, 500),
                           seeds=(0, 1, 2), head="linear", groups=groups,
                           head_kwargs={"ridge": 1e-3})
    assert [p.budget for p in pts] == [1, 2, 5, 20]  # 500 > 80 episodes: dropped
    errs = [p.mean_error for p in pts]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.15  # near the 0.1 noise floor with 200 rows
    for p in pts:
        assert p.ci_low <= p.mean_error <= p.ci_high and np.isfinite([p.ci_low, p.ci_high]).all()
    # a worse representation (noise added to latents) has a larger area under the curve
    noisy = z + np.random.default_rng(0).normal(size=z.shape) * 3.0
    pts_noisy = label_efficiency(noisy[:800], y[:800], noisy[800:], y[800:],
                                 budgets=(1, 2, 5, 20), groups=groups)
    assert area_under_curve(pts_noisy) > area_under_curve(pts)


def test_label_efficiency_mlp_head_and_bad_arguments():
    z, y, _, _ = linear_data(n=300, d=4, noise=0.05)
    pts = label_efficiency(z[:200], y[:200], z[200:], y[200:], budgets=(20, 200), seeds=(0, 1),
                           head="mlp", head_kwargs={"hidden": 32, "steps": 300}, metric="mae")
    assert len(pts) == 2 and pts[1].mean_error < pts[0].mean_error
    with pytest.raises(JepalabError, match="head"):
        label_efficiency(z, y, z, y, head="forest")
    with pytest.raises(JepalabError, match="none in"):
        label_efficiency(z, y, z, y, budgets=(10_000,))


def test_area_under_curve_is_the_mean_error_over_log_budget():
    assert area_under_curve([BudgetPoint(10, 1.0, 0.9, 1.1), (100, 0.0, 0, 0)]) == pytest.approx(
        0.5)
    assert area_under_curve([(10, 2.0), (100, 2.0), (1000, 2.0)]) == pytest.approx(2.0)
    # log axis: 10->100 and 100->1000 weigh the same although 900 > 90 budget units
    assert area_under_curve([(10, 1.0), (100, 1.0), (1000, 0.0)]) == pytest.approx(0.75)
    assert area_under_curve([(50, 0.3)]) == 0.3
    with pytest.raises(JepalabError):
        area_under_curve([(10, 1.0), (10, 2.0)])
