"""Assembling a run and taking its steps: the device, the model and optimiser, one update, evaluation.

`build(cfg, device)` is the one way train, sweep, replay, bench and the tests make a
model. A `Trainer` takes the training steps exactly as `nnhw.train` takes them; the
first FINGERPRINT_STEPS of them are recorded (each step's loss, then checksums of
the parameters), so that `nnhw.replay` can later tell whether the code at hand still
computes the same run.
"""

import math
import os
from dataclasses import dataclass

import torch

from . import dist as dist_mod
from . import hessian, models
from .config import DEVICE, ConfigError, feature_map_sides
from .data import N_CLASSES, N_PIXELS, PIXEL_MEAN, PIXEL_STD, Split, passes
from .optim import OPTIMIZERS, is_weight, lr_at, make_optimizer, momentum_at, stability_threshold
from .tape import Tape

FINGERPRINT_STEPS = 20  # a run records the loss of each of its first steps, and the parameters after them


def resolve_device(name):
    """The torch.device that run.device names ('auto': CUDA when there is one); ConfigError for a name
    that is not 'auto', 'cpu', 'cuda' or 'cuda:N', or a CUDA device this machine does not have."""
    if not DEVICE.fullmatch(name):
        raise ConfigError(f"run.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def describe_device(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def memory_need(cfg):
    """(parameters, bytes) of a run: parameters, gradients, the optimiser's buffers and the
    checkpoint's copy, 4 bytes each, plus one batch's activations (forward, backward and a copy)."""
    n_params = sum(math.prod(shape) for shape, _, _ in models.param_shapes(cfg.model).values())
    widths = sum(cfg.model.hidden) + N_CLASSES + N_PIXELS
    if cfg.model.arch == "cnn":
        widths += sum(c * conv * conv for c, (conv, _) in zip(cfg.model.conv_channels, feature_map_sides(cfg.model)))
    copies = 3 + OPTIMIZERS[cfg.optim.optimizer].buffers
    return n_params, 4 * (copies * n_params + 3 * max(cfg.train.batch_size, cfg.eval.batch_size) * widths)


def check_memory(cfg, device):
    """Stop before allocating a model that cannot fit; returns the number of parameters."""
    n_params, need = memory_need(cfg)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > free:
        raise ConfigError(
            f"model: {n_params:,} parameters need about {need / 2**30:.1f} GiB (parameters, gradients, the optimiser's state, "
            f"a checkpoint copy and a batch's activations), more than the {free / 2**30:.1f} GiB free on {device.type}; "
            "use smaller model.hidden or batch sizes"
        )
    return n_params


def build(cfg, device):
    """(params, forward, loss_fn, opt) for cfg on device."""
    check_memory(cfg, device)
    params = models.init_params(cfg.model, cfg.run.seed, device)
    forward = models.make_forward(cfg.model, models.init_running(cfg.model, device))  # the running averages live beside the parameters
    return params, forward, models.make_loss(cfg.model), make_optimizer(cfg.optim, params)


# One seed drives everything: the initialisation draws from `seed` itself (models.init_params), the
# data order and the noise (dropout, augmentation) from streams of their own, offset from it here, and
# the sharpness's points and Lanczos starts from generators of their own that training never touches.
def random_streams(seed, device, rank=0):
    """(order, noise): the CPU generator of the data order, the same on every process, and the
    device generator of dropout and augmentation, one per process."""
    order = torch.Generator().manual_seed(seed + 1)
    noise = torch.Generator(device=device).manual_seed(seed + 2 + 1000 * rank)
    return order, noise


def reseed_noise(noise, seed, rank, step):
    """A fresh noise stream for a run resumed on another kind of device, whose saved state this
    device's generator cannot take: derived from the seed and the step, so a resume is repeatable."""
    noise.manual_seed(seed + 1000 * rank + 2 + 1_000_003 * (step + 1))


@torch.no_grad()
def evaluate(params, forward, loss_fn, split, batch_size, world=None, max_points=0):
    """Average loss and misclassification % over a split (its first max_points only, when > 0), in
    large batches. Under torchrun each process evaluates its shard and one all-reduce adds them up."""
    world = world or dist_mod.World()
    n = len(split) if not max_points else min(max_points, len(split))
    lo, hi = world.shard(n)
    totals = torch.zeros(2, device=split.x.device, dtype=torch.float64)  # loss sum, mistakes
    for i in range(lo, hi, batch_size):
        x, y = split.x[i : min(i + batch_size, hi)], split.y[i : min(i + batch_size, hi)]
        out = forward(params, x)
        totals[0] += loss_fn(out, y).double() * len(y)
        totals[1] += (out.argmax(dim=1) != y).sum()
    loss_sum, wrong = world.sum(totals).tolist()
    return loss_sum / n, 100.0 * wrong / n


def draw_sharpness_points(split, k, seed):
    """The k training points the sharpness is measured on, drawn once from the seed (in the split's
    order); the whole split when it holds no more than k."""
    if k >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed + 3))[:k].sort().values.to(split.x.device)
    return Split(split.x[idx], split.y[idx])


def objective(forward, loss_fn, cfg_optim, points):
    """f(params) -> what training minimises on `points`: the loss, plus (l2/2)||W||^2 as the optimiser adds it."""
    o = cfg_optim

    def f(params):
        loss = loss_fn(forward(params, points.x), points.y)
        if o.l2:
            loss = loss + 0.5 * o.l2 * sum((p * p).sum() for name, p in params.items() if o.l2_bias or is_weight(name))
        return loss

    return f


def sharpness(params, forward, loss_fn, cfg, points, lr, step, momentum=None):
    """The sharpness of the training objective on `points` at params, as history entries: the top eigenvalue
    of its Hessian (nnhw.hessian, Lanczos) and its residual, the stability threshold at rate lr, and each
    weight's own block's top eigenvalue. Each Lanczos start is drawn from the seed and the step alone."""
    f = objective(forward, loss_fn, cfg.optim, points)
    iters, seed = cfg.eval.sharpness_iters, cfg.run.seed + 4 + 1_000_003 * step
    top = hessian.top_eigenvalue(f, params, iters, torch.Generator().manual_seed(seed))
    blocks = hessian.layer_eigenvalues(f, params, iters, torch.Generator().manual_seed(seed + 1))
    return dict(sharpness=top.value, sharpness_residual=top.residual, sharpness_threshold=stability_threshold(cfg.optim, lr, momentum),
                sharpness_layers={name: e.value for name, e in blocks.items()})


def make_train_step(params, forward, loss_fn, opt, world=None, engine="autograd", compile=False):
    """step(x, y, lr, generator=None, share=1.0) -> loss: forward, the Functions' hand-written
    backward, the optimiser's update. No host synchronisation: the loss comes back as a tensor. Under
    torchrun, x is this process's shard, `share` its fraction of the global batch, and the gradients
    are all-reduced. engine 'autograd' lets torch.autograd call the Functions' backward; 'tape' calls
    them itself (nnhw.tape)."""
    tensors = list(params.values())
    world = world or dist_mod.World()

    def forward_loss(x, y, generator):
        return loss_fn(forward(params, x, generator, training=True), y)

    if compile:
        forward_loss = torch.compile(forward_loss)

    def step(x, y, lr, generator=None, share=1.0):
        if len(y) and engine == "tape":
            tape = Tape(tensors)
            loss = loss_fn(forward(params, x, generator, tape.apply, training=True), y, tape.apply)
            grads = tape.gradients(loss, tensors)
        elif len(y):
            loss = forward_loss(x, y, generator)
            grads = torch.autograd.grad(loss, tensors)
        else:  # an empty shard (a global batch smaller than the world) adds nothing
            loss, grads = None, [torch.zeros_like(t) for t in tensors]
        grads = world.reduce_gradients(grads, share)
        opt.step(grads, lr)
        return loss

    return step


class Batches:
    """The training split in this pass's shuffled order, one batch after another."""

    def __init__(self, split, order, device):
        self.split, self.order, self.device = split, order, device
        self.x = self.y = None

    def next(self, state, batch_size, total_points):
        n = len(self.split)
        if state.perm is None or state.pos >= n:  # a new pass: a fresh permutation
            state.perm, state.pos, self.x = torch.randperm(n, generator=self.order), 0, None
        if self.x is None:  # this pass's data in its order, gathered once on the device
            idx = state.perm.to(self.device)
            self.x, self.y = self.split.x[idx], self.split.y[idx]
        b = min(batch_size, n - state.pos, total_points - state.points)
        return self.x[state.pos : state.pos + b], self.y[state.pos : state.pos + b]  # (b, 784), (b,)


def checksums(params):
    """Two sums over every parameter entry, in float64: sum |p| and sum p^2."""
    flat = torch.cat([p.detach().double().reshape(-1) for p in params.values()])
    return dict(abs_sum=flat.abs().sum().item(), sq_sum=flat.square().sum().item())


@dataclass
class Trainer:
    """A model, its optimiser and its random streams, and `step`, which takes the training steps
    exactly as nnhw.train does: the learning rate at this point of the schedule, the next batch of
    the pass, this process's shard of it, augmentation, and the update."""

    cfg: object
    params: dict
    forward: object
    loss_fn: object
    opt: object
    order: torch.Generator
    noise: torch.Generator
    batches: Batches
    train_step: object
    n_train: int
    total_points: int
    world: dist_mod.World
    fingerprint_steps: int = FINGERPRINT_STEPS
    sharpness_points: Split | None = None  # eval.sharpness_points of the training split, when the run measures sharpness

    @classmethod
    def start(cls, cfg, device, train_split, world=None):
        world = world or dist_mod.World()
        params, forward, loss_fn, opt = build(cfg, device)
        order, noise = random_streams(cfg.run.seed, device, world.rank)
        train_step = make_train_step(params, forward, loss_fn, opt, world, cfg.train.engine, cfg.train.compile)
        n = len(train_split)
        probe = draw_sharpness_points(train_split, cfg.eval.sharpness_points, cfg.run.seed) if cfg.eval.sharpness_every else None
        return cls(cfg, params, forward, loss_fn, opt, order, noise, Batches(train_split, order, device), train_step, n,
                   max(1, round(cfg.train.epochs * n)), world, sharpness_points=probe)

    def lr(self, points):
        return lr_at(self.cfg.optim, passes(points, self.n_train), self.cfg.train.epochs)

    def step(self, state):
        """One update; advances `state` (a checkpoint.TrainState) and returns (the points it used, its
        learning rate).
        The first `fingerprint_steps` add their loss to state.fingerprint, then the checksums."""
        t = self.cfg.train
        lr = self.lr(state.points)
        if self.cfg.optim.momentum_ramp:
            self.opt.momentum = momentum_at(self.cfg.optim, passes(state.points, self.n_train))
        x, y = self.batches.next(state, t.batch_size, self.total_points)
        b, (lo, hi) = len(y), self.world.shard(len(y))
        x, y = x[lo:hi], y[lo:hi]  # this process's part of the batch (all of it without torchrun)
        if t.augment != "none":
            background = -PIXEL_MEAN / PIXEL_STD if self.cfg.data.standardize else 0.0  # an empty pixel
            x = models.augment(x, t, self.noise, background)
        loss = self.train_step(x, y, lr, self.noise, (hi - lo) / b)
        state.step, state.pos, state.points = state.step + 1, state.pos + b, state.points + b
        fp = state.fingerprint
        if "checksums" not in fp:
            fp.setdefault("losses", []).append(None if loss is None else loss.item())  # .item(): these steps only
            if len(fp["losses"]) == self.fingerprint_steps or state.points >= self.total_points:
                fp["checksums"] = checksums(self.params)
        return b, lr
