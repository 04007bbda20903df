"""The model described once: `describe(cfg.model)` gives its layers as a list of records.

Everything that needs to know the model reads this list and nothing else: the parameters and their
initialisation, the running averages of batch normalisation, the forward pass (a loop over the
layers, nnhw.models), the model summary, the memory check, the config's geometry checks, the report's
words, the HParams row and the benchmark's built-in twin. A record says, for one image:

    conv l   (C_in, H, W) -> convolution -> [batch norm] -> max pooling -> [batch norm] -> f -> [dropout]
                                        or -> [batch norm] -> f -> average pooling -> [dropout]
    fc l     (d_in,) -> W z + b -> [batch norm] -> f -> [dropout]        (the output layer: no f when linear)

Max pooling comes before f (max then f equals f then max for a nondecreasing f, and applies f to a
quarter of the entries); batch normalisation sits on the convolution's whole maps, or on the pooled
ones (model.batch_norm_after_pool). Parameters are named like the homework: W1, b1, ... for the fully
connected layers (W1 is d(1) x d(0)), Wc1, bc1, ... for the convolutions (C_out x C_in x k x k), and
g<tag>, bn<tag> for batch normalisation's gamma and beta, <tag> being 'c1' for conv1 and '1' for fc1.

A layer that batch normalisation follows has no bias: the batch's mean takes any constant out, so its
gradient is 0 but for rounding, and Adam, which divides each step by the gradient's size, would turn
that rounding into steps of the learning rate's size, different on every machine. Beta is its bias.
"""

import math
from dataclasses import dataclass

from .data import IMAGE_SIDE, N_CLASSES, N_PIXELS

POOLING_NAMES = {"avg": "average", "max": "max"}  # model.pool_type -> words


@dataclass(frozen=True)
class Param:
    """One parameter tensor: its name, shape and role; fan_in and fan_out for weights (what the
    initialisation's schemes scale by), None for the others."""

    name: str
    shape: tuple
    role: str  # 'weight', 'bias', 'gamma' or 'beta'
    fan_in: int | None = None
    fan_out: int | None = None


@dataclass(frozen=True)
class Pool:
    kind: str  # 'max' or 'avg'
    size: int
    stride: int


@dataclass(frozen=True)
class Layer:
    """One convolution ('conv') or fully connected ('fc') layer with everything that follows it."""

    kind: str
    index: int  # l in conv l / fc l, from 1
    in_shape: tuple  # one image's input: (C, H, W) or (d,)
    out_shape: tuple  # one image's output, after the pooling
    weight: Param
    bias: Param | None  # None before batch normalisation, whose beta takes its place (its gradient would be 0 but for rounding)
    multiply_adds: int  # one image's forward pass through the weight
    transfer: str | None  # the transfer function after it; None for linear outputs (nothing applied)
    conv_shape: tuple = ()  # conv: the maps the convolution makes, before the pooling
    kernel: int = 0  # conv: k of its k x k filters
    stride: int = 1  # conv
    padding: int = 0  # conv
    pool: Pool | None = None  # conv: the pooling after it
    batch_norm: str = ""  # '' (none), 'maps' (the convolution's maps, or the units) or 'pooled' (the pooled maps)
    dropout: float = 0.0  # the probability of dropping each of its outputs in training

    @property
    def name(self):
        return f"{self.kind}{self.index}"

    @property
    def tag(self):
        """The suffix of its batch normalisation's parameters and running averages: 'c1', or '1' for fc1."""
        return f"c{self.index}" if self.kind == "conv" else str(self.index)

    @property
    def width(self):
        """Its features: channels of a convolution, units of a fully connected layer."""
        return self.out_shape[0]

    @property
    def norm_params(self):
        """Batch normalisation's gamma (starts at 1) and beta (starts at 0), one each per feature; () without it."""
        if not self.batch_norm:
            return ()
        return (Param(f"g{self.tag}", (self.width,), "gamma"), Param(f"bn{self.tag}", (self.width,), "beta"))

    @property
    def running(self):
        """{name: features} of its batch normalisation's running averages: state, not parameters."""
        return {f"mean.{self.tag}": self.width, f"var.{self.tag}": self.width} if self.batch_norm else {}


@dataclass(frozen=True)
class Model:
    layers: tuple
    dropout_input: float  # the probability of dropping each input pixel in training

    @property
    def params(self):
        """Every parameter in the order they are drawn and kept: each layer's weight and bias, then batch
        normalisation's gamma and beta of each layer (the order checkpoints have always had)."""
        return [p for layer in self.layers for p in (layer.weight, layer.bias) if p] + [p for layer in self.layers for p in layer.norm_params]

    @property
    def running(self):
        return {name: width for layer in self.layers for name, width in layer.running.items()}

    @property
    def n_params(self):
        return sum(math.prod(p.shape) for p in self.params)

    @property
    def multiply_adds(self):
        return sum(layer.multiply_adds for layer in self.layers)

    @property
    def activations(self):
        """Numbers one image's forward pass holds: the input, each convolution's maps before pooling and
        each fully connected layer's units (what the memory check counts)."""
        return N_PIXELS + sum(math.prod(layer.conv_shape or layer.out_shape) for layer in self.layers)


def conv_strides(m):
    """The stride of each convolution layer: model.conv_stride, or 1 for every layer when it is empty."""
    return m.conv_stride or [1] * len(m.conv_kernel)


def conv_side(side, kernel, stride, padding):
    """The side of a convolution's maps; 0 when the filter does not fit."""
    return (side + 2 * padding - kernel) // stride + 1 if side + 2 * padding >= kernel else 0


def pool_side(side, pool):
    """The side after pooling (none when pool is None); 0 when the region does not fit."""
    if pool is None:
        return side
    return (side - pool.size) // pool.stride + 1 if side >= pool.size else 0


def describe(m):
    """The Model of cfg.model `m`: its convolution layers (arch 'cnn'), then its fully connected ones. A
    side of 0 in a shape means the maps shrank to nothing: config.validate refuses such a model."""
    layers, shape = [], (1, IMAGE_SIDE, IMAGE_SIDE)
    if m.arch == "cnn":
        pool = Pool(m.pool_type, m.pool, m.pool_stride) if m.pool > 1 else None
        norm = ("pooled" if m.batch_norm_after_pool else "maps") if m.batch_norm else ""
        for l, (c_out, k, s) in enumerate(zip(m.conv_channels, m.conv_kernel, conv_strides(m)), 1):
            c_in, side = shape[0], conv_side(shape[1], k, s, m.conv_padding)
            fan_in, fan_out = c_in * k * k, c_out * k * k
            layers.append(Layer(
                "conv", l, shape, (c_out, pool_side(side, pool), pool_side(side, pool)),
                Param(f"Wc{l}", (c_out, c_in, k, k), "weight", fan_in, fan_out), None if norm else Param(f"bc{l}", (c_out,), "bias"),
                multiply_adds=c_out * fan_in * side * side, transfer=m.transfer, conv_shape=(c_out, side, side),
                kernel=k, stride=s, padding=m.conv_padding, pool=pool, batch_norm=norm,
                dropout=m.dropout_conv[l - 1] if m.dropout_conv else 0.0))
            shape = layers[-1].out_shape
    sizes = [math.prod(shape), *m.hidden, N_CLASSES]
    for l in range(1, len(sizes)):
        hidden = l < len(sizes) - 1
        layers.append(Layer(
            "fc", l, (sizes[l - 1],), (sizes[l],),
            Param(f"W{l}", (sizes[l], sizes[l - 1]), "weight", sizes[l - 1], sizes[l]),
            None if m.batch_norm and hidden else Param(f"b{l}", (sizes[l],), "bias"),
            multiply_adds=sizes[l - 1] * sizes[l],
            transfer=m.transfer if hidden else (None if m.output_transfer == "identity" else m.output_transfer),
            batch_norm="maps" if m.batch_norm and hidden else "", dropout=m.dropout_hidden if hidden else 0.0))
    return Model(tuple(layers), m.dropout_input)


def shrunk(model):
    """The first convolution layer whose maps shrink to nothing, or None."""
    return next((layer for layer in model.layers if layer.kind == "conv" and min(layer.conv_shape[1], layer.out_shape[1]) < 1), None)


# --------------------------------------------------------------------------- #
# The model in words: the summary's rows, one line, the report's sentence      #
# --------------------------------------------------------------------------- #


def operations(layer):
    """What the layer does to an image, in the forward pass's order: ['conv 5x5 stride 2', 'maxpool 2x2
    stride 2', 'batch norm', 'relu']."""
    if layer.kind == "fc":
        ops = ["W z + b"]
    else:
        ops = [f"conv {layer.kernel}x{layer.kernel}" + (f" stride {layer.stride}" if layer.stride > 1 else "")
               + (f" pad {layer.padding}" if layer.padding else "")]
    pool = layer.pool and f"{layer.pool.kind}pool {layer.pool.size}x{layer.pool.size} stride {layer.pool.stride}"
    if layer.batch_norm == "maps":
        ops.append("batch norm")
    if pool and layer.pool.kind == "max":
        ops.append(pool)
    if layer.batch_norm == "pooled":
        ops.append("batch norm")
    if layer.transfer:
        ops.append(layer.transfer)
    if pool and layer.pool.kind == "avg":
        ops.append(pool)
    if layer.dropout:
        ops.append(f"dropout {layer.dropout:g}")
    return ops


def summary_rows(model):
    """(layer, output shape per image, parameters, multiply-adds per image) for each layer, in order."""
    return [(f"{layer.name}: " + " -> ".join(operations(layer)), "x".join(map(str, layer.out_shape)),
             sum(math.prod(p.shape) for p in (layer.weight, layer.bias, *layer.norm_params) if p), layer.multiply_adds)
            for layer in model.layers]


def one_line(model):
    """784 - 200 - 10 for an MLP; 'conv 32 5x5, conv 64 5x5 (average pooling 2x2 stride 2 after each) - 256 - 10' for a CNN."""
    convs = [layer for layer in model.layers if layer.kind == "conv"]
    fcs = [layer for layer in model.layers if layer.kind == "fc"]
    widths = " - ".join(str(d) for d in [fcs[0].in_shape[0], *(layer.out_shape[0] for layer in fcs)])
    if not convs:
        return widths
    conv = ", ".join(f"conv {layer.width} {layer.kernel}x{layer.kernel}" + (f" stride {layer.stride}" if layer.stride > 1 else "")
                     for layer in convs)
    pool = convs[0].pool
    pooling = f"{POOLING_NAMES[pool.kind]} pooling {pool.size}x{pool.size} stride {pool.stride} after each" if pool else "no pooling"
    norm = {"maps": ", batch norm on each convolution's maps", "pooled": ", batch norm on each convolution's pooled maps"}.get(convs[0].batch_norm, "")
    return f"{conv} ({pooling}{norm}) - {widths}"
