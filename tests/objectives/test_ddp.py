"""Baselines under two gloo processes train exactly like one process with the same global batch:
views, random masks and global-batch statistics (InfoNCE negatives, VICReg variance/covariance,
SIGReg statistics, projector BatchNorm) do not depend on the world size."""

import os
import subprocess
import sys
from pathlib import Path

from jepalab.config import PretrainConfig, load
from jepalab.train.loop import pretrain
from tiny import TINY, logged

NAMES = ["mae", "contrastive", "vicreg", "sigreg"]
ARGS = [*TINY, "--steps=4", "--ckpt_every=4", "--monitor_every=2", "--mask.kind=none"]


def test_two_processes_match_one(tmp_path):
    for name in NAMES:
        cfg = load(PretrainConfig, None,
                   [*ARGS, f"--objective.name={name}", f"--out_dir={tmp_path / 'single' / name}"])
        pretrain(cfg, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(tmp_path / "multi"), *NAMES, "--", *ARGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in NAMES:
        a, b = logged(tmp_path / "single" / name), logged(tmp_path / "multi" / name)
        assert len(a) == len(b) == 4, name
        for x, y in zip(a, b):
            assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), (name, a, b)
