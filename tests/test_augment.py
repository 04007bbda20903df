"""Augmentation on the device: the elastic distortion (Simard et al. 2003) against its definition."""

import math

import pytest
import torch

from nnhw import config, models


def _train_cfg(**keys):
    cfg = config.load(None, [f"train.{k}={v!r}" if not isinstance(v, str) else f'train.{k}="{v}"' for k, v in keys.items()])
    return cfg.train


def _images(n=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 28, 28)
    x[:, 8:20, 12:16] = 1.0  # a bar in the middle, zero background
    return (x + 0.1 * torch.rand(n, 28, 28, generator=gen)).view(n, 784)


def test_elastic_with_no_displacement_is_the_affine_map():
    """The elastic map is the affine one plus a field; alpha 0 leaves only the affine part (the affine
    draws come first from the same stream)."""
    x = _images()
    a = models.augment(x, _train_cfg(augment="affine"), torch.Generator().manual_seed(5))
    e = models.augment(x, _train_cfg(augment="elastic", elastic_alpha=0.0), torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, e, rtol=0, atol=0)
    e2 = models.augment(x, _train_cfg(augment="elastic", elastic_alpha=34.0), torch.Generator().manual_seed(5))
    assert (e2 - a).abs().max() > 0.1  # a real field moves pixels


def test_elastic_field_is_smooth_and_scales_with_alpha():
    f1 = models.elastic_field(64, 1.0, 4.0, torch.Generator().manual_seed(1), "cpu", torch.float64)
    f3 = models.elastic_field(64, 3.0, 4.0, torch.Generator().manual_seed(1), "cpu", torch.float64)
    assert f1.shape == (64, 28, 28, 2)
    torch.testing.assert_close(f3, 3 * f1)  # linear in alpha for the same noise
    inner = f1[:, 10:18, 10:18]  # away from the zero border
    step = (inner[:, 1:] - inner[:, :-1]).abs().mean()
    assert step < 0.2 * inner.abs().mean()  # neighbours move together: a smooth field, not pixel noise
    rough = models.elastic_field(64, 1.0, 0.3, torch.Generator().manual_seed(1), "cpu", torch.float64)[:, 10:18, 10:18]
    assert (rough[:, 1:] - rough[:, :-1]).abs().mean() > 0.5 * rough.abs().mean()  # a tiny sigma leaves it rough


def test_elastic_size_in_pixels():
    """Uniform noise of variance 1/3 through a normalised Gaussian of std sigma keeps a variance of
    about 1/(3 * 4 pi sigma^2) in 2-D; times alpha pixels, in [-1, 1] units of 2/28 per pixel."""
    alpha, sigma = 34.0, 4.0
    f = models.elastic_field(256, alpha, sigma, torch.Generator().manual_seed(2), "cpu", torch.float64)
    std_px = f[:, 10:18, 10:18].std().item() * 28 / 2
    expected = alpha / math.sqrt(3 * 4 * math.pi * sigma**2)
    assert 0.7 * expected < std_px < 1.3 * expected


@pytest.mark.parametrize("kind", ["shift", "affine", "elastic"])
def test_augmented_images_keep_their_ink(kind):
    x = _images()
    out = models.augment(x, _train_cfg(augment=kind), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    ratio = out.sum(1) / x.sum(1)
    assert ((0.5 < ratio) & (ratio < 1.5)).all()  # moved and bent (an elastic field stretches strokes), not lost
    assert not torch.equal(out, x)
