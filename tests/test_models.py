"""The model as nnhw.layers describes it and nnhw.models builds it, against torch's own definitions:
convolution sides, He's scale, overlapping pooling, and how far augmentation moves an image."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nnhw import config, layers, models
from nnhw.trainer import build

from conftest import REPO


def test_a_convolutions_side_is_the_one_conv2d_gives():
    x = torch.zeros(1, 1, 28, 28)
    for side, kernel, stride, padding in itertools.product([5, 12, 28], [1, 3, 4, 5], [1, 2, 3], [0, 1, 2]):
        expected = F.conv2d(x[..., :side, :side], torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding).shape[-1]
        assert layers.conv_side(side, kernel, stride, padding) == expected, (side, kernel, stride, padding)
    assert layers.conv_side(3, 5, 1, 0) == 0  # the filter does not fit


def test_he_initialisation_scales_by_each_weights_fan_in():
    """std sqrt(2 / fan_in) (He et al. 2015) times model.init_scale, where fan-in and fan-out differ: 25 and 100 for cnn's first
    convolution, 784 and 200 for relu's first layer."""
    for name, overrides in [("relu", []), ("cnn", ["model.conv_channels=[4, 100]"])]:
        cfg = config.load(REPO / "configs" / f"{name}.toml", ["model.init=he", *overrides])
        model = layers.describe(cfg.model)
        params = models.init_params(model, cfg.model, 0)
        for p in model.params:
            if p.role == "weight" and params[p.name].numel() >= 2000:
                assert p.fan_in != p.fan_out
                assert params[p.name].std().item() == pytest.approx(cfg.model.init_scale * math.sqrt(2.0 / p.fan_in), rel=0.05), p.name


def test_overlapping_average_pooling_is_the_one_avg_pool2d_gives():
    """A CNN whose 3x3 pooling moves by 2 (28 -> 24 -> 11 -> 7 -> 3): the forward pass, written out with
    torch.nn.functional, is nnhw's."""
    cfg = config.load(REPO / "configs" / "cnn.toml", ["model.conv_channels=[4, 6]", "model.hidden=[12]", "model.pool=3", "model.pool_stride=2"])
    net = build(cfg, torch.device("cpu"))
    p = {k: v.detach() for k, v in net.params.items()}
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(0))
    z = x.view(5, 1, 28, 28)
    for c in ("1", "2"):
        z = F.avg_pool2d(F.relu(F.conv2d(z, p[f"Wc{c}"], p[f"bc{c}"])), 3, 2)
    z = F.linear(F.relu(F.linear(z.flatten(1), p["W1"], p["b1"])), p["W2"], p["b2"])
    torch.testing.assert_close(net.forward(net.params, x).detach(), z)


def test_a_shift_moves_an_image_up_to_augment_shift_pixels_each_way():
    """The ink's centre moves by the translation (bilinear sampling keeps a point's centre of mass), which is
    uniform in [-augment_shift, augment_shift] pixels on each axis."""
    n, shift = 4000, 3.0
    x = torch.zeros(n, 28, 28, dtype=torch.float64)
    x[:, 13:15, 13:15] = 1.0
    cfg = config.load(None, ['train.augment="shift"', f"train.augment_shift={shift}"]).train
    out = models.augment(x.view(n, 784), cfg, torch.Generator().manual_seed(0)).view(n, 28, 28)
    grid = torch.arange(28, dtype=torch.float64)
    mass = out.sum((1, 2))
    moved = torch.stack([(out.sum(2) * grid).sum(1) / mass, (out.sum(1) * grid).sum(1) / mass], 1) - 13.5
    assert torch.allclose(mass, torch.full_like(mass, 4.0))  # nothing lost at the border
    assert moved.abs().max() <= shift + 1e-6
    assert (moved.abs() > 0.9 * shift).float().mean() > 0.05  # about 10% of draws on each axis land that far
