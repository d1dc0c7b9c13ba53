"""Baselines under two gloo processes train exactly like one process with the same global batch:
views, random masks and global-batch statistics (InfoNCE negatives, VICReg variance/covariance,
projector BatchNorm) do not depend on the world size."""

import json
import os
import subprocess
import sys

import pytest

from jepalab.cli import main
from tiny import TINY


def _losses(run):
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["mae", "contrastive", "vicreg"])
def test_two_processes_match_one(tmp_path, name):
    args = [*TINY, "--steps=4", "--ckpt_every=4", "--quiet", "--monitor_every=2",
            f"--objective.name={name}", "--mask.kind=none"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["pretrain", f"--out_dir={single}", *args]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "jepalab.cli", "pretrain", f"--out_dir={multi}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(single), _losses(multi)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), (a, b)
