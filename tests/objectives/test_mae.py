import pytest
import torch
from baseline_runs import loss_ratio, pretrain_rows

from jepalab.config import PretrainConfig, load
from jepalab.errors import JepalabError
from jepalab.masks import MaskSet, build_mask_policy
from jepalab.models.build import build_encoder, load_encoder
from jepalab.objectives import Batch, build_objective
from jepalab.objectives.mae import patchify, pixel_targets, random_masking, visible_and_masked
from jepalab.train.loop import make_optimizer, train_step
from tiny import TINY


def tiny_cfg(*extra: str) -> PretrainConfig:
    return load(PretrainConfig, None, ["--objective.name=mae", "--steps=100", *TINY, *extra])


def test_patchify_follows_the_encoder_token_order():
    x = torch.randn(2, 3, 16, 24)
    p = patchify(x, 8)
    assert p.shape == (2, 6, 8 * 8 * 3)
    h, w = 1, 2  # token h*W + w, pixels (row, col, channel) flattened
    assert torch.equal(p[:, h * 3 + w], x[:, :, 8:16, 16:24].permute(0, 2, 3, 1).reshape(2, -1))
    clip = torch.randn(2, 4, 3, 16, 16)
    q = patchify(clip, 8, tubelet=2)
    assert q.shape == (2, 2 * 2 * 2, 2 * 8 * 8 * 3)
    t, h, w = 1, 0, 1  # token t*H*W + h*W + w covers frames 2..3
    ref = clip[:, 2:4, :, 0:8, 8:16].permute(0, 1, 3, 4, 2).reshape(2, -1)
    assert torch.equal(q[:, t * 4 + h * 2 + w], ref)
    # the Conv3d patch embedding sees the same tubelets: a kernel picking one pixel agrees
    from jepalab.models.vit import PatchEmbed

    emb = PatchEmbed(3, 1, 8, 2)
    torch.nn.init.zeros_(emb.proj.weight)
    torch.nn.init.zeros_(emb.proj.bias)
    emb.proj.weight.data[0, 1, 1, 3, 5] = 1.0  # channel 1, frame 1 of the tubelet, row 3, col 5
    picked = q.view(2, 8, 2, 8, 8, 3)[:, :, 1, 3, 5, 1]
    assert torch.allclose(emb(clip)[..., 0], picked)


def test_norm_pix_targets():
    patches = torch.randn(2, 5, 12) * 3 + 1
    t = pixel_targets(patches, norm=True)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(2, 5), atol=1e-3)
    assert torch.equal(pixel_targets(patches, norm=False), patches)
    assert torch.equal(pixel_targets(torch.full((1, 2, 4), 0.7), True), torch.zeros(1, 2, 4))


def test_random_masking():
    ms = random_masking(torch.Generator().manual_seed(0), 6, 16, 0.75)
    assert ms.context_idx.shape == (6, 4) and ms.target_idx.shape == (6, 1, 12)
    for v, m in zip(ms.context_idx, ms.target_idx[:, 0]):
        assert sorted(v.tolist() + m.tolist()) == list(range(16))
        assert v.tolist() == sorted(v.tolist())
    again = random_masking(torch.Generator().manual_seed(0), 6, 16, 0.75)
    other = random_masking(torch.Generator().manual_seed(1), 6, 16, 0.75)
    assert torch.equal(ms.context_idx, again.context_idx)
    assert not torch.equal(ms.context_idx, other.context_idx)
    # extreme ratios still leave one visible and one masked token
    assert random_masking(torch.Generator(), 2, 16, 0.999).context_idx.shape == (2, 1)
    assert random_masking(torch.Generator(), 2, 16, 0.001).target_idx.shape == (2, 1, 1)


def test_visible_and_masked_from_policy_masks():
    policy = build_mask_policy("multiblock", (6, 6), min_keep=2)
    dense = policy.sample_dense(torch.Generator().manual_seed(3), 5)[0]
    ms = dense.to_maskset()
    _, _, m_idx, m_keep = visible_and_masked(ms, 36, "masked")
    _, _, t_idx, t_keep = visible_and_masked(ms, 36, "targets")
    for i in range(5):
        ctx = set(dense.context[i].flatten().nonzero().flatten().tolist())
        union = set(dense.targets[i].any(0).flatten().nonzero().flatten().tolist())
        assert set(m_idx[i][m_keep[i]].tolist()) == set(range(36)) - ctx
        assert set(t_idx[i][t_keep[i]].tolist()) == union
    # padding repeats index 0; it must not hide a real context token 0
    hand = MaskSet(torch.tensor([[0, 5], [3, 0]]), torch.tensor([[True, True], [True, False]]),
                   torch.tensor([[[1]], [[2]]]), torch.ones(2, 1, 1, dtype=torch.bool))
    _, _, idx, keep = visible_and_masked(hand, 6, "masked")
    assert [set(idx[i][keep[i]].tolist()) for i in range(2)] == [{1, 2, 3, 4}, {0, 1, 2, 4, 5}]


def test_decoder_reconstructs_a_constant_image():
    """Raw-pixel loss (the normalised target of a constant patch is degenerate, all zeros)."""
    cfg = tiny_cfg("--mask.kind=none", "--objective.params.norm_pix=false", "--optim.lr=3e-3")
    objective = build_objective(cfg)
    models = objective.build(build_encoder(cfg))
    opt = make_optimizer(models, objective.trainable(models), cfg.optim.lr)
    x = torch.full((8, 3, 32, 32), 0.8)
    losses = []
    for step in range(100):
        batch = Batch(x=x, masks=[], generator=torch.Generator().manual_seed(step))
        losses.append(train_step(models, objective, opt, batch, cfg)["loss"])
    assert losses[0] > 0.3 and losses[-1] < 1e-3 * losses[0], (losses[0], losses[-1])
    ms = random_masking(torch.Generator().manual_seed(999), 8, 16, 0.75)
    v, vk, m, mk = visible_and_masked(ms, 16, "masked")
    with torch.no_grad():
        pred = models["decoder"](models["encoder"](x, v, vk), v, vk, m, mk)
    assert torch.allclose(pred, torch.full_like(pred, 0.8), atol=0.05)


@pytest.mark.parametrize("mask", ["multiblock", "none"])
def test_mae_pretrains_loss_falls(tmp_path, mask):
    rows = pretrain_rows(tmp_path / "run", "mae", 80, f"--mask.kind={mask}", "--optim.lr=2e-3")
    assert loss_ratio(rows) < 0.8
    mon = [r for r in rows if "rankme" in r]
    assert len(mon) == 16 and all(r["rankme"] > 2.0 and r["token_std"] > 0.05 for r in mon)
    visible = rows[0]["visible"]
    assert visible == 0.25 if mask == "none" else 0.2 < visible < 0.8
    # the downstream encoder loads from the checkpoint like JEPA's
    enc = load_encoder(tmp_path / "run" / "checkpoints" / "step_0000080")
    assert enc(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape == (2, 16, 64)


@pytest.mark.parametrize("mask", ["tube", "none"])
def test_mae_on_clips(mask):
    over = [a for a in TINY if not a.startswith("--mask.params")]
    cfg = load(PretrainConfig, None, ["--objective.name=mae", "--data.source=dataset",
                                      "--data.path=unused", "--data.frames=4",
                                      f"--mask.kind={mask}", *over])
    objective = build_objective(cfg)
    models = objective.build(build_encoder(cfg))
    masks = []
    if mask == "tube":
        policy = build_mask_policy("tube", models["encoder"].grid, min_keep=2)
        masks = policy.sample(torch.Generator().manual_seed(0), 2)
    x = torch.randn(2, 4, 3, 32, 32)
    batch = Batch(x=x, masks=masks, generator=torch.Generator().manual_seed(0), monitor=True)
    loss, metrics = objective.loss(batch, models)
    loss.backward()
    assert torch.isfinite(loss) and 0.0 < metrics["visible"] < 1.0 and "rankme" in metrics
    assert models["decoder"].head.out_features == 2 * 8 * 8 * 3
    assert models["encoder"].patch_embed.proj.weight.grad.abs().sum() > 0


def test_mae_param_errors():
    with pytest.raises(JepalabError, match="mask_ratio.*mask.kind is 'multiblock'"):
        build_objective(tiny_cfg("--objective.params.mask_ratio=0.5"))
    with pytest.raises(JepalabError, match="loss_on 'targets'"):
        build_objective(tiny_cfg("--mask.kind=none", "--objective.params.loss_on=targets"))
    with pytest.raises(JepalabError, match=r"objective.params.*norm_pixel.*allowed: norm_pix"):
        build_objective(tiny_cfg("--objective.params.norm_pixel=true"))
    with pytest.raises(JepalabError, match="mask_ratio"):
        build_objective(tiny_cfg("--mask.kind=none", "--objective.params.mask_ratio=1.5"))
