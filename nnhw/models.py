"""Initialisation, the forward pass and the loss, read off the model's description, and augmentation.

Parameters are a dict of plain tensors named as nnhw.layers names them (W1, b1, ... Wc1, bc1, ...,
g<tag>, bn<tag>); the running averages of batch normalisation are state, not parameters: a dict of
tensors ('mean.<tag>', 'var.<tag>') that the trainer owns and checkpoints keep. The forward pass is a
loop over the layers of `layers.describe(cfg.model)`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import functions as nf
from .data import IMAGE_SIDE, N_PIXELS
from .tape import autograd_apply

S = IMAGE_SIDE  # an image is S x S pixels, in the shapes below


def init_weight(shape, fan_in, fan_out, scheme, scale, gen):
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


def init_params(model, cfg_model, seed, device="cpu"):
    """Every parameter of `model` (layers.describe), drawn on the CPU from `seed` (so every device starts
    alike), in the model's order: weights by model.init, biases at model.bias_init, batch normalisation's
    gamma at 1 and beta at 0 (the identity map)."""
    gen = torch.Generator().manual_seed(seed)
    m = cfg_model
    start = {"bias": m.bias_init, "gamma": 1.0, "beta": 0.0}
    params = {p.name: init_weight(p.shape, p.fan_in, p.fan_out, m.init, m.init_scale, gen) if p.role == "weight"
              else torch.full(p.shape, start[p.role]) for p in model.params}
    return {name: p.to(device).requires_grad_() for name, p in params.items()}


def init_running(model, device):
    """Batch normalisation's running averages at the start, as F.batch_norm starts them: mean 0 and
    variance 1 per feature, on the run's device."""
    return {name: (torch.zeros if name.startswith("mean.") else torch.ones)(width, device=device) for name, width in model.running.items()}


def make_forward(model, running, batch_norm_momentum=0.1):
    """forward(params, x, generator=None, call=None, training=None, moving=True) -> outputs (N, 10) of `model`.

    Training (by default, when a generator is given) draws dropout's masks from the generator and
    normalises by each batch's statistics, moving the running averages in `running` (init_running's
    dict, or a checkpoint's) unless `moving` is false (an adversarial pass at moved images); evaluation
    (no generator) drops nothing and normalises by them.
    `call(Function, *inputs)` applies each Function: through torch.autograd by default, or through an
    nnhw.tape.Tape (train.engine = "tape").
    """

    def normalise(z, params, layer, training, call, relu, moving):
        stats = {"mean": running[f"mean.{layer.tag}"], "var": running[f"var.{layer.tag}"]} if moving else {"mean": None, "var": None}
        return nf.batch_norm(z, params[f"g{layer.tag}"], params[f"bn{layer.tag}"], stats, training, batch_norm_momentum, call=call, relu=relu)

    def forward(params, x, generator=None, call=None, training=None, moving=True):
        call = call or autograd_apply
        drop = generator is not None
        training = drop if training is None else training
        z = nf.dropout(x, model.dropout_input, generator, call) if drop else x  # (N, 784)
        for layer in model.layers:
            W, b = params[layer.weight.name], params[layer.bias.name] if layer.bias else None
            if layer.kind == "conv":
                z = z.view(len(z), *layer.in_shape) if z.dim() == 2 else z  # (N, C, H, W)
                z = call(nf.Conv2d, z, W, b, layer.stride, layer.padding)
            else:
                z = call(nf.Flatten, z) if z.dim() > 2 else z  # (N, d)
                z = call(nf.Affine, z, W, b)
            pool = layer.pool
            max_pool = pool and pool.kind == "max"
            # batch normalisation straight before a ReLU applies both in one Function (a pass fewer each way)
            relu_in_norm = layer.transfer == "relu" and layer.batch_norm == ("pooled" if max_pool else "maps")
            if layer.batch_norm == "maps":
                z = normalise(z, params, layer, training, call, relu_in_norm, moving)
            if max_pool:  # before f: max then f equals f then max for a nondecreasing f
                z = nf.max_pool2d(z, pool.size, pool.stride, call)
            if layer.batch_norm == "pooled":
                z = normalise(z, params, layer, training, call, relu_in_norm, moving)
            if layer.transfer and not relu_in_norm:
                z = call(nf.TRANSFER_FUNCTIONS[layer.transfer], z)
            if pool and pool.kind == "avg":
                z = call(nf.AvgPool2d, z, pool.size, pool.stride)
            if drop:
                z = nf.dropout(z, layer.dropout, generator, call)
        return z

    return forward


def make_loss(cfg_model, training=False):
    """loss(outputs, labels, call=None) -> scalar; squared error compares with one-hot targets. With
    training, the objective trained: the cross-entropy against model.label_smoothing's target."""
    if cfg_model.loss == "cross_entropy":
        smoothing = cfg_model.label_smoothing if training else 0.0

        def cross_entropy(out, y, call=None):
            return (call or autograd_apply)(nf.SoftmaxCrossEntropy, out, y, smoothing)  # 0: the plain loss, bit for bit

        return cross_entropy

    def squared_error_onehot(out, y, call=None):
        onehot = torch.zeros_like(out).scatter_(1, y.unsqueeze(1), 1.0)
        return (call or autograd_apply)(nf.SquaredError, out, onehot)

    return squared_error_onehot


def _unit_rows(t):
    """Each row of t (N, ...) divided by its L2 norm (rows of zeros stay zero)."""
    norm = t.flatten(1).norm(dim=1).clamp_min(1e-30)
    return t / norm.view(-1, *[1] * (t.dim() - 1))


@dataclass
class Adversarial:
    """train.adversarial's term: term(params, x, y, out, loss, generator), added to the loss; with
    input_grad, x must require grad in the clean pass, whose loss's gradient in the image it reads."""

    term: Callable
    input_grad: bool


def make_adversarial(cfg_train, forward, loss_fn, pixel):
    """train.adversarial's Adversarial, whose term is adversarial_weight times the term below, or None
    when it is 'none'. `out` and `loss` are the clean pass's outputs and loss at x; `pixel` is
    one pixel unit in x's scale (1 / PIXEL_STD when standardised). The moved passes normalise by
    their own batch's statistics and leave the running averages where the clean pass put them.

    'vat':  p = softmax(out), fixed;  d random of norm xi;  g = grad_d KL(p || softmax(f(x + d)));
            r = eps g / |g| per image;  term = KL(p || softmax(f(x + r)))
    'fgsm': r = eps sign(grad_x loss) (x must require grad in the clean pass);  term = loss(f(x + r), y)
    Every gradient here comes through the Functions' own backward.
    """
    t = cfg_train
    if t.adversarial == "none":
        return None
    eps, xi, w = t.adversarial_eps * pixel, t.vat_xi * pixel, t.adversarial_weight

    def vat(params, x, y, out, loss, generator):
        p = out.detach()  # (N, 10): the clean outputs, a fixed target
        d = (xi * _unit_rows(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))).requires_grad_()
        probe = autograd_apply(nf.SoftmaxKL, p, forward(params, x.detach() + d, training=True, moving=False))
        (g,) = torch.autograd.grad(probe, d)  # (N, 784): ~ H d, the power iteration's step
        return w * autograd_apply(nf.SoftmaxKL, p, forward(params, x.detach() + eps * _unit_rows(g), training=True, moving=False))

    def fgsm(params, x, y, out, loss, generator):
        (g,) = torch.autograd.grad(loss, x, retain_graph=True)  # the clean loss's gradient in the image
        return w * loss_fn(forward(params, x.detach() + eps * g.sign(), generator, training=True, moving=False), y)

    return Adversarial(vat, False) if t.adversarial == "vat" else Adversarial(fgsm, True)


def elastic_field(n, alpha, sigma, generator, device, dtype):
    """(N, S, S, 2) displacements in affine_grid's [-1, 1] coordinates (Simard et al. 2003): uniform
    noise in [-1, 1] for each pixel and axis, smoothed by a Gaussian of std sigma pixels (two 1-D
    passes, zero beyond the border), times alpha pixels."""
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()  # (2r + 1,)
    u = torch.rand(2 * n, 1, S, S, generator=generator, device=device, dtype=dtype) * 2 - 1
    u = F.conv2d(u, g.view(1, 1, 1, -1), padding=(0, r))  # along x
    u = F.conv2d(u, g.view(1, 1, -1, 1), padding=(r, 0))  # along y
    return u.view(n, 2, S, S).permute(0, 2, 3, 1) * (alpha * 2.0 / S)  # pixels -> [-1, 1] coordinates


def augment(x, cfg_train, generator, background=0.0):
    """Each image of the batch moved by its own random map, on the batch's device: a translation of
    up to augment_shift pixels ('shift'), plus a rotation and a change of scale ('affine'), plus an
    elastic distortion, a smooth random field of displacements ('elastic')."""
    n = len(x)
    u = torch.rand(n, 4, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1  # (N, 4) in [-1, 1]
    shift = u[:, 2:] * (2.0 * cfg_train.augment_shift / S)  # pixels -> [-1, 1] coordinates
    if cfg_train.augment in ("affine", "elastic"):
        angle = u[:, 0] * math.radians(cfg_train.augment_rotate)
        scale = 1 + u[:, 1] * cfg_train.augment_scale
    else:
        angle, scale = torch.zeros_like(u[:, 0]), torch.ones_like(u[:, 0])
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (N, 2, 3)
    img = x.view(n, 1, S, S) - background
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)  # (N, S, S, 2)
    if cfg_train.augment == "elastic":
        grid = grid + elastic_field(n, cfg_train.elastic_alpha, cfg_train.elastic_sigma, generator, x.device, x.dtype)
    return (F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background).view(n, N_PIXELS)
