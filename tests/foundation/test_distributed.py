"""Two gloo processes under torchrun train exactly like one process with the same global batch."""

import os
import subprocess
import sys

from jepalab.cli import main
from tiny import TINY, logged


def test_ddp_two_processes_match_single_process(tmp_path):
    args = [*TINY, "--steps=6", "--ckpt_every=3", "--quiet", "--monitor_every=3"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["pretrain", f"--out_dir={single}", *args]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "jepalab.cli", "pretrain", f"--out_dir={multi}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = logged(single), logged(multi)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), (a, b)
    # rank 0 alone wrote checkpoints; resuming the 2-process run in one process works
    assert sorted(p.name for p in (multi / "checkpoints").glob("step_*")) == [
        "step_0000003", "step_0000006"]
    more = [a if not a.startswith("--steps") else "--steps=8" for a in args]
    assert main(["pretrain", f"--out_dir={multi}", *more, "--resume"]) != 0  # config changed
