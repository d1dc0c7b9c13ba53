"""MLflow tracking in the run directory (real mlflow, SQLite backend) and the tracking-off path."""

from __future__ import annotations

import builtins
import logging

import pytest
from evidence_helpers import SHA_A, episode_rows, make_record

from jepalab.errors import JepalabError
from jepalab.eval.tracking import MAX_PARAM_VALUE, Tracker, flatten


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One real run (mlflow import + SQLite migration take seconds: do it once)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "evidence.json").write_text("{}")
    record = make_record(episode_rows({("clean", 1): (32, 12), ("fog", 2): (20, 20)}))
    with Tracker(run_dir, run_name="t", flush_every=50) as t:
        assert t.enabled, "tracking failed to start"
        t.log_params({"objective": {"name": "jepa", "ema": [0.996, 1.0]}, "long": "x" * 9000,
                      "bad key!": 1})
        t.log_params({"objective": {"name": "jepa"}})  # same value again: fine
        for step in range(120):  # 240 metrics: several batches, never one call each
            t.log_metrics({"loss": 1.0 / (step + 1), "val": {"acc": step / 120}}, step=step)
        t.set_tag("checkpoint_sha256", SHA_A)
        t.log_artifact(run_dir / "evidence.json")
        t.log_evidence(record)
        run_id = t.run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    return run_dir, client, client.get_run(run_id)


def test_params_metrics_tags_read_back(tracked):
    run_dir, client, run = tracked
    p = run.data.params
    assert p["objective.name"] == "jepa" and p["objective.ema"] == "[0.996, 1.0]"
    assert len(p["long"]) == MAX_PARAM_VALUE and p["long"].endswith("...")
    assert p["bad key_"] == "1"
    assert p["rule"] == "beats_baseline_clean_and_robust"
    assert run.data.tags["checkpoint_sha256"] == SHA_A
    assert run.data.tags["accepted"] == "True"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert len(history) == 120 and sorted(m.step for m in history) == list(range(120))
    assert run.data.metrics["val.acc"] == pytest.approx(119 / 120)
    assert run.data.metrics["result.clean.candidate"] == pytest.approx(0.8)
    assert run.data.metrics["rule.clean.diff"] == pytest.approx(0.5)
    assert run.info.status == "FINISHED"


def test_backend_and_artifacts_stay_in_run_dir(tracked):
    run_dir, client, run = tracked
    assert (run_dir / "mlflow.db").is_file()
    assert run.info.artifact_uri.startswith((run_dir / "mlartifacts").as_uri())
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["evidence.json"]
    assert any((run_dir / "mlartifacts").rglob("evidence.json"))


def test_mlflow_unavailable_warns_once(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with caplog.at_level(logging.WARNING, logger="jepalab.tracking"), Tracker(tmp_path) as t:
        assert not t.enabled
        t.log_params({"a": 1})
        t.log_metrics({"loss": 0.5}, step=1)
        t.set_tag("k", "v")
        (tmp_path / "a.txt").write_text("a")
        t.log_artifact(tmp_path / "a.txt")
        t.flush()
        with pytest.raises(JepalabError, match="artifact not found"):
            t.log_artifact(tmp_path / "missing")
    msgs = [r.getMessage() for r in caplog.records if r.name == "jepalab.tracking"]
    assert len(msgs) == 1 and "tracking is off" in msgs[0] and "\n" not in msgs[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_backend_failure_warns_once_and_run_goes_on(tmp_path, caplog):
    pytest.importorskip("mlflow")
    with caplog.at_level(logging.WARNING, logger="jepalab.tracking"):
        with Tracker(tmp_path, uri="nosuchscheme://nowhere") as t:
            assert not t.enabled
            t.log_metrics({"x": 1.0})
        with pytest.raises(JepalabError, match="expected a number"):
            t.log_metrics({"x": "high"})  # a caller bug is not hidden, tracking on or off
    msgs = [r.getMessage() for r in caplog.records if r.name == "jepalab.tracking"]
    assert len(msgs) == 1 and "tracking is off" in msgs[0]


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_training_run_is_tracked_with_its_checkpoint_sha(tmp_path, monkeypatch):
    """`jepalab pretrain` logs the resolved config, the losses and the checkpoint's sha256."""
    from mlflow.tracking import MlflowClient

    from jepalab.cli import main
    from jepalab.train.checkpoint import checkpoint_sha
    from tiny import TINY

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "pre"
    assert main(["pretrain", "--quiet", f"--out_dir={out}", "--steps=3", "--ckpt_every=3",
                 *TINY]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("pretrain").experiment_id])
    sha = checkpoint_sha(out / "checkpoints" / "step_0000003")
    assert run.data.tags["checkpoint_sha256"] == sha
    assert run.data.params["model.preset"] == "micro" and "loss" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
