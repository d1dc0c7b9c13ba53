"""Official I-JEPA / V-JEPA / V-JEPA 2 checkpoints -> jepalab models (tiny synthetic stand-ins).

`official_checkpoint` mirrors the released files' key names and shapes for any size;
`ref_encoder` / `ref_predictor` compute the official models' forward straight from such a dict
(written from the published architecture, independently of jepalab's modules), so a wrong key,
layout or position scheme shows up as a numerical mismatch.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from jepalab.config import PretrainConfig, build
from jepalab.errors import JepalabError
from jepalab.models.build import FrozenEncoder
from jepalab.models.import_official import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Arch,
    build_models,
    convert,
    import_official,
    load_official,
    official_config,
)
from jepalab.models.vit import PRESETS
from jepalab.train.checkpoint import load_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Micro models run fastest on one thread (and do not stall when the cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

PREFIX = {"ijepa": "module.", "vjepa": "module.backbone.", "vjepa2": "module.backbone."}


def _block(sd: dict, pre: str, dim: int, hidden: int, g: torch.Generator) -> None:
    def r(*shape: int, scale: float = 0.05) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd[f"{pre}.norm1.weight"], sd[f"{pre}.norm1.bias"] = 1 + r(dim), r(dim)
    sd[f"{pre}.attn.qkv.weight"] = r(3 * dim, dim, scale=0.2)
    sd[f"{pre}.attn.qkv.bias"] = r(3 * dim)
    sd[f"{pre}.attn.proj.weight"], sd[f"{pre}.attn.proj.bias"] = r(dim, dim, scale=0.1), r(dim)
    sd[f"{pre}.norm2.weight"], sd[f"{pre}.norm2.bias"] = 1 + r(dim), r(dim)
    sd[f"{pre}.mlp.fc1.weight"], sd[f"{pre}.mlp.fc1.bias"] = r(hidden, dim, scale=0.1), r(hidden)
    sd[f"{pre}.mlp.fc2.weight"], sd[f"{pre}.mlp.fc2.bias"] = r(dim, hidden, scale=0.1), r(dim)


def official_checkpoint(
    family: str,
    dim: int = 64,
    depth: int = 2,
    patch: int = 8,
    img: int = 32,
    frames: int = 1,
    tubelet: int = 2,
    pred_dim: int = 32,
    pred_depth: int = 2,
    mask_tokens: int = 2,
    mlp_ratio: float = 4.0,
    seed: int = 0,
) -> dict:
    """A full official-layout checkpoint dict (wrapped keys, optimizer entry, epoch, ...)."""
    g = torch.Generator().manual_seed(seed)
    stored = family != "vjepa2"
    video = frames > 1
    n = (frames // tubelet if video else 1) * (img // patch) ** 2

    def encoder() -> dict:
        k = (dim, 3, tubelet, patch, patch) if video else (dim, 3, patch, patch)
        sd = {"patch_embed.proj.weight": torch.randn(*k, generator=g) * 0.1,
              "patch_embed.proj.bias": torch.randn(dim, generator=g) * 0.1}
        if stored:
            sd["pos_embed"] = torch.randn(1, n, dim, generator=g)
        for i in range(depth):
            _block(sd, f"blocks.{i}", dim, int(dim * mlp_ratio), g)
        sd["norm.weight"] = 1 + 0.05 * torch.randn(dim, generator=g)
        sd["norm.bias"] = torch.zeros(dim)
        return sd

    pred = {"predictor_embed.weight": torch.randn(pred_dim, dim, generator=g) * 0.1,
            "predictor_embed.bias": torch.randn(pred_dim, generator=g) * 0.1}
    if family == "ijepa":
        pred["mask_token"] = torch.randn(1, 1, pred_dim, generator=g)
    else:
        for k in range(mask_tokens):
            pred[f"mask_tokens.{k}"] = torch.randn(1, 1, pred_dim, generator=g)
    if stored:
        pred["predictor_pos_embed"] = torch.randn(1, n, pred_dim, generator=g)
    for i in range(pred_depth):
        _block(pred, f"predictor_blocks.{i}", pred_dim, pred_dim * 4, g)
    pred["predictor_norm.weight"], pred["predictor_norm.bias"] = torch.ones(pred_dim), torch.zeros(
        pred_dim)
    pred["predictor_proj.weight"] = torch.randn(dim, pred_dim, generator=g) * 0.1
    pred["predictor_proj.bias"] = torch.zeros(dim)
    pre = PREFIX[family]
    wrap = lambda sd: {pre + k: v for k, v in sd.items()}  # noqa: E731
    return {"encoder": wrap(encoder()), "predictor": wrap(pred), "target_encoder": wrap(encoder()),
            "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]},
            "scaler": None, "epoch": 7, "loss": 0.5, "batch_size": 16, "world_size": 8, "lr": 1e-3}


def unwrap(sd: dict) -> dict:
    return {k.replace("module.", "").replace("backbone.", ""): v for k, v in sd.items()}


# ---------------------------------------------------------------- reference forward


def ref_rotate(x: Tensor, pos: Tensor) -> Tensor:
    """V-JEPA 2's rotation of x [..., N, D] at positions pos [N] (or broadcastable)."""
    d = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
    freq = pos.double()[..., None] * omega
    sin, cos = torch.cat([freq.sin(), freq.sin()], -1), torch.cat([freq.cos(), freq.cos()], -1)
    y = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    return x * cos.to(x.dtype) + y * sin.to(x.dtype)


def _rope3(q: Tensor, ids: Tensor, hw: tuple[int, int]) -> Tensor:
    """Rotate q [B, H, N, hd] by (frame, row, col) of the flat ids [B, N] as V-JEPA 2 does."""
    hd = q.shape[-1]
    c = 2 * ((hd // 3) // 2)
    per = hw[0] * hw[1]
    t, h, w = ids // per, (ids % per) // hw[1], ids % hw[1]
    parts = [ref_rotate(q[..., a * c : (a + 1) * c], p[:, None]) for a, p in enumerate((t, h, w))]
    return torch.cat([*parts, q[..., 3 * c :]], dim=-1)


def ref_blocks(sd: dict, pre: str, depth: int, x: Tensor, heads: int,
               ids: Tensor | None, hw: tuple[int, int]) -> Tensor:
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], sd[f"{n}.weight"], sd[f"{n}.bias"], 1e-6)  # noqa: E731
    lin = lambda t, n: t @ sd[f"{n}.weight"].T + sd[f"{n}.bias"]  # noqa: E731
    b, n, c = x.shape
    for i in range(depth):
        p = f"{pre}.{i}"
        qkv = lin(ln(x, f"{p}.norm1"), f"{p}.attn.qkv").reshape(b, n, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if ids is not None:
            q, k = _rope3(q, ids, hw), _rope3(k, ids, hw)
        att = (q @ k.transpose(-2, -1) / math.sqrt(c // heads)).softmax(-1)
        x = x + lin((att @ v).transpose(1, 2).reshape(b, n, c), f"{p}.attn.proj")
        h = F.gelu(lin(ln(x, f"{p}.norm2"), f"{p}.mlp.fc1"))
        x = x + lin(h, f"{p}.mlp.fc2")
    return x


def ref_encoder(sd: dict, x: Tensor, heads: int, depth: int, patch: int, rope: bool,
                idx: Tensor | None = None) -> Tensor:
    """Official encoder forward. x: [B, C, H, W] or [B, C, T, H, W] (ImageNet-normalised)."""
    w = sd["patch_embed.proj.weight"]
    conv = F.conv3d if w.ndim == 5 else F.conv2d
    tok = conv(x, w, sd["patch_embed.proj.bias"], stride=w.shape[2:]).flatten(2).transpose(1, 2)
    if not rope:
        tok = tok + sd["pos_embed"]
    ids = torch.arange(tok.shape[1]).expand(tok.shape[0], -1) if idx is None else idx
    tok = torch.gather(tok, 1, ids[..., None].expand(-1, -1, tok.shape[-1]))
    side = x.shape[-1] // patch
    tok = ref_blocks(sd, "blocks", depth, tok, heads, ids if rope else None, (side, side))
    return F.layer_norm(tok, tok.shape[-1:], sd["norm.weight"], sd["norm.bias"], 1e-6)


def ref_predictor(sd: dict, z: Tensor, ctx: Tensor, tgt: Tensor, heads: int, depth: int,
                  side: int, rope: bool, mask_index: int = 0) -> Tensor:
    """Official predictor forward for one target set: z [B, Nc, D], ctx [B, Nc], tgt [B, Nt]."""
    x = z @ sd["predictor_embed.weight"].T + sd["predictor_embed.bias"]
    tokens = sorted((k for k in sd if k.startswith("mask_token")), key=lambda k: int("0" + k[12:]))
    tok = sd[tokens[mask_index % len(tokens)]].expand(z.shape[0], tgt.shape[1], -1)
    if not rope:
        pe = sd["predictor_pos_embed"][0]
        x, tok = x + pe[ctx], tok + pe[tgt]
    ids = torch.cat([ctx, tgt], 1)
    x = ref_blocks(sd, "predictor_blocks", depth, torch.cat([x, tok], 1), heads,
                   ids if rope else None, (side, side))
    x = F.layer_norm(x, x.shape[-1:], sd["predictor_norm.weight"], sd["predictor_norm.bias"], 1e-6)
    return x[:, ctx.shape[1] :] @ sd["predictor_proj.weight"].T + sd["predictor_proj.bias"]


# ---------------------------------------------------------------- tests

MICRO = Arch("micro", patch=8, image_size=32, pred_heads=2)
MICRO_VIDEO = Arch("micro", patch=8, image_size=32, frames=4, pred_heads=2)
CASES = [("ijepa", MICRO, 1), ("vjepa", MICRO_VIDEO, 4), ("vjepa2", MICRO_VIDEO, 4)]


def _imported(family: str, arch: Arch, frames: int, fold: bool = False, **kw):
    ckpt = official_checkpoint(family, frames=frames, **kw)
    cfg, tensors, info = convert(ckpt, family, arch, fold_normalization=fold)
    models = build_models(cfg)
    models.load_state_dict(tensors, strict=True)
    return ckpt, cfg, models.eval(), info


@pytest.mark.parametrize("family,arch,frames", CASES)
def test_every_official_key_maps_and_outputs_match_the_reference(family, arch, frames):
    ckpt, cfg, models, info = _imported(family, arch, frames)
    rope = family == "vjepa2"
    assert cfg.model.pos_embed == ("rope_vjepa2" if rope else "stored")
    assert cfg.model.pred_mask_tokens == (1 if family == "ijepa" else 2)
    assert info["ignored_keys"] == [] and info["epoch"] == 7
    target = unwrap(ckpt["target_encoder"])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, frames, 3, 32, 32, generator=g) if frames > 1 else torch.randn(
        2, 3, 32, 32, generator=g)
    official_x = x.transpose(1, 2) if frames > 1 else x  # their clips are [B, C, T, H, W]
    with torch.no_grad():
        ours = models["target_encoder"](x)
        ref = ref_encoder(target, official_x, heads=2, depth=2, patch=8, rope=rope)
        assert torch.isfinite(ours).all() and ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=2e-5)
        # Masked input: kept tokens keep their own positions (stored table rows or RoPE angles).
        idx = torch.tensor([[0, 5, 9, 13], [3, 4, 14, 15]])
        ref_m = ref_encoder(target, official_x, 2, 2, 8, rope, idx=idx)
        torch.testing.assert_close(models["target_encoder"](x, idx), ref_m, atol=2e-5, rtol=2e-5)
        # Predictor: one target block, the second mask token.
        z = torch.randn(2, 4, 64, generator=g)
        tgt = torch.tensor([[[1, 2, 6]], [[7, 8, 12]]])
        keep_c, keep_t = torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 1, 3, dtype=torch.bool)
        out = models["predictor"](z, idx, keep_c, tgt, keep_t, mask_index=1)
        ref_p = ref_predictor(unwrap(ckpt["predictor"]), z, idx, tgt[:, 0], 2, 2, 4, rope, 1)
        torch.testing.assert_close(out[:, 0], ref_p, atol=2e-5, rtol=2e-5)


def test_round_trip_puts_weights_exactly_where_they_belong():
    ckpt, _, models, _ = _imported("vjepa", MICRO_VIDEO, 4)
    tgt, enc, pred = (unwrap(ckpt[k]) for k in ("target_encoder", "encoder", "predictor"))
    t, e, p = models["target_encoder"], models["encoder"], models["predictor"]
    assert torch.equal(t.patch_embed.proj.weight, tgt["patch_embed.proj.weight"])
    assert torch.equal(e.patch_embed.proj.weight, enc["patch_embed.proj.weight"])
    assert torch.equal(t.trunk.blocks[1].attn.qkv.weight, tgt["blocks.1.attn.qkv.weight"])
    assert torch.equal(t.trunk.blocks[0].mlp[2].bias, tgt["blocks.0.mlp.fc2.bias"])
    assert torch.equal(t.pos_embed, tgt["pos_embed"][0])
    assert torch.equal(p.mask_token[1], pred["mask_tokens.1"][0])
    assert torch.equal(p.proj_in.weight, pred["predictor_embed.weight"])
    assert torch.equal(p.trunk.norm.weight, pred["predictor_norm.weight"])
    assert not torch.equal(e.patch_embed.proj.weight, t.patch_embed.proj.weight)


def test_folded_normalisation_matches_imagenet_input():
    """Folded encoder on jepalab-normalised pixels == original encoder on ImageNet-normalised."""
    _, _, plain, info = _imported("ijepa", MICRO, 1, fold=False)
    _, _, folded, info_f = _imported("ijepa", MICRO, 1, fold=True)
    assert info_f["input_normalization"]["folded_into_patch_embed"]
    pixels = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    x = pixels.permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1)
    with torch.no_grad():
        want = plain["target_encoder"]((x - mean) / std)
        got = FrozenEncoder(folded["target_encoder"], "x", {})(pixels)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain["target_encoder"](x), want, atol=1e-3)


def test_unknown_key_is_named():
    ckpt = official_checkpoint("ijepa")
    ckpt["target_encoder"]["module.blocks.0.attn.q_norm.weight"] = torch.ones(32)
    with pytest.raises(JepalabError, match=r"unknown keys.*blocks\.0\.attn\.q_norm\.weight"):
        convert(ckpt, "ijepa", MICRO)


def test_missing_key_is_named():
    ckpt = official_checkpoint("ijepa")
    del ckpt["target_encoder"]["module.blocks.1.attn.proj.bias"]
    with pytest.raises(JepalabError, match=r"target_encoder: missing.*blocks\.1\.attn\.proj\.bias"):
        convert(ckpt, "ijepa", MICRO)
    ckpt = official_checkpoint("vjepa2", frames=4, mask_tokens=3)
    del ckpt["predictor"]["module.backbone.mask_tokens.1"]
    with pytest.raises(JepalabError, match=r"predictor: missing keys.*mask_tokens\.1"):
        convert(ckpt, "vjepa2", MICRO_VIDEO)


def test_shape_and_arch_mismatches_are_refused():
    ckpt = official_checkpoint("ijepa", img=40)  # a 5x5 table for a 4x4 grid
    with pytest.raises(JepalabError, match=r"shape mismatch: pos_embed \(25, 64\)"):
        convert(ckpt, "ijepa", MICRO)
    with pytest.raises(JepalabError, match="do not match arch preset 'tiny'"):
        convert(official_checkpoint("ijepa"), "ijepa", Arch("tiny", 8, 32))
    with pytest.raises(JepalabError, match=r"arch: unknown ijepa arch 'vitx'.*vith14"):
        convert(official_checkpoint("ijepa"), "ijepa", "vitx")
    with pytest.raises(JepalabError, match=r"no 'target_encoder' entry.*encoder, predictor"):
        convert({"encoder": {}, "predictor": {}}, "ijepa", MICRO)


def test_rope_family_ignores_an_unused_pos_embed():
    ckpt = official_checkpoint("vjepa2", frames=4)
    ckpt["target_encoder"]["module.backbone.pos_embed"] = torch.zeros(1, 32, 64)
    _, tensors, info = convert(ckpt, "vjepa2", MICRO_VIDEO)
    assert info["ignored_keys"] == ["target_encoder:pos_embed"]
    assert not any(k.endswith("pos_embed") for k in tensors)


def test_release_table_matches_the_official_sizes():
    assert ARCHS["vjepa2"]["vitg16"].num_heads == 22 and PRESETS["giant"].num_heads == 16
    assert int(PRESETS["giant"].embed_dim * PRESETS["giant"].mlp_ratio) == 6144
    # Config + shapes of a real release, on the meta device (nothing allocated).
    enc = {"patch_embed.proj.weight": torch.empty(1280, 3, 14, 14, device="meta"),
           **{f"blocks.{i}.norm1.weight": torch.empty(1, device="meta") for i in range(32)}}
    pred = {"predictor_embed.weight": torch.empty(384, 1280, device="meta"),
            **{f"predictor_blocks.{i}.norm1.weight": torch.empty(1) for i in range(12)}}
    cfg = official_config("ijepa", ARCHS["ijepa"]["vith14"], enc, pred)
    assert (cfg.model.pred_heads, cfg.model.pred_depth, cfg.data.image_size) == (16, 12, 224)
    with torch.device("meta"):
        models = build_models(cfg)
    assert models["encoder"].pos_embed.shape == (256, 1280)
    assert models["encoder"].trunk.blocks[0].mlp[0].weight.shape == (5120, 1280)


class _Payload:
    """Unpickling this would create a file: torch.load(weights_only=True) must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loader_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pth.tar"
    torch.save({"encoder": {}, "extra": _Payload(marker)}, bad)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad, map_location="cpu", weights_only=True)
    with pytest.raises(JepalabError, match="refused: not a weights-only checkpoint"):
        load_official(bad)
    assert not marker.exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(JepalabError, match="unreadable torch checkpoint"):
        load_official(junk)


def test_sha256_check(tmp_path):
    f = tmp_path / "ok.pth.tar"
    torch.save({"w": torch.ones(2)}, f)
    obj, sha = load_official(f, expected_sha256=hashlib.sha256(f.read_bytes()).hexdigest().upper())
    assert torch.equal(obj["w"], torch.ones(2)) and len(sha) == 64
    with pytest.raises(JepalabError, match="sha256 mismatch"):
        load_official(f, expected_sha256="0" * 64)


def test_import_official_writes_a_pretrain_checkpoint(tmp_path):
    src = tmp_path / "vjepa2_micro.pt"
    torch.save(official_checkpoint("vjepa2", frames=4), src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = import_official(str(src), "vjepa2", MICRO_VIDEO, str(tmp_path / "ck"), sha)
    manifest, tensors = load_checkpoint(out)
    assert manifest["kind"] == "pretrain"
    assert manifest["source"]["repo"] == "facebookresearch/vjepa2"
    assert (manifest["source"]["file"], manifest["source"]["sha256"]) == (src.name, sha)
    cfg = build(PretrainConfig, manifest["config"])
    models = build_models(cfg)
    models.load_state_dict(tensors["model"], strict=True)
    clip = torch.randint(0, 256, (1, 4, 32, 32, 3), dtype=torch.uint8)
    assert torch.isfinite(FrozenEncoder(models["target_encoder"], "x", {})(clip)).all()


def test_the_shared_builders_rebuild_an_imported_checkpoint(tmp_path):
    """load_pretrain / load_encoder rebuild it: build_encoder and the JEPA objective forward
    model.pos_embed and model.pred_mask_tokens."""
    from jepalab.models.build import build_encoder, load_encoder

    src = tmp_path / "ijepa_micro.pth.tar"
    torch.save(official_checkpoint("ijepa"), src)
    out = import_official(str(src), "ijepa", MICRO, str(tmp_path / "ck"))
    cfg = build(PretrainConfig, load_checkpoint(out, names=())[0]["config"])
    assert build_encoder(cfg).pos == "stored"
    enc = load_encoder(out)
    assert enc.embed_dim == 64


def test_import_verb_refuses_unknown_release_and_bad_digest(tmp_path, capsys):
    from jepalab.cli import main

    src = tmp_path / "ijepa.pth.tar"
    torch.save(official_checkpoint("ijepa"), src)
    assert main(["import", str(src), "--family=ijepa", "--arch=vit_tiny_99",
                 f"--out={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "vit_tiny_99" in err and next(iter(ARCHS["ijepa"])) in err
    arch = next(iter(ARCHS["ijepa"]))
    assert main(["import", str(src), "--family=ijepa", f"--arch={arch}", "--sha256=" + "0" * 64,
                 f"--out={tmp_path / 'b'}"]) == 2
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
