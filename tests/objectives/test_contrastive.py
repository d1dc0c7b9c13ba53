import math

import pytest
import torch
from baseline_runs import loss_ratio, pretrain_rows

from jepalab.models.build import PIXEL_MEAN, PIXEL_STD
from jepalab.objectives.augment import AugmentParams, augment, two_views
from jepalab.objectives.contrastive import info_nce

OFF = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip": 0.0, "jitter_p": 0.0,
       "grayscale": 0.0}


def nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """NT-Xent written out sample by sample (the reference for the vectorised version)."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).double(), dim=-1)
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        denom = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(n) if j != i)
        total -= math.log(math.exp(float(z[i] @ z[pos]) / tau) / denom)
    return total / n


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_info_nce_analytic_value_on_orthonormal_identical_views(tau):
    b = 4
    z = torch.eye(8, dtype=torch.float64)[:b] * 3.0  # the scale is removed by normalising
    expect = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * b - 2))
    assert float(info_nce(z, z, tau)) == pytest.approx(expect, rel=1e-9)
    assert float(info_nce(z.float(), z.float(), tau)) == pytest.approx(expect, abs=1e-6)


def test_info_nce_matches_the_written_out_sum():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert float(info_nce(z1, z2, 0.2)) == pytest.approx(nt_xent_loop(z1, z2, 0.2), rel=1e-5)
    with pytest.raises(ValueError, match="info_nce"):
        info_nce(z1, z2[:4], 0.2)


def images(b: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    u8 = torch.randint(0, 256, (b, 3, size, size), generator=torch.Generator().manual_seed(seed))
    return (u8.float() / 255 - PIXEL_MEAN) / PIXEL_STD


def test_augment_deterministic_per_generator_and_in_range():
    x, p = images(), AugmentParams()
    a = augment(x, torch.Generator().manual_seed(1), p)
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1), p))
    assert not torch.allclose(a, augment(x, torch.Generator().manual_seed(2), p))
    assert a.shape == x.shape and torch.isfinite(a).all()
    pix = a * PIXEL_STD + PIXEL_MEAN
    assert pix.min() >= -1e-5 and pix.max() <= 1 + 1e-5
    v1, v2 = two_views(x, torch.Generator().manual_seed(1), p)
    assert not torch.allclose(v1, v2)


def test_augment_identity_flip_and_grayscale():
    x, g = images(), torch.Generator()
    assert torch.allclose(augment(x, g, AugmentParams(**OFF)), x, atol=1e-5)
    assert torch.allclose(augment(x, g, AugmentParams(**{**OFF, "flip": 1.0})), x.flip(-1),
                          atol=1e-5)
    gray = augment(x, g, AugmentParams(**{**OFF, "grayscale": 1.0}))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    # jitter without hue keeps gray pixels gray; zero amounts are the identity
    zero = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    assert torch.allclose(augment(x, g, AugmentParams(**{**OFF, "jitter_p": 1.0, **zero})), x,
                          atol=1e-4)
    grey_in = x[:, :1].expand(-1, 3, -1, -1)
    j = augment(grey_in, g, AugmentParams(**{**OFF, "jitter_p": 1.0, "hue": 0.0}))
    assert torch.allclose(j[:, 0], j[:, 2], atol=1e-5) and not torch.allclose(j, grey_in)


def test_crop_zooms_into_the_image():
    # a horizontal ramp from -1 to 1: a crop of half the width spans half the range
    ramp = torch.linspace(-1, 1, 32).expand(2, 3, 32, 32).contiguous()
    p = AugmentParams(**{**OFF, "crop_scale": (0.25, 0.25)})
    out = augment(ramp, torch.Generator().manual_seed(0), p)
    spread = out[..., -1] - out[..., 0]
    assert torch.allclose(spread, torch.full_like(spread, 1.0), atol=1e-4)


def test_clip_frames_share_one_augmentation():
    frame = images(b=3)
    clip = frame[:, None].expand(3, 4, 3, 16, 16).contiguous()
    out = augment(clip, torch.Generator().manual_seed(5), AugmentParams())
    assert torch.allclose(out[:, 0], out[:, 3])
    assert torch.allclose(out[:, 0], augment(frame, torch.Generator().manual_seed(5),
                                             AugmentParams()), atol=1e-6)


def test_contrastive_pretrains_loss_falls(tmp_path):
    rows = pretrain_rows(tmp_path / "run", "contrastive", 80, "--mask.kind=none",
                         "--optim.lr=2e-3")
    assert loss_ratio(rows) < 0.9
    mon = [r for r in rows if "rankme" in r]
    assert len(mon) == 16 and all(r["rankme"] > 2.0 and 0.0 <= r["acc"] <= 1.0 for r in mon)
    assert mon[-1]["acc"] >= 2 / 8  # well above chance (1/8) by the end
