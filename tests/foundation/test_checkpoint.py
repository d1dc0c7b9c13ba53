import pytest
import torch

from jepalab.errors import JepalabError
from jepalab.train.checkpoint import (
    load_checkpoint,
    optimizer_tensors,
    restore_optimizer,
    save_checkpoint,
)


def _model_and_opt():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    return m, opt


def test_round_trip_weights_and_optimizer(tmp_path):
    m, opt = _model_and_opt()
    ot, ometa = optimizer_tensors(opt)
    path = save_checkpoint(
        tmp_path / "ck",
        {"model": m.state_dict(), "optim": ot},
        {"kind": "test", "step": 1, "optimizer": ometa},
    )
    manifest, tensors = load_checkpoint(path)
    assert manifest["step"] == 1 and set(manifest["files"]) == {
        "model.safetensors",
        "optim.safetensors",
    }
    assert "commit" in manifest["git"]
    m2, opt2 = _model_and_opt()
    with torch.no_grad():
        for p in m2.parameters():
            p.zero_()
    m2.load_state_dict(tensors["model"])
    restore_optimizer(opt2, tensors["optim"], manifest["optimizer"])
    for a, b in zip(m.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    for k in s1:
        torch.testing.assert_close(s1[k]["exp_avg"], s2[k]["exp_avg"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_checkpoint_refused(tmp_path, damage):
    m, _ = _model_and_opt()
    path = save_checkpoint(tmp_path / "ck", {"model": m.state_dict()}, {"kind": "test"})
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f.write_bytes(bytes(data[: len(data) // 2]))
    else:
        f.unlink()
    with pytest.raises(JepalabError, match="model.safetensors"):
        load_checkpoint(path)


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
    m, _ = _model_and_opt()
    save_checkpoint(tmp_path / "ck", {"model": m.state_dict()}, {"kind": "test", "step": 1})
    save_checkpoint(tmp_path / "ck", {"model": m.state_dict()}, {"kind": "test", "step": 2})
    assert load_checkpoint(tmp_path / "ck")[0]["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
