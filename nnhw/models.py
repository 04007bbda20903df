"""Forward passes as plain functions of (params, x), parameter initialisation, and augmentation.

Parameters are a dict of plain tensors, named like the homework: W1, b1 for the
first fully connected layer (W1 is d(1) x d(0)), up to W{L+1}, b{L+1} for the
output layer. A CNN adds Wc1, bc1, ... for its convolution layers (Wc1 is
C_out x C_in x k x k). Softmax regression is the MLP with no hidden layer.
Names that start with "b" are biases (no L2 unless asked). With model.batch_norm,
convolution l adds gc{l}, bnc{l} (batch normalisation's gamma and beta, one per
channel) and hidden layer l adds g{l}, bn{l}; their running averages are state, not
parameters: a dict of tensors that `make_forward`'s forward carries (forward.running)
and that checkpoints keep.
"""

import math

import torch
import torch.nn.functional as F

from . import functions as nf
from .config import conv_strides, feature_map_sides
from .data import IMAGE_SIDE, N_CLASSES, N_PIXELS
from .tape import autograd_apply

S = IMAGE_SIDE  # an image is S x S pixels, in the shapes below


def conv_output_size(cfg_model):
    """Side of the feature maps after every convolution and pooling, and the flattened size."""
    side = feature_map_sides(cfg_model)[-1][1]
    return side, cfg_model.conv_channels[-1] * side * side


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


def param_shapes(cfg_model):
    """name -> (shape, fan_in, fan_out) of every parameter, in the order they are drawn."""
    m = cfg_model
    shapes = {}
    d_in = N_PIXELS
    if m.arch == "cnn":
        c_in = 1
        for l, (c_out, k) in enumerate(zip(m.conv_channels, m.conv_kernel), 1):
            shapes[f"Wc{l}"] = ((c_out, c_in, k, k), c_in * k * k, c_out * k * k)
            shapes[f"bc{l}"] = ((c_out,), None, None)
            c_in = c_out
        d_in = conv_output_size(m)[1]
    sizes = [d_in, *m.hidden, N_CLASSES]
    for l in range(1, len(sizes)):
        shapes[f"W{l}"] = ((sizes[l], sizes[l - 1]), sizes[l - 1], sizes[l])
        shapes[f"b{l}"] = ((sizes[l],), None, None)
    for tag, width in batch_norm_layers(m).items():  # gamma starts at 1, beta at 0: the identity map
        shapes[f"g{tag}"], shapes[f"bn{tag}"] = ((width,), None, None), ((width,), None, None)
    return shapes


def batch_norm_layers(cfg_model):
    """{tag: features} of the layers batch normalisation follows: 'c1', 'c2', ... (convolutions, per
    channel), then '1', '2', ... (hidden fully connected layers, per unit); {} without model.batch_norm."""
    m = cfg_model
    if not m.batch_norm:
        return {}
    convs = {f"c{l}": c for l, c in enumerate(m.conv_channels, 1)} if m.arch == "cnn" else {}
    return convs | {str(l): d for l, d in enumerate(m.hidden, 1)}


def init_running(cfg_model, device="cpu"):
    """Batch normalisation's running averages at the start, as F.batch_norm starts them: mean 0 and
    variance 1 per feature, under 'mean.<tag>' and 'var.<tag>'."""
    running = {}
    for tag, width in batch_norm_layers(cfg_model).items():
        running[f"mean.{tag}"] = torch.zeros(width, device=device)
        running[f"var.{tag}"] = torch.ones(width, device=device)
    return running


def layer_table(cfg_model):
    """The model summary: (layer, output shape per image, parameters, multiply-adds per image) for
    each layer, in order; the caller adds the totals."""
    m = cfg_model
    shapes = param_shapes(m)
    rows, c = [], 1
    if m.arch == "cnn":
        for l, (k, s, c_out, (conv, pooled)) in enumerate(zip(m.conv_kernel, conv_strides(m), m.conv_channels, feature_map_sides(m)), 1):
            n = math.prod(shapes[f"Wc{l}"][0]) + c_out
            bn = f" + batch norm ({2 * c_out} running averages)" if m.batch_norm else ""
            n += 2 * c_out if m.batch_norm else 0
            conv_bn, pool_bn = ("", bn) if m.batch_norm_after_pool else (bn, "")
            rows.append((f"conv{l} {k}x{k}{f' stride {s}' if s > 1 else ''}{conv_bn} + {m.transfer}", f"{c_out}x{conv}x{conv}", n, c_out * c * k * k * conv * conv))
            c = c_out
            if m.pool > 1:
                rows.append((f"{m.pool_type}pool{l} {m.pool}x{m.pool} stride {m.pool_stride}{pool_bn}", f"{c}x{pooled}x{pooled}", 0, 0))
    sizes = [shapes["W1"][0][1], *m.hidden, N_CLASSES]
    for l in range(1, len(sizes)):
        transfer = m.transfer if l < len(sizes) - 1 else m.output_transfer
        bn = m.batch_norm and l < len(sizes) - 1
        name = f"fc{l}" + (f" + batch norm ({2 * sizes[l]} running averages)" if bn else "") + ("" if transfer == "identity" else f" + {transfer}")
        rows.append((name, str(sizes[l]), sizes[l - 1] * sizes[l] + sizes[l] + (2 * sizes[l] if bn else 0), sizes[l - 1] * sizes[l]))
    return rows


def init_params(cfg_model, seed, device="cpu"):
    """Every parameter, drawn on the CPU from `seed` (so every device starts alike)."""
    gen = torch.Generator().manual_seed(seed)
    m = cfg_model
    params = {}
    for name, (shape, fan_in, fan_out) in param_shapes(m).items():
        if name.startswith("g") or name.startswith("bn"):  # batch normalisation's gamma and beta
            params[name] = torch.full(shape, 1.0 if name.startswith("g") else 0.0)
        elif fan_in is None:  # a bias
            params[name] = torch.full(shape, m.bias_init)
        else:
            params[name] = init_weight(shape, fan_in, fan_out, m.init, m.init_scale, gen)
    return {name: p.to(device).requires_grad_() for name, p in params.items()}


def make_forward(cfg_model, running=None):
    """forward(params, x, generator=None, call=None, training=None) -> outputs (N, 10).

    Training (by default, when a generator is given) draws dropout's masks from the generator and
    normalises by each batch's statistics, moving the running averages; evaluation (no generator)
    drops nothing and normalises by the running averages. `running` holds them (init_running's
    dict, fresh when not given), and forward.running is that dict.
    `call(Function, *inputs)` applies each Function: through torch.autograd by default,
    or through an nnhw.tape.Tape (train.engine = "tape").
    """
    m = cfg_model
    running = init_running(m) if running is None else running
    bn_momentum = m.batch_norm_momentum
    transfer = nf.TRANSFER_FUNCTIONS[m.transfer]
    output_transfer = nf.TRANSFER_FUNCTIONS[m.output_transfer]
    n_conv = len(m.conv_channels) if m.arch == "cnn" else 0
    strides = conv_strides(m) if n_conv else []
    n_fc = len(m.hidden) + 1
    linear_output = m.output_transfer == "identity"  # identity(a) = a: skip the copy

    def normalise(z, params, tag, training, call):  # batch normalisation after layer `tag`, when the model has it
        if not m.batch_norm:
            return z
        stats = {"mean": running[f"mean.{tag}"], "var": running[f"var.{tag}"]}
        return nf.batch_norm(z, params[f"g{tag}"], params[f"bn{tag}"], stats, training, bn_momentum, call=call)

    def forward(params, x, generator=None, call=None, training=None):
        call = call or autograd_apply
        drop = generator is not None
        training = drop if training is None else training
        z = nf.dropout(x, m.dropout_input, generator, call) if drop else x  # (N, 784)
        if n_conv:
            z = z.view(len(z), 1, S, S)
            for l in range(1, n_conv + 1):
                z = call(nf.Conv2d, z, params[f"Wc{l}"], params[f"bc{l}"], strides[l - 1], m.conv_padding)  # (N, C_l, H, W)
                if not m.batch_norm_after_pool:
                    z = normalise(z, params, f"c{l}", training, call)
                if m.pool > 1 and m.pool_type == "max":
                    # max then f equals f then max for every nondecreasing f (all but 'square', which the
                    # config check refuses here), and applies f to a quarter of the entries
                    z = nf.max_pool2d(z, m.pool, m.pool_stride, call)
                    if m.batch_norm_after_pool:
                        z = normalise(z, params, f"c{l}", training, call)
                    z = call(transfer, z)
                elif m.pool > 1:
                    z = call(nf.AvgPool2d, call(transfer, z), m.pool, m.pool_stride)
                else:
                    z = call(transfer, z)
                if drop and m.dropout_conv:
                    z = nf.dropout(z, m.dropout_conv[l - 1], generator, call)
            z = call(nf.Flatten, z)  # (N, C * H * W)
        for l in range(1, n_fc):
            z = call(transfer, normalise(call(nf.Affine, z, params[f"W{l}"], params[f"b{l}"]), params, str(l), training, call))  # (N, d(l))
            if drop:
                z = nf.dropout(z, m.dropout_hidden, generator, call)
        out = call(nf.Affine, z, params[f"W{n_fc}"], params[f"b{n_fc}"])  # (N, k)
        return out if linear_output else call(output_transfer, out)

    forward.running = running
    return forward


def make_loss(cfg_model):
    """loss(outputs, labels, call=None) -> scalar; squared error compares with one-hot targets."""
    if cfg_model.loss == "cross_entropy":

        def cross_entropy(out, y, call=None):
            return (call or autograd_apply)(nf.SoftmaxCrossEntropy, out, y)

        return cross_entropy

    def squared_error_onehot(out, y, call=None):
        onehot = torch.zeros_like(out).scatter_(1, y.unsqueeze(1), 1.0)
        return (call or autograd_apply)(nf.SquaredError, out, onehot)

    return squared_error_onehot


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
