"""Forward passes as plain functions of (params, x), and parameter initialisation.

Parameters are a dict of plain tensors, named like the homework: W1, b1 for the
first layer (W1 is d(1) x d(0)), up to W{L+1}, b{L+1} for the output layer.
Softmax regression is the MLP with no hidden layer.
"""

import math

import torch

from . import functions as nf

N_CLASSES = 10
N_PIXELS = 784


def layer_sizes(cfg_model, d_in=N_PIXELS, k=N_CLASSES):
    return [d_in, *cfg_model.hidden, k]


def init_weight(shape, scheme, scale, gen):
    fan_out, fan_in = shape
    if scheme == "zeros":
        return torch.zeros(shape)
    if scheme == "uniform":
        return (torch.rand(shape, generator=gen) * 2 - 1) * scale
    std = {
        "normal": scale,
        "xavier": scale * math.sqrt(2.0 / (fan_in + fan_out)),
        "he": scale * math.sqrt(2.0 / fan_in),
    }[scheme]
    return torch.randn(shape, generator=gen) * std


def init_params(cfg_model, seed, device="cpu"):
    """W1, b1, ..., W{L+1}, b{L+1}, drawn on the CPU from `seed` (so every device starts alike)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = layer_sizes(cfg_model)
    params = {}
    for l in range(1, len(sizes)):
        params[f"W{l}"] = init_weight((sizes[l], sizes[l - 1]), cfg_model.init, cfg_model.init_scale, gen)
        params[f"b{l}"] = torch.full((sizes[l],), cfg_model.bias_init)
    return {name: p.to(device).requires_grad_() for name, p in params.items()}


def n_layers(params):
    return len(params) // 2


def mlp(params, x, transfer, output_transfer):
    """y_hat(x) = h_out(W{L+1} h(... h(W1 x + b1) ...) + b{L+1}); x (N, 784) -> (N, 10)."""
    L = n_layers(params)
    z = x
    for l in range(1, L):
        z = transfer(nf.affine(z, params[f"W{l}"], params[f"b{l}"]))  # (N, d(l))
    return output_transfer(nf.affine(z, params[f"W{L}"], params[f"b{L}"]))  # (N, k)


def make_forward(cfg_model):
    """forward(params, x) -> outputs (N, 10) for the configured architecture."""
    transfer = nf.TRANSFERS[cfg_model.transfer]
    output_transfer = nf.TRANSFERS[cfg_model.output_transfer]

    def forward(params, x):
        return mlp(params, x, transfer, output_transfer)

    return forward


def make_loss(cfg_model):
    """loss(outputs, labels) -> scalar; squared error compares with one-hot targets."""
    if cfg_model.loss == "cross_entropy":
        return nf.softmax_cross_entropy

    def squared_error_onehot(out, y):
        onehot = torch.zeros_like(out).scatter_(1, y.unsqueeze(1), 1.0)
        return nf.squared_error(out, onehot)

    return squared_error_onehot
