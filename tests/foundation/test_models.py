import pytest
import torch

from jepalab.models.conv import ConvEncoder
from jepalab.models.vit import PRESETS, Predictor, sincos_pos_embed, vit


def test_presets_match_the_ijepa_family():
    assert (
        PRESETS["tiny"].embed_dim,
        PRESETS["small"].embed_dim,
        PRESETS["base"].embed_dim,
        PRESETS["large"].embed_dim,
        PRESETS["huge"].embed_dim,
    ) == (192, 384, 768, 1024, 1280)
    assert PRESETS["huge"].depth == 32 and PRESETS["large"].num_heads == 16
    with pytest.raises(ValueError, match="unknown ViT preset 'mega'"):
        vit("mega")


def test_pos_embed_is_unique_per_position():
    for grid in [(4, 4), (2, 4, 4)]:
        pe = sincos_pos_embed(64, grid)
        assert pe.shape == (torch.Size([16, 64]) if len(grid) == 2 else torch.Size([32, 64]))
        assert torch.cdist(pe, pe).add(torch.eye(len(pe)) * 10).min() > 1e-3


def test_vit_image_and_video_shapes():
    enc = vit("micro", img_size=32, patch_size=8)
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 16, 64)
    venc = vit("micro", img_size=32, patch_size=8, frames=4, tubelet=2)
    assert venc.grid == (2, 4, 4)
    assert venc(torch.randn(2, 4, 3, 32, 32)).shape == (2, 32, 64)


def test_padding_does_not_change_real_tokens():
    """A padded position (keep=False) must not influence the real tokens' outputs."""
    torch.manual_seed(0)
    enc = vit("micro", img_size=32, patch_size=8).eval()
    x = torch.randn(1, 3, 32, 32)
    idx = torch.tensor([[0, 3, 5, 9]])
    ref = enc(x, idx)
    padded = enc(
        x,
        torch.tensor([[0, 3, 5, 9, 0, 0]]),
        torch.tensor([[True, True, True, True, False, False]]),
    )
    torch.testing.assert_close(padded[:, :4], ref, atol=1e-5, rtol=1e-5)


def test_predictor_shapes_and_block_independence():
    torch.manual_seed(0)
    pred = Predictor((4, 4), embed_dim=64, pred_dim=32, depth=2, num_heads=2).eval()
    z = torch.randn(2, 5, 64)
    ci = torch.tensor([[0, 1, 2, 3, 4]] * 2)
    ck = torch.ones(2, 5, dtype=torch.bool)
    ti = torch.tensor([[[8, 9], [12, 13]]] * 2)
    tk = torch.ones(2, 2, 2, dtype=torch.bool)
    out = pred(z, ci, ck, ti, tk)
    assert out.shape == (2, 2, 2, 64)
    # Block 0's prediction does not depend on block 1's positions.
    out2 = pred(z, ci, ck, torch.tensor([[[8, 9], [14, 15]]] * 2), tk)
    torch.testing.assert_close(out[:, 0], out2[:, 0])


def test_conv_encoder_contract():
    enc = ConvEncoder(32, 8, embed_dim=48)
    x = torch.randn(2, 3, 32, 32)
    assert enc(x).shape == (2, 16, 48)
    idx = torch.tensor([[0, 5, 6], [1, 2, 15]])
    assert enc(x, idx, torch.ones(2, 3, dtype=torch.bool)).shape == (2, 3, 48)
    # A masked-out patch's pixels cannot reach a kept token far away (receptive field < image)
    with pytest.raises(ValueError, match="power-of-two"):
        ConvEncoder(32, 6)
