"""nnhw's model in built-in layers: the twin the benchmarks time nnhw against.

`twin(cfg, init, device)` builds an nn.Sequential layer by layer from the same description that
nnhw.models' forward pass loops over (nnhw.layers.describe), starting from nnhw's own weights `init`,
and the torch.optim optimiser that makes nnhw's update: SGD with momentum, or Adam, with L2 on the
weights alone (biases and batch normalisation's gamma and beta too with optim.l2_bias). What no built-in
layer or optimiser does, it refuses with one line (TwinError), so that a benchmark never times another
model and calls it this one.

This file is a benchmark's, not the library's: nn.Module and torch.optim are what nnhw is compared with.
"""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnhw import layers  # noqa: E402
from nnhw.command import NnhwError  # noqa: E402

TRANSFERS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "identity": nn.Identity}  # 'square' has no built-in layer


class TwinError(NnhwError):
    """A config whose model or update no built-in layer or optimiser makes; one line."""


def check(cfg):
    """TwinError naming what the config asks for that has no built-in twin."""
    m, o = cfg.model, cfg.optim
    if "square" in (m.transfer, m.output_transfer):
        raise TwinError("the built-in twin: no built-in layer computes the transfer 'square'")
    if o.max_norm:
        raise TwinError("the built-in twin: torch.optim has no max-norm projection (optim.max_norm)")
    if o.momentum_ramp:
        raise TwinError("the built-in twin: torch.optim.SGD has no momentum ramp (optim.momentum_ramp)")
    if cfg.train.adversarial != "none":
        raise TwinError(f"the built-in twin: its step has no adversarial term (train.adversarial = '{cfg.train.adversarial}')")


def _copy(module, weight, bias):
    with torch.no_grad():
        module.weight.copy_(weight.reshape(module.weight.shape))
        if bias is not None:
            module.bias.copy_(bias)
    return module


def modules(cfg, init):
    """[(module, the nnhw.layers Layer it belongs to, or None for the input's)], in the forward pass's order."""
    m = cfg.model
    model = layers.describe(m)
    out = [(nn.Dropout(model.dropout_input), None)] if model.dropout_input else []
    for layer in model.layers:
        def norm():
            bn = (nn.BatchNorm2d if layer.kind == "conv" else nn.BatchNorm1d)(layer.width, eps=1e-5, momentum=m.batch_norm_momentum)
            return _copy(bn, init[f"g{layer.tag}"], init[f"bn{layer.tag}"])

        w, b = init[layer.weight.name], init[layer.bias.name] if layer.bias else None
        if layer.kind == "conv":
            if layer.index == 1:
                out.append((nn.Unflatten(1, layer.in_shape), layer))
            seq = [_copy(nn.Conv2d(layer.in_shape[0], layer.width, layer.kernel, layer.stride, layer.padding, bias=b is not None), w, b)]
        else:
            if layer.index == 1 and model.layers[0].kind == "conv":  # the maps, flattened
                out.append((nn.Flatten(), layer))
            seq = [_copy(nn.Linear(*layer.weight.shape[::-1], bias=b is not None), w, b)]
        pool = layer.pool and (nn.MaxPool2d if layer.pool.kind == "max" else nn.AvgPool2d)(layer.pool.size, layer.pool.stride)
        seq += [norm()] if layer.batch_norm == "maps" else []
        seq += [pool] if pool and layer.pool.kind == "max" else []
        seq += [norm()] if layer.batch_norm == "pooled" else []
        seq += [TRANSFERS[layer.transfer]()] if layer.transfer else []
        seq += [pool] if pool and layer.pool.kind == "avg" else []
        seq += [nn.Dropout(layer.dropout)] if layer.dropout else []
        out += [(module, layer) for module in seq]
    return out


def optimizer(cfg, net):
    """torch.optim's twin of nnhw's optimiser for the net's parameters, with L2 where nnhw puts it."""
    o = cfg.optim
    decayed, plain = [], []
    for module in net:
        for name, p in module.named_parameters(recurse=False):
            weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))  # nnhw's W1, Wc1, ... (optim.is_weight)
            (decayed if weight or o.l2_bias else plain).append(p)
    groups = [dict(params=decayed, weight_decay=o.l2), dict(params=plain, weight_decay=0.0)]
    if o.optimizer == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=(o.momentum, o.beta2), eps=o.eps)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, dampening=0.0)


def twin(cfg, init, device):
    """(nn.Sequential, torch.optim optimiser) of cfg's model from nnhw's weights `init`; TwinError for what
    has no built-in twin."""
    check(cfg)
    net = nn.Sequential(*(module for module, _ in modules(cfg, {n: p.detach() for n, p in init.items()}))).to(device)
    return net, optimizer(cfg, net)


def loss_fn(cfg):
    """The config's loss trained, in built-ins: F.cross_entropy (with the config's label smoothing), or the
    squared error against one-hot targets averaged over samples and classes (nnhw's SquaredError)."""
    if cfg.model.loss == "cross_entropy":
        return lambda out, y: nn.functional.cross_entropy(out, y, label_smoothing=cfg.model.label_smoothing)
    return lambda out, y: nn.functional.mse_loss(out, nn.functional.one_hot(y, out.shape[1]).to(out.dtype))

