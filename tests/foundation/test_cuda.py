"""The GPU path, skipped without CUDA: fp32 training on the GPU follows the CPU run step for step,
bf16 autocast and torch.compile train, a GPU run resumes from its checkpoint, a world model (with
its learned cost-to-go) trains on the GPU and loads on the CPU, and the planners find a known
optimum drawing their samples on the GPU."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from planning_helpers import linear_system

from jepalab.config import PretrainConfig, WorldModelConfig, load
from jepalab.data.collect import collect
from jepalab.models.value import QUASIMETRIC
from jepalab.planning import PlannerConfig, goal_energy, plan
from jepalab.train.loop import pretrain
from jepalab.train.worldmodel import load_world_model, train_worldmodel
from tiny import TINY, logged

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 on the GPU then differs from the CPU only in summation order."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _pretrain(out: Path, *extra: str, steps: int = 6, resume: bool = False) -> list[float]:
    cfg = load(PretrainConfig, None, [*TINY, f"--steps={steps}", "--ckpt_every=3",
                                      f"--out_dir={out}", *extra])
    pretrain(cfg, resume=resume, progress=False)
    return logged(out)


def _close(a: list[float], b: list[float], rel: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * max(1.0, abs(x)) for x, y in zip(a, b))


def test_fp32_on_the_gpu_follows_the_cpu(tmp_path):
    cpu = _pretrain(tmp_path / "cpu", "--device=cpu")
    gpu = _pretrain(tmp_path / "gpu", "--device=cuda")
    assert _close(cpu, gpu, 1e-3), (cpu, gpu)


def test_bf16_and_compile_train_and_a_gpu_run_resumes(tmp_path):
    ref = _pretrain(tmp_path / "bf16", "--device=cuda", "--precision=bf16")
    assert all(math.isfinite(x) for x in ref)
    fp32 = _pretrain(tmp_path / "fp32", "--device=cuda")
    assert _close(ref, fp32, 0.05), (ref, fp32)  # bf16 rounding, not another computation
    compiled = _pretrain(tmp_path / "compiled", "--device=cuda", "--precision=bf16",
                         "--compile=true")
    assert _close(ref, compiled, 0.02), (ref, compiled)
    # A crash after step 3: the last checkpoint is gone; resuming redoes steps 4-6.
    cut = tmp_path / "cut"
    args = ["--device=cuda", "--precision=bf16"]
    _pretrain(cut, *args)
    shutil.rmtree(cut / "checkpoints" / "step_0000006")
    resumed = _pretrain(cut, *args, resume=True)
    assert _close(resumed, ref, 1e-3), (resumed, ref)


def test_world_model_trains_on_the_gpu_and_loads_on_the_cpu(tmp_path):
    data = collect("two-rooms", 6, tmp_path / "data", image_size=32, max_steps=12,
                   progress=False)
    _pretrain(tmp_path / "enc", "--device=cpu", steps=3)
    enc = tmp_path / "enc" / "checkpoints" / "step_0000003"
    runs = {}
    for run, dev in (("wm_cpu", "cpu"), ("wm_gpu", "cuda")):
        cfg = load(WorldModelConfig, None, [
            f"--out_dir={tmp_path / run}", f"--encoder={enc}", f"--data.path={data}",
            f"--device={dev}", "--steps=10", "--ckpt_every=10", "--batch_size=8",
            "--predictor.arch=mlp", "--predictor.dim=32", "--predictor.depth=2",
            "--predictor.pool=2", "--optim.warmup_steps=2", "--log_every=1",
            "--data.val_fraction=0.3", *(f"--value.{k}={v}" for k, v in QUASIMETRIC.items())])
        runs[run] = train_worldmodel(cfg, progress=False)
    cpu, gpu = (logged(tmp_path / run, "tf_loss") for run in runs)
    assert _close(cpu, gpu, 1e-3), (cpu, gpu)
    wm = load_world_model(runs["wm_gpu"])
    assert wm.device.type == "cpu"
    z = wm.encode_frames(torch.zeros(2, 32, 32, 3, dtype=torch.uint8).numpy())  # [2, D]
    z1 = wm.predict(z, torch.zeros(2, wm.action_dim))
    assert z1.shape == z.shape and bool(torch.isfinite(z1).all())


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_planners_sample_on_the_gpu(method):
    sys = linear_system(0)
    sys.A, sys.B, sys.z0 = sys.A.cuda(), sys.B.cuda(), sys.z0.cuda()
    g = torch.Generator().manual_seed(1)
    goal = sys.unroll((0.6 * (torch.rand(1, 5, 2, generator=g) * 2 - 1)).cuda())[0, -1]
    cfg = PlannerConfig(method=method, horizon=5, samples=512, iterations=15, action_dim=2,
                        action_low=-1.0, action_high=1.0, init_std=0.5, min_std=0.05)
    res = plan(sys.unroll, goal_energy(goal), cfg, torch.Generator("cuda").manual_seed(0))
    assert res.actions.device.type == "cuda"
    start_gap = (sys.unroll(torch.zeros(1, 5, 2, device="cuda"))[0, -1] - goal).norm()
    assert (sys.unroll(res.actions[None])[0, -1] - goal).norm() < 0.1 * start_gap
