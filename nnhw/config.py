"""Configuration: dataclass defaults <- TOML file <- `section.key=value` overrides, validated.

The dataclasses below are the single source of every default, its type, its
allowed range and its help text; docs/config.md is generated from them
(`python -m nnhw.config > docs/config.md`, and a test keeps the two equal).
Anything wrong raises ConfigError with one line that names the key; `nnhw.train`
turns that into exit code 2.
"""

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from . import layers
from .command import NnhwError, Parser, run_command
from .data import IMAGE_SIDE, N_TRAIN, N_TRAIN_DEV


class ConfigError(NnhwError, ValueError):
    """A config file, key or value that nnhw cannot use; the message is one line."""


def opt(default, help, *, choices=None, min=None, gt=None, lt=None, le=None):
    """A config field: its default, help text and allowed values."""
    meta = dict(help=help, choices=choices, min=min, gt=gt, lt=lt, le=le)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


TRANSFER_NAMES = ["sigmoid", "tanh", "relu", "identity", "square"]
LOSS_NAMES = ["cross_entropy", "squared_error"]
INIT_NAMES = ["normal", "uniform", "xavier", "he", "zeros"]
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,4})?")
FLOAT32_MAX = 3.4028234663852886e38  # parameters are float32: larger values would be inf
# Names people reach for from other trainers, mapped to ours (a typo's nearest key is found by spelling).
ALIASES = {"learning_rate": "optim.lr", "weight_decay": "optim.l2", "l2_lambda": "optim.l2", "lambda": "optim.l2",
           "batchsize": "train.batch_size", "bs": "train.batch_size", "epoch": "train.epochs", "n_epochs": "train.epochs",
           "lr_schedule": "optim.schedule", "scheduler": "optim.schedule", "activation": "model.transfer", "layers": "model.hidden"}


@dataclass
class RunConfig:
    name: str = opt("", "run name; the folder is <log_dir>/<name>/<run id>. Empty: the config file's stem. Letters, digits, '.', '_', '-' only")
    log_dir: str = opt("tb_logs", "folder that holds every run's TensorBoard logs, checkpoints and summary")
    seed: int = opt(0, "one seed for initialisation, data order and every other random choice", min=0, le=2**62)
    device: str = opt("auto", "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'")
    dist_timeout: int = opt(300, "torchrun only: seconds a process waits for its peers before it stops with an error", min=1, le=10**7)


@dataclass
class DataConfig:
    root: str = opt("data", "folder holding MNIST/raw/ (torchvision's layout); the environment variable NNHW_DATA_ROOT overrides it")
    download: bool = opt(False, "download MNIST with torchvision into root when the files are missing")
    train_split: str = opt("train", "'train': the first 50,000 official training images (dev = the last 10,000); 'train+dev': all 60,000", choices=["train", "train+dev"])
    standardize: bool = opt(False, "subtract the MNIST training pixels' mean (0.1307) and divide by their std (0.3081); else pixels stay in [0, 1]")
    train_points: int = opt(0, "train on the first this many points of the training split only (0: all of it); with train.batch_size equal to it, each step is full-batch gradient descent", min=0, le=N_TRAIN_DEV)
    bag: float = opt(1.0, "fraction of the training split each run trains on, drawn at random from run.seed, so that each seed of a set sees its own subset (bagging, for the committee); 1: all of it", gt=0.0, le=1.0)


@dataclass
class ModelConfig:
    arch: str = opt("mlp", "'mlp' (fully connected layers only) or 'cnn' (conv + pooling layers, then the fully connected ones)", choices=["mlp", "cnn"])
    hidden: list[int] = opt([], "widths of the fully connected hidden layers; [] with arch 'mlp' is softmax regression (a linear model)")
    transfer: str = opt("sigmoid", "transfer function of the hidden layers", choices=TRANSFER_NAMES)
    output_transfer: str = opt("identity", "transfer function on the k = 10 outputs", choices=TRANSFER_NAMES)
    loss: str = opt("cross_entropy", "'cross_entropy' (softmax on the outputs) or 'squared_error' (against one-hot targets, averaged over samples and classes)", choices=LOSS_NAMES)
    label_smoothing: float = opt(0.0, "with loss 'cross_entropy', train against (1 - label_smoothing) onehot(y) + label_smoothing / k instead of onehot(y) (label smoothing, Szegedy et al. 2016); evaluation's losses stay the plain cross-entropy", min=0.0, lt=1.0)
    init: str = opt("xavier", "weight initialisation: 'normal' (std = init_scale), 'uniform' (+-init_scale), 'xavier' (Glorot normal times init_scale), 'he' (normal, std sqrt(2/fan_in) times init_scale), 'zeros'", choices=INIT_NAMES)
    init_scale: float = opt(1.0, "scale of the initialisation (its std for 'normal', a multiplier for 'xavier' and 'he')", min=0.0, le=FLOAT32_MAX)
    bias_init: float = opt(0.0, "initial value of every bias", min=-FLOAT32_MAX, le=FLOAT32_MAX)
    conv_channels: list[int] = opt([32, 64], "cnn: output channels of each convolution layer")
    conv_kernel: list[int] = opt([5, 5], "cnn: filter size (k x k) of each convolution layer")
    conv_padding: int = opt(0, "cnn: zero padding on each side of every convolution", min=0)
    conv_stride: list[int] = opt([], "cnn: the stride of each convolution layer (a stride-2 convolution can stand in for pooling); [] is 1 for every layer")
    pool: int = opt(2, "cnn: pooling region (p x p) after each convolution; 1 is no pooling", min=1)
    pool_stride: int = opt(2, "cnn: stride of the pooling", min=1)
    pool_type: str = opt("avg", "cnn: 'avg' (mean of each region) or 'max' (largest entry of each region)", choices=["avg", "max"])
    dropout_input: float = opt(0.0, "probability of dropping each input pixel in training (0 is off)", min=0.0, lt=1.0)
    dropout_hidden: float = opt(0.0, "probability of dropping each fully connected hidden unit in training (0 is off)", min=0.0, lt=1.0)
    dropout_conv: list[float] = opt([], "cnn: for each convolution layer, the probability of dropping each entry of its feature maps (after its pooling and transfer function) in training; [0, 0.4] drops only after the second layer, [] nowhere", min=0.0, lt=1.0)
    batch_norm: bool = opt(False, "batch normalisation after every convolution and every fully connected hidden layer, before its transfer function: the batch's statistics in training, running averages in evaluation; adds gamma and beta per feature (parameters gc1, bnc1, g1, bn1, ...) and the running averages (state, checkpointed), and takes away the bias of each layer it follows (beta is its bias)")
    batch_norm_after_pool: bool = opt(False, "cnn with max pooling: normalise each convolution's pooled maps (convolution, pooling, batch normalisation, transfer function) instead of its whole maps: 1/pool^2 of the values to normalise. Max pooling commutes with each channel's affine map when gamma > 0, so the model differs only in the statistics, taken over the pooled values")
    batch_norm_momentum: float = opt(0.1, "how far each training step moves the running averages towards the batch's statistics (torch's convention)", gt=0.0, le=1.0)


@dataclass
class OptimConfig:
    optimizer: str = opt("sgd", "'sgd' (momentum SGD) or 'adam' (Adam: running means of the gradient and its square)", choices=["sgd", "adam"])
    lr: float = opt(0.1, "learning rate (step size) at the start of training, or at the end of the warm-up", gt=0.0)
    momentum: float = opt(0.9, "heavy-ball momentum mu in v <- mu v + g; w <- w - lr v (0 is plain SGD); for 'adam', beta1 of the gradient's running mean", min=0.0, lt=1.0)
    beta2: float = opt(0.999, "'adam': beta2 of the running mean of the squared gradient", min=0.0, lt=1.0)
    eps: float = opt(1e-8, "'adam': added to the root of the squared gradient's mean, so no step divides by 0 (at least 1e-30, which float32 holds)", min=1e-30)
    momentum_start: float = opt(0.5, "'sgd' with momentum_ramp > 0: the momentum at the start of the ramp", min=0.0, lt=1.0)
    momentum_ramp: float = opt(0.0, "'sgd': passes over the training split over which the momentum climbs linearly from momentum_start to momentum, then stays (Srivastava et al. 2014's MNIST nets end at 0.95; their own example config ramps 0.5 to 0.99); 0 is off", min=0.0, le=1e6)
    l2: float = opt(0.0, "lambda of the L2 penalty (lambda/2)||W||^2 on the weights", min=0.0)
    l2_bias: bool = opt(False, "apply the L2 penalty to the biases too")
    max_norm: float = opt(0.0, "max-norm c: after every update each unit's incoming weights (a row of W, a whole conv filter) are scaled back to norm <= c (0 is off)", min=0.0)
    schedule: str = opt("constant", "learning-rate schedule: 'constant', 'step' (times gamma at each milestone), 'exponential' (times gamma after each pass, stepwise), 'cosine' or 'linear' (down to lr * final_fraction at the end)", choices=["constant", "step", "exponential", "cosine", "linear"])
    milestones: list[float] = opt([], "passes over the training split (train.epochs' unit) at which the 'step' schedule multiplies the rate by gamma")
    gamma: float = opt(0.1, "factor of the 'step' schedule at each milestone, and of the 'exponential' schedule after each pass", gt=0.0, le=1.0)
    final_fraction: float = opt(0.0, "the 'cosine' and 'linear' schedules end at lr * final_fraction", min=0.0, le=1.0)
    ema: float = opt(0.0, "decay of an exponential moving average of the parameters and of batch normalisation's running averages, taken after every update (0.999 averages over about the last thousand steps); evaluation, the summary, the committee and the checkpoint read the average; 0 is off", min=0.0, lt=1.0)
    warmup: float = opt(0.0, "fraction of the run over which the rate climbs linearly from 0 to lr before the schedule starts; with 'linear' or 'cosine' this is the one-cycle schedule", min=0.0, lt=1.0)


@dataclass
class TrainConfig:
    batch_size: int = opt(100, "mini-batch size (1 is the homework's one-point-at-a-time SGD)", min=1)
    epochs: float = opt(10.0, "passes over the training split (fractions allowed)", gt=0.0, le=1e6)
    engine: str = opt("autograd", "who runs the Functions' backward: 'autograd' (torch.autograd) or 'tape' (nnhw.tape, reverse mode written out; much less overhead per step, the cheap path for batch size 1)", choices=["autograd", "tape"])
    compile: bool = opt(False, "compile the forward pass and loss with torch.compile (engine 'autograd' only). Its tracer stops at every nnhw Function, since each defines a forward-mode rule (jvp), which torch.compile does not trace: each Function runs as without it, so the step computes the same values, no faster, after tens of seconds of compiling")
    augment: str = opt("none", "data augmentation of each training batch on the device: 'none', 'shift' (random translations), 'affine' (translation, rotation and scaling) or 'elastic' (affine, then an elastic distortion)", choices=["none", "shift", "affine", "elastic"])
    augment_shift: float = opt(2.0, "largest translation in pixels, each direction", min=0.0, le=float(IMAGE_SIDE))
    augment_rotate: float = opt(10.0, "'affine', 'elastic': largest rotation in degrees", min=0.0, le=180.0)
    augment_scale: float = opt(0.1, "'affine', 'elastic': largest relative change of scale", min=0.0, lt=1.0)
    augment_off_last: float = opt(0.0, "passes at the end of the run trained on the images as they are, augmentation off (the net settles on the real images once the rate is low); 0: augmented to the end", min=0.0, le=1e6)
    adversarial: str = opt("none", "an adversarial term added to the loss, from a second pass at moved images: 'vat' (virtual adversarial training, Miyato et al. 2018: the KL divergence between the outputs at x and at x + r, r of L2 norm adversarial_eps in the direction that moves them most, found by one power-iteration step; needs no label) or 'fgsm' (Goodfellow et al. 2015: the loss at x + adversarial_eps sign(grad_x loss)); the moved passes normalise by their batch's statistics without moving the running averages", choices=["none", "vat", "fgsm"])
    adversarial_eps: float = opt(2.0, "'vat': the L2 norm of each image's perturbation; 'fgsm': the largest change of each pixel; in pixel units (0 black, 1 white) before standardisation", gt=0.0, le=1000.0)
    adversarial_weight: float = opt(1.0, "the adversarial term's weight beside the loss", gt=0.0, le=1000.0)
    vat_xi: float = opt(1e-6, "'vat': L2 norm of the random probe whose gradient finds the most sensitive direction, in pixel units (Miyato et al. use 1e-6 on images whose background is 0; on standardised images float32 rounds a probe under about 1e-4 away)", gt=0.0, le=1000.0)
    elastic_alpha: float = opt(34.0, "'elastic': scale in pixels of the displacement field (Simard et al. 2003 use 34)", min=0.0, le=1000.0)
    elastic_sigma: float = opt(4.0, "'elastic': std in pixels of the Gaussian that smooths the field (Simard et al. 2003 use 4; below 0.1 px it smooths nothing)", min=0.1, le=float(IMAGE_SIDE))


@dataclass
class EvalConfig:
    every: int = opt(12500, "evaluate train, dev and test every this many training points touched (12,500 is a quarter epoch)", min=1)
    batch_size: int = opt(1000, "batch size of evaluation (no effect on the errors, only on speed and memory; on a CPU, batches whose activations fit in cache run fastest: 1,000 for MLPs, a few hundred for the CNN)", min=1)
    max_points: int = opt(0, "evaluate on the first this many points of each split only (0: the whole split, as every result needs); for quick looks and tests, where a thousand images show what 70,000 do", min=0)
    train_points: int = opt(0, "evaluate the training split on its first this many points only, at every evaluation but the last, which reads all of it (0: all of it every time); the training curve is then an estimate, and evaluation costs about the training split's share less", min=0)
    sharpness_every: int = opt(0, "measure the sharpness (the top eigenvalue of the training loss's Hessian, L2 term included, by Lanczos; nnhw.hessian) and each weight's own block's at every this many evaluations, the first included (0: never). Logged beside the stability threshold 2/lr, (2 + 2 momentum)/lr with momentum ('sgd'); with 'adam', the preconditioned sharpness too, the top eigenvalue of P^(-1/2) H P^(-1/2) with P = sqrt(v^) + eps from Adam's state, beside its threshold (2 + 2 beta1)/(lr (1 - beta1)) (Cohen et al. 2022); not with dropout, whose random mask would make the Hessian random", min=0)
    sharpness_points: int = opt(2000, "the sharpness is measured on this many training points, drawn once from run.seed (all of them when the training split is smaller), unaugmented, in one batch", min=1, le=N_TRAIN_DEV)
    sharpness_iters: int = opt(20, "Lanczos steps (Hessian-vector products) per eigenvalue; each measurement takes this many for the whole Hessian and as many for each weight's block", min=1, le=200)
    trace_samples: int = opt(0, "at each sharpness measurement, also the trace of the Hessian, by Hutchinson's estimator from this many random +-1 vectors (a Hessian-vector product each), with its standard error; 0: off", min=0, le=100000)
    density_iters: int = opt(0, "at each sharpness measurement, also the Hessian's eigenvalue density by stochastic Lanczos quadrature, this many Lanczos steps from each of eval.density_runs random starts; density.png shows the first and the last; 0: off", min=0, le=200)
    density_runs: int = opt(2, "random starts of the eigenvalue density, averaged", min=1, le=100)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def _suggest(word, options):
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(options)}"


def _describe(value):
    return f"{type(value).__name__} {value!r}"


def _coerce(key, ftype, value):
    """Check a value's type against the field's annotation; ints are accepted as floats."""
    origin = typing.get_origin(ftype)
    if origin is list:
        (item_type,) = typing.get_args(ftype)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {item_type.__name__}, got {_describe(value)}")
        return [_coerce(f"{key}[{i}]", item_type, v) for i, v in enumerate(value)]
    if ftype is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, ftype) or (ftype is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {ftype.__name__}, got {_describe(value)}")
    if ftype is float and not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if ftype is str and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{key}: control characters (newlines, tabs, NUL) cannot go into a name or a path, got {value!r}")
    return value


def _check_range(key, value, meta):
    items = value if isinstance(value, list) else [value]
    for v in items:
        if meta["choices"] is not None and v not in meta["choices"]:
            raise ConfigError(f"{key}: unknown value {v!r}{_suggest(str(v), meta['choices'])}")
        if meta["min"] is not None and v < meta["min"]:
            raise ConfigError(f"{key}: must be >= {meta['min']}, got {v!r}")
        if meta["gt"] is not None and v <= meta["gt"]:
            raise ConfigError(f"{key}: must be > {meta['gt']}, got {v!r}")
        if meta["lt"] is not None and v >= meta["lt"]:
            raise ConfigError(f"{key}: must be < {meta['lt']}, got {v!r}")
        if meta["le"] is not None and v > meta["le"]:
            raise ConfigError(f"{key}: must be <= {meta['le']}, got {v!r}")


def _set(cfg, section, key, value):
    if section not in SECTIONS:
        raise ConfigError(f"unknown section [{section}]{_suggest(section, SECTIONS)}")
    sec = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(sec)}
    if key not in fields and key in ALIASES:
        raise ConfigError(f"unknown key {section}.{key}; did you mean '{ALIASES[key]}'?")
    if key not in fields:
        all_keys = [f"{s}.{k.name}" for s in SECTIONS for k in dataclasses.fields(SECTIONS[s]())]
        raise ConfigError(f"unknown key {section}.{key}{_suggest(f'{section}.{key}', all_keys)}")
    f = fields[key]
    hints = typing.get_type_hints(type(sec))
    full = f"{section}.{key}"
    value = _coerce(full, hints[key], value)
    _check_range(full, value, f.metadata)
    setattr(sec, key, value)


def _apply(cfg, table, where):
    for section, body in table.items():
        if not isinstance(body, dict):
            if section in SECTIONS:
                raise ConfigError(f"{where}: [{section}] must be a table of keys")
            raise ConfigError(f"{where}: unknown top-level key '{section}'{_suggest(section, SECTIONS)}")
        for key, value in body.items():
            _set(cfg, section, key, value)


def parse_override(text):
    """'section.key=value' with value in TOML syntax; a bare word is taken as a string."""
    m = re.fullmatch(r"\s*([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)\s*=(.*)", text, flags=re.S)
    if not m:
        raise ConfigError(f"bad override {text!r}: expected section.key=value, for example optim.lr=0.05")
    section, key, raw = m.group(1), m.group(2), m.group(3).strip()
    if raw == "":
        raise ConfigError(f"bad override {text!r}: no value after '='")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if not re.fullmatch(r"[^\s\"'\[\]{},=#]+", raw):
            raise ConfigError(f"bad override {text!r}: {raw!r} is not a TOML value (quote strings: key=\"text\")") from None
        value = raw
    return section, key, value


def apply_overrides(cfg, overrides):
    """Apply 'section.key=value' strings to cfg and validate the result."""
    for text in overrides:
        section, key, value = parse_override(text)
        _set(cfg, section, key, value)
    return validate(cfg)


def validate(cfg):
    """Checks that span several keys."""
    if cfg.run.name and not RUN_NAME.fullmatch(cfg.run.name):
        raise ConfigError(
            f"run.name: {cfg.run.name!r} cannot name a folder inside run.log_dir: start with a letter or digit, "
            "then use letters, digits, '.', '_' and '-' only"
        )
    if not DEVICE.fullmatch(cfg.run.device):
        raise ConfigError(f"run.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N' (N a device number), got {cfg.run.device!r}")
    if any(w < 1 for w in cfg.model.hidden):
        raise ConfigError(f"model.hidden: every width must be >= 1, got {cfg.model.hidden}")
    m = cfg.model
    if m.arch == "cnn":
        if len(m.conv_kernel) != len(m.conv_channels) or not m.conv_channels:
            raise ConfigError(f"model.conv_kernel: needs one size per entry of model.conv_channels {m.conv_channels}, got {m.conv_kernel}")
        if any(c < 1 for c in m.conv_channels) or any(k < 1 for k in m.conv_kernel):
            raise ConfigError("model.conv_channels, model.conv_kernel: every entry must be >= 1")
        if m.conv_stride and (len(m.conv_stride) != len(m.conv_kernel) or any(not 1 <= s <= IMAGE_SIDE for s in m.conv_stride)):
            raise ConfigError(f"model.conv_stride: needs one stride from 1 to {IMAGE_SIDE} per convolution layer (or [] for 1 everywhere), "
                              f"got {m.conv_stride} for {len(m.conv_kernel)} layers")
        if m.dropout_conv and len(m.dropout_conv) != len(m.conv_channels):
            raise ConfigError(f"model.dropout_conv: needs one probability per convolution layer (or [] for none), "
                              f"got {m.dropout_conv} for {len(m.conv_channels)} layers")
        if layers.shrunk(layers.describe(m)) is not None:
            raise ConfigError(
                f"model.conv_kernel: the feature maps shrink to nothing with kernels {m.conv_kernel}, "
                f"padding {m.conv_padding}, pool {m.pool} stride {m.pool_stride}"
            )
        if m.batch_norm_after_pool and not (m.batch_norm and m.pool > 1 and m.pool_type == "max"):
            raise ConfigError("model.batch_norm_after_pool: needs model.batch_norm = true and max pooling (model.pool > 1, "
                              f"pool_type 'max'), got batch_norm {str(m.batch_norm).lower()}, pool {m.pool}, pool_type '{m.pool_type}'")
        if m.pool > 1 and m.pool_type == "max" and m.transfer == "square":
            raise ConfigError("model.pool_type: 'max' pools before the transfer function, which needs a nondecreasing one; "
                              "'square' is not: use pool_type 'avg' or another transfer")
    if m.batch_norm and (cfg.train.batch_size < 2 or 0 < cfg.data.train_points < 2):
        raise ConfigError(f"model.batch_norm: normalises by each batch's variance, and a batch of one has none; "
                          f"use train.batch_size >= 2 (got {cfg.train.batch_size}) or model.batch_norm = false")
    if m.label_smoothing and m.loss != "cross_entropy":
        raise ConfigError(f"model.label_smoothing: smooths the cross-entropy's target; loss '{m.loss}' has none, set it to 0")
    if cfg.train.compile and cfg.train.engine == "tape":
        raise ConfigError("train.compile: torch.compile needs train.engine = 'autograd' (the tape runs outside torch)")
    if cfg.train.adversarial != "none" and (cfg.train.engine == "tape" or cfg.train.compile):
        raise ConfigError(f"train.adversarial: '{cfg.train.adversarial}' takes a gradient in the input inside the step, which runs through "
                          "torch.autograd uncompiled; set train.engine = 'autograd' and train.compile = false")
    if cfg.train.adversarial == "vat" and (m.dropout_input or m.dropout_hidden or any(m.dropout_conv)):
        raise ConfigError("train.adversarial: 'vat' compares the outputs at x and at x + r, which dropout's fresh masks would make differ "
                          "by themselves; set model.dropout_input and model.dropout_hidden to 0 and model.dropout_conv to []")
    if cfg.data.train_split == "train" and cfg.data.train_points > N_TRAIN:
        raise ConfigError(f"data.train_points: the 'train' split holds {N_TRAIN:,} points, got {cfg.data.train_points}; use 'train+dev' for up to {N_TRAIN_DEV:,}")
    n_train = cfg.data.train_points or (N_TRAIN if cfg.data.train_split == "train" else N_TRAIN_DEV)
    if round(cfg.data.bag * n_train) < 1:
        raise ConfigError(f"data.bag: {cfg.data.bag:g} of {n_train:,} training points keeps none; raise it to at least {1 / n_train:.2g}")
    if cfg.eval.sharpness_every and (m.dropout_input or m.dropout_hidden or any(m.dropout_conv)):
        raise ConfigError("eval.sharpness_every: the sharpness of a loss with dropout is random (a fresh mask at every product); "
                          "set model.dropout_input and model.dropout_hidden to 0 and model.dropout_conv to [], or eval.sharpness_every to 0")
    if (cfg.eval.trace_samples or cfg.eval.density_iters) and not cfg.eval.sharpness_every:
        raise ConfigError("eval.trace_samples, eval.density_iters: measured at the sharpness evaluations; set eval.sharpness_every too")
    if cfg.optim.momentum_ramp and cfg.optim.optimizer != "sgd":
        raise ConfigError("optim.momentum_ramp: ramps the heavy-ball momentum of 'sgd'; Adam's beta1 does not ramp, set it to 0")
    if cfg.train.augment_off_last and cfg.train.augment_off_last >= cfg.train.epochs:
        raise ConfigError(f"train.augment_off_last: {cfg.train.augment_off_last:g} passes without augmentation leave none of the run's "
                          f"{cfg.train.epochs:g} with it; use fewer, or train.augment = 'none'")
    if cfg.optim.milestones != sorted(cfg.optim.milestones):
        raise ConfigError(f"optim.milestones: must be increasing, got {cfg.optim.milestones}")
    if cfg.optim.schedule == "step" and not cfg.optim.milestones:
        raise ConfigError("optim.milestones: the 'step' schedule needs at least one milestone epoch")
    return cfg


def load(path=None, overrides=()):
    """Defaults <- the TOML file at `path` <- overrides; returns a validated Config."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: malformed TOML: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read: {e}") from None
        _apply(cfg, table, str(path))
        if not cfg.run.name:
            cfg.run.name = path.stem
    if not cfg.run.name:
        cfg.run.name = "run"
    return apply_overrides(cfg, overrides)


def to_dict(cfg):
    return dataclasses.asdict(cfg)


def flatten(cfg):
    """{'section.key': value} for every key."""
    return {f"{section}.{key}": value for section, body in to_dict(cfg).items() for key, value in body.items()}


WHERE_KEYS = ("run.log_dir", "run.name", "data.root", "data.download", "run.device")  # say where a run goes, not what it is


def recipe(cfg):
    """{'section.key': value} less WHERE_KEYS: what makes one run the same arithmetic as another."""
    return {key: value for key, value in flatten(cfg).items() if key not in WHERE_KEYS}


def digest(recipe):
    """A short name for a recipe: the first 16 hex digits of the SHA-256 of its keys and values."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def with_recipe(cfg, recipe):
    """A copy of cfg with every key of `recipe` set to its value, validated: a run's recipe, with where
    cfg says it goes. ConfigError for a key or value this nnhw does not know."""
    out = copy.deepcopy(cfg)
    for key, value in recipe.items():
        section, _, name = key.partition(".")
        _set(out, section, name, value)
    return validate(out)


def from_dict(table):
    cfg = Config()
    _apply(cfg, table, "saved config")
    return validate(cfg)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def to_toml(cfg):
    """The resolved config as TOML, each key with its help text; `load` reads it back."""
    lines = []
    for section in SECTIONS:
        sec = getattr(cfg, section)
        lines.append(f"[{section}]")
        for f in dataclasses.fields(sec):
            lines.append(f"{f.name} = {_toml_value(getattr(sec, f.name))}  # {f.metadata['help']}")
        lines.append("")
    return "\n".join(lines)


def _bounds(meta):
    """'>= 0, < 1' from a field's allowed range; '' when any value of its type will do."""
    parts = [f"{op} {meta[key]:g}" if isinstance(meta[key], float) else f"{op} {meta[key]}" for key, op in (("min", ">="), ("gt", ">"), ("lt", "<"), ("le", "<=")) if meta[key] is not None]
    return ", ".join(parts)


def markdown():
    """docs/config.md: every key with its default, its allowed values and its help, one table per section."""
    lines = [
        "# Config reference",
        "",
        "Generated by `python -m nnhw.config > docs/config.md` from the dataclasses in `nnhw/config.py`,",
        "the single source of every default; a test keeps this file equal to them. A run resolves its",
        "config as defaults <- the TOML file <- `section.key=value` overrides on the command line, and",
        "writes the result to its folder as `config.toml`. A wrong key, type or value stops the run",
        "before it starts, with one line that names the key (exit 2).",
    ]
    for section, factory in SECTIONS.items():
        lines += ["", f"## [{section}]", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(factory()):
            default = _toml_value(getattr(factory(), f.name))
            allowed = ", ".join(f"`{_toml_value(c)}`" for c in f.metadata["choices"]) if f.metadata["choices"] else _bounds(f.metadata)
            lines.append(f"| `{section}.{f.name}` | `{default}` | {allowed} | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"


def config_command(argv):
    Parser(prog="python -m nnhw.config", description="Print the config reference (docs/config.md) from the dataclasses.").parse_args(argv)
    sys.stdout.write(markdown())
    sys.stdout.flush()
    return 0


def main(argv=None):
    """`python -m nnhw.config`: the exit code (nnhw.command)."""
    return run_command("nnhw.config", config_command, argv)


if __name__ == "__main__":
    sys.exit(main())
