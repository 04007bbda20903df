"""A run's model and optimiser, assembled once, and the training steps it takes.

`build(cfg, device)` is the one way train, sweep, replay, bench and the tests make a model: it reads
the model's description (nnhw.layers) once and makes the parameters, the running averages of batch
normalisation, the forward pass, the loss and the optimiser on the run's device. A `Trainer` takes the
training steps exactly as `nnhw.train` takes them and owns everything a checkpoint holds besides its
bookkeeping (checkpoint.TrainState): it saves and restores its own tensors and random streams. The
first FINGERPRINT_STEPS steps are recorded (the initial weights' loss on the first batch, each step's
loss, then checksums of the parameters, and a digest of how the machine that took them rounds), so
that `nnhw.replay` can later tell whether the code at hand still computes the same run.
"""

from dataclasses import dataclass

import torch

from . import config as config_mod
from . import dist as dist_mod
from . import layers, models
from .checkpoint import FORMAT
from .data import PIXEL_MEAN, PIXEL_STD, Split, passes
from .device import check_memory, rounding_probe
from .evaluate import evaluate
from .optim import WeightAverage, lr_at, make_optimizer, momentum_at
from .rundir import RunError
from .tape import Tape

FINGERPRINT_STEPS = 20  # a run records the loss of each of its first steps, and the parameters after them


@dataclass
class Net:
    """A model built for a device: its description, parameters, running averages (batch normalisation's
    state; {} without it), forward pass, the loss evaluation reads and the objective trained (which
    differ with model.label_smoothing), optimiser, and with optim.ema the weights' moving
    average and the forward pass that normalises by its running averages, and with train.adversarial its term."""

    model: layers.Model
    params: dict
    running: dict
    forward: object
    loss_fn: object
    train_loss_fn: object
    opt: object
    average: WeightAverage | None = None
    average_forward: object = None
    adversarial: models.Adversarial | None = None

    def evaluated(self):
        """(params, forward) that evaluation reads: the moving average's when optim.ema is on."""
        return (self.average.params, self.average_forward) if self.average else (self.params, self.forward)


def build(cfg, device):
    """The Net of cfg on device, after checking that it fits there."""
    model = layers.describe(cfg.model)
    check_memory(cfg, model, device)
    params = models.init_params(model, cfg.model, cfg.run.seed, device)
    running = models.init_running(model, device)
    forward = models.make_forward(model, running, cfg.model.batch_norm_momentum)
    loss_fn, train_loss_fn = models.make_loss(cfg.model), models.make_loss(cfg.model, training=True)
    net = Net(model, params, running, forward, loss_fn, train_loss_fn, make_optimizer(cfg.optim, params))
    net.adversarial = models.make_adversarial(cfg.train, forward, train_loss_fn, 1 / PIXEL_STD if cfg.data.standardize else 1.0)
    if cfg.optim.ema:
        net.average = WeightAverage(cfg.optim.ema, params, running)
        net.average_forward = models.make_forward(model, net.average.running, cfg.model.batch_norm_momentum)
    return net


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


def make_train_step(net, world=None, engine="autograd", compile=False):
    """step(x, y, lr, generator=None, share=1.0) -> loss: forward, the Functions' hand-written
    backward, the optimiser's update. No host synchronisation: the loss comes back as a tensor. Under
    torchrun, x is this process's shard, `share` its fraction of the global batch, and the gradients
    are all-reduced. engine 'autograd' lets torch.autograd call the Functions' backward; 'tape' calls
    them itself (nnhw.tape)."""
    params, forward, objective, opt, adversarial = net.params, net.forward, net.train_loss_fn, net.opt, net.adversarial
    tensors = list(params.values())
    world = world or dist_mod.World()

    def forward_loss(x, y, generator):
        if adversarial:  # FGSM reads the clean loss's gradient in the image
            x = x.detach().requires_grad_(adversarial.input_grad)
        out = forward(params, x, generator, training=True)
        loss = objective(out, y)
        return loss + adversarial.term(params, x, y, out, loss, generator) if adversarial else loss  # the term: a second pass at moved images

    if compile:
        forward_loss = torch.compile(forward_loss)

    def step(x, y, lr, generator=None, share=1.0):
        if len(y) and engine == "tape":
            tape = Tape(tensors)
            loss = objective(forward(params, x, generator, tape.apply, training=True), y, tape.apply)
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
    """A Net, its random streams and its data order, and `step`, which takes the training steps exactly
    as nnhw.train does: the learning rate at this point of the schedule, the next batch of the pass,
    this process's shard of it, augmentation, and the update."""

    cfg: object
    net: Net
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
        from .sharpness import draw_points

        world = world or dist_mod.World()
        net = build(cfg, device)
        order, noise = random_streams(cfg.run.seed, device, world.rank)
        train_step = make_train_step(net, world, cfg.train.engine, cfg.train.compile)
        n = len(train_split)
        probe = draw_points(train_split, cfg.eval.sharpness_points, cfg.run.seed) if cfg.eval.sharpness_every else None
        return cls(cfg, net, order, noise, Batches(train_split, order, device), train_step, n,
                   max(1, round(cfg.train.epochs * n)), world, sharpness_points=probe)

    @property
    def params(self):
        return self.net.params

    def lr(self, points):
        return lr_at(self.cfg.optim, passes(points, self.n_train), self.cfg.train.epochs)

    def step(self, state):
        """One update; advances `state` (a checkpoint.TrainState) and returns (the points it used, its
        learning rate).
        The first `fingerprint_steps` add their loss to state.fingerprint, then the checksums."""
        t = self.cfg.train
        lr = self.lr(state.points)
        if self.cfg.optim.momentum_ramp:
            self.net.opt.momentum = momentum_at(self.cfg.optim, passes(state.points, self.n_train))
        x, y = self.batches.next(state, t.batch_size, self.total_points)
        b, (lo, hi) = len(y), self.world.shard(len(y))
        x, y = x[lo:hi], y[lo:hi]  # this process's part of the batch (all of it without torchrun)
        if t.augment != "none" and passes(state.points, self.n_train) < t.epochs - t.augment_off_last:
            background = -PIXEL_MEAN / PIXEL_STD if self.cfg.data.standardize else 0.0  # an empty pixel
            x = models.augment(x, t, self.noise, background)
        fp = state.fingerprint
        if not fp:  # a run's first step: how the machine that takes its steps rounds, and the initial weights' loss
            fp.update(rounding=rounding_probe(self.batches.device), initial_loss=self.initial_loss(x, y))
        loss = self.train_step(x, y, lr, self.noise, (hi - lo) / b)
        state.step, state.pos, state.points = state.step + 1, state.pos + b, state.points + b
        if self.net.average:
            self.net.average.update(self.params, self.net.running, state.step)
        if "checksums" not in fp:
            fp.setdefault("losses", []).append(None if loss is None else loss.item())  # .item(): these steps only
            if len(fp["losses"]) == self.fingerprint_steps or state.points >= self.total_points:
                fp["checksums"] = checksums(self.params)
        return b, lr

    def initial_loss(self, x, y):
        """The loss evaluation reads of the weights as they are on the batch (x, y), by one forward pass in
        evaluation mode: no dropout, no adversarial term, batch normalisation by its running averages. At
        the first step, the initial weights on the first batch: a number every CPU rounds alike to 1e-7,
        where the first step's own loss may not (a VAT run's holds a finite difference). None for no points."""
        return evaluate(self.params, self.net.forward, self.net.loss_fn, Split(x, y), len(y))[0] if len(y) else None

    def checkpoint(self, state):
        """What a checkpoint holds: the config, the tensors (on the CPU), the random streams' states and
        the run's bookkeeping (state)."""
        return dict(
            format=FORMAT,
            config=config_mod.to_dict(self.cfg),
            params={n: p.detach().cpu() for n, p in self.params.items()},
            running={n: t.detach().cpu() for n, t in self.net.running.items()},  # batch normalisation's averages: state
            optimizer={n: v.cpu() for n, v in self.net.opt.state_dict().items()},
            **({"average": self.net.average.state_dict()} if self.net.average else {}),  # optim.ema: what evaluation read
            order_rng=self.order.get_state(),
            noise_rng=self.noise.get_state(),
            noise_device=self.noise.device.type,
            **state.fields(),
        )

    def restore(self, ckpt, path, state):
        """Load a checkpoint's tensors and random streams (checkpoint.load_checkpoint's dict) into this
        freshly started trainer; RunError when they do not fit its model and optimiser. A noise stream
        saved on another kind of device is re-seeded, and `state` notes it among its changes."""
        average = self.net.average.state_dict() if self.net.average else None
        saved_average = ckpt.get("average") or {}  # optim.ema: checked beside the rest
        for name, saved, fresh in (("params", ckpt["params"], self.params), ("optimizer", ckpt["optimizer"], self.net.opt.state_dict()),
                                   ("running", ckpt["running"], self.net.running),
                                   *((f"weight average's {part}", saved_average.get(part, {}), average[part]) for part in average or ())):
            if set(saved) != set(fresh) or any(saved[n].shape != t.shape for n, t in fresh.items()):
                raise RunError(f"{path}: its {name} state does not fit the config's model and optimiser (was the checkpoint edited?)")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(ckpt["params"][n])
            for n, t in self.net.running.items():
                t.copy_(ckpt["running"][n])
        self.net.opt.load_state_dict(ckpt["optimizer"])
        if self.net.average:
            self.net.average.load_state_dict(saved_average)
        try:
            self.order.set_state(ckpt["order_rng"])
        except RuntimeError:
            raise RunError(f"{path}: its data-order random state is not a CPU generator's") from None
        try:
            self.noise.set_state(ckpt["noise_rng"])
        except RuntimeError:  # written on another kind of device
            reseed_noise(self.noise, self.cfg.run.seed, self.world.rank, state.step)
            state.changes.append(dict(points=state.points, commit=state.changes[-1]["commit"] if state.changes else state.commit,
                                      keys=["noise"], change=f"dropout/augmentation random stream re-seeded on {self.noise.device.type} "
                                                                f"(checkpoint from another device)"))
