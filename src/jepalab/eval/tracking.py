"""Experiment tracking with MLflow, kept inside the run directory and never fatal.

    with Tracker(run_dir, run_name="two-rooms") as t:
        t.log_params({"objective": {"name": "jepa", "ema": [0.996, 1.0]}})  # objective.name, ...
        t.log_metrics({"loss": 0.3}, step=10)        # buffered, sent with log_batch
        t.set_tag("checkpoint_sha256", sha)
        t.log_artifact(run_dir / "evidence.json")

By default the backend is `sqlite:///RUN_DIR/mlflow.db` and artifacts go to RUN_DIR/mlartifacts
(never ./mlruns); pass `uri` (or set MLFLOW_TRACKING_URI) for any other tracking server (its
experiments keep their own artifact location). Metrics are buffered and sent in batches
(`flush_every` entries, and at close): one `log_metric` call costs ~3 ms on the SQLite store,
a batch of 1,000 about the same.

Tracking is an add-on: when mlflow cannot be imported or the backend fails (at start or any
later call), one warning line ("jepalab: tracking is off: ...") goes to the `jepalab.tracking`
logger, the tracker turns into a no-op and the run carries on. No exception from the backend
leaves this module. Invalid input from the caller (a metric that is not a number) still raises.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jepalab.errors import JepalabError

log = logging.getLogger("jepalab.tracking")

# MLflow's limits (mlflow.utils.validation); used when mlflow does not say.
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and other values are left as leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _key(k: str) -> str:
    return _BAD_KEY_CHARS.sub("_", k)[:MAX_KEY]


def _text(v: Any, limit: int) -> str:
    if isinstance(v, str):
        s = v
    elif isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, default=str)
    else:
        s = str(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


class Tracker:
    """An MLflow run as a context manager (or call `start()` / `close()`); see module doc."""

    def __init__(self, run_dir: str | Path, uri: str | None = None, experiment: str = "jepalab",
                 run_name: str | None = None, flush_every: int = 500) -> None:
        self.run_dir = Path(run_dir)
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.uri = uri or f"sqlite:///{self.run_dir.resolve() / 'mlflow.db'}"
        self._default_backend = uri is None
        self.experiment = experiment
        self.run_name = run_name
        self.flush_every = max(1, int(flush_every))
        self.run_id: str | None = None
        self.enabled = False
        self._warned = False
        self._client: Any = None
        self._entities: Any = None
        self._metrics: list[Any] = []
        self._params: dict[str, str] = {}

    # ------------------------------------------------------------------ lifetime

    def start(self) -> Tracker:
        try:
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.tracking import MlflowClient
        except Exception as e:  # ImportError, or a broken install failing at import time
            self._off(f"mlflow is not importable ({type(e).__name__}: {e})")
            return self
        quiet = logging.getLogger("mlflow.store.db.utils")  # "Creating initial ... tables"
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=self.uri)
            exp = client.get_experiment_by_name(self.experiment)
            if exp is not None:
                exp_id = exp.experiment_id
            else:
                where = ((self.run_dir.resolve() / "mlartifacts").as_uri()
                         if self._default_backend else None)
                exp_id = client.create_experiment(self.experiment, artifact_location=where)
            run = client.create_run(exp_id, run_name=self.run_name)
        except Exception as e:  # any backend failure: tracking off, the run goes on
            self._off(f"backend {self.uri} failed ({type(e).__name__}: {_first_line(e)})")
            return self
        finally:
            quiet.setLevel(level)
        self._client, self._entities = client, (Metric, Param, RunTag)
        self.run_id = run.info.run_id
        self.enabled = True
        return self

    def close(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        self.flush()
        self._call(self._client.set_terminated, self.run_id, status)
        self.enabled = False

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close("FAILED" if exc_type is not None else "FINISHED")

    # ------------------------------------------------------------------ logging

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nested dicts become dotted keys; values are stringified and truncated to MLflow's
        limit. Re-logging a key with the same value is a no-op; with another value it is
        skipped with a warning (MLflow params are immutable)."""
        if not self.enabled:
            return
        _, Param, _ = self._entities
        new = []
        for k, v in flatten(params).items():
            key, val = _key(k), _text(v, MAX_PARAM_VALUE)
            if key in self._params:
                if self._params[key] != val:
                    log.warning("jepalab: param %r already logged as %r; %r not logged",
                                key, self._params[key][:60], val[:60])
                continue
            self._params[key] = val
            new.append(Param(key, val))
        for i in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
            self._call(self._client.log_batch, self.run_id,
                       params=new[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Buffer numeric metrics (nested dicts -> dotted keys) at `step`."""
        flat = flatten(metrics)
        values = {}
        for k, v in flat.items():
            try:
                values[_key(k)] = float(v)
            except (TypeError, ValueError):
                raise JepalabError(f"metric {k!r}: expected a number, got {v!r}") from None
        if not self.enabled:
            return
        Metric = self._entities[0]
        ts = int(time.time() * 1000)
        self._metrics.extend(Metric(k, v, ts, int(step)) for k, v in values.items())
        if len(self._metrics) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics (in batches of MLflow's maximum size)."""
        if not self.enabled:
            self._metrics.clear()
            return
        pending, self._metrics = self._metrics, []
        for i in range(0, len(pending), MAX_METRICS_PER_BATCH):
            if not self._call(self._client.log_batch, self.run_id,
                              metrics=pending[i:i + MAX_METRICS_PER_BATCH]):
                return

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        RunTag = self._entities[2]
        items = [RunTag(_key(k), _text(v, MAX_TAG_VALUE)) for k, v in flatten(tags).items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._call(self._client.log_batch, self.run_id,
                       tags=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a directory's files) into the run's artifacts."""
        p = Path(path)
        if not p.exists():  # a caller bug: raised whether tracking is on or off
            raise JepalabError(f"{p}: artifact not found")
        if not self.enabled:
            return
        fn = self._client.log_artifacts if p.is_dir() else self._client.log_artifact
        self._call(fn, self.run_id, str(p), artifact_path)

    def log_evidence(self, record: Any) -> None:
        """An evidence record as params (the contract), tags (decision, hashes) and metrics
        (each result cell and every number the rule compared)."""
        self.log_params({
            "objective": record.objective.model_dump(), "masking_policy": record.masking_policy,
            "downstream_task": record.downstream_task, "controller": record.controller.kind,
            "controller_params": record.controller.params, "metric": record.metric,
            "rollout_horizon": record.rollout_horizon,
            "intervention_budget": record.intervention_budget.model_dump(),
            "baseline": record.baseline.name, "rule": record.decision.rule,
            "rule_params": record.decision.rule_params,
            "perturbations": [f"{p.name}@{p.severity}" for p in record.perturbation_panel],
            "pretrain_seeds": record.seed_panel.pretrain_seeds,
            "eval_seeds": record.seed_panel.eval_seeds})
        self.set_tags({"accepted": record.decision.accepted,
                       "checkpoint_sha256": record.encoder_checkpoint.sha256,
                       "baseline_sha256": record.baseline.encoder_checkpoint.sha256,
                       "git_commit": record.git.commit or "unknown",
                       "git_dirty": record.git.dirty})
        cells = {f"result.{c.label}.{c.arm}": c.value for c in record.results}
        compared = {f"rule.{k}": v for k, v in record.decision.compared.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        self.log_metrics({**cells, **compared})

    # ------------------------------------------------------------------ failure

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            fn(*args, **kwargs)
            return True
        except Exception as e:  # the backend broke mid-run: stop tracking, keep running
            self._off(f"backend {self.uri} failed in {getattr(fn, '__name__', fn)} "
                      f"({type(e).__name__}: {_first_line(e)})")
            return False

    def _off(self, reason: str) -> None:
        self.enabled = False
        self._metrics.clear()
        if not self._warned:
            self._warned = True
            log.warning("jepalab: tracking is off: %s", reason)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines() or [""])[0][:200]


def tracked_training(cfg: Any, train: Any) -> Path:
    """Run `train(tracker) -> checkpoint dir` inside a tracking run in cfg.out_dir: the resolved
    config as params, losses as metrics (the trainer logs them), the final checkpoint's sha256
    as a tag. Returns the checkpoint dir."""
    from jepalab.train.checkpoint import checkpoint_sha

    with Tracker(cfg.out_dir, experiment=cfg.kind, run_name=Path(cfg.out_dir).name) as tr:
        tr.log_params(cfg.model_dump(mode="json"))
        path = train(tr)
        tr.set_tag("checkpoint_sha256", checkpoint_sha(path))
    return Path(path)
