"""Training throughput of nnhw beside plain PyTorch, measured in the same run.

For each config (softmax at batch 1, sigmoid, relu, deep, cnn) and each device (the CPU, and
CUDA when present) it times, as the median of several repeats after a warm-up:

  nnhw      nnhw's own training step (models.make_forward + step.make_train_step + MomentumSGD:
            the hand-written Functions and optimiser that `python -m nnhw.train` runs);
  builtin   the same math through built-in ops with autograd (F.linear, torch.sigmoid,
            F.cross_entropy, F.conv2d, ...) and torch.optim.SGD, on the same preloaded tensors;
  floor     the matrix-multiply floor: the step's multiply-adds (x3 for forward and backward)
            at the GFLOP/s this machine reaches in one large float32 matmul;
  products  (MLPs) only the step's matrix products, at their own shapes, on the same batches: the
            products a step cannot skip (no input gradient for the first layer), nothing else;
  fused     (MLPs with cross-entropy and no dropout) the same step hand-fused in raw tensor ops,
            no autograd and no Functions: gradients accumulate straight into the velocities
            (addmm_ with beta = momentum). The least time eager PyTorch needs for this step here;
  loader    (sigmoid only) the pytorch/examples way: nn.Module + DataLoader over torchvision's
            MNIST with ToTensor/Normalize, timed over a slice of an epoch.

It prints s/epoch (50,000 images) and the ratios, the cost of one full evaluation of
train+dev+test, and writes JSON (default reports/bench-<device>.json).

    python tools/bench.py [--configs sigmoid softmax ...] [--device cpu] [--repeats 5]

`--time-to-99` prints instead how many training seconds and passes three recipes take to first
reach 99% and 99.5% test accuracy, testing every 10,000 images (evaluation time left out), and
their seconds per pass, one after the other: configs/fast.toml (or --recipe CONFIG) as
`python -m nnhw.train` runs it, its whole schedule; the same recipe in built-in layers
(nn.Sequential, nn.BatchNorm2d, torch.optim.Adam) from the same weights, schedule and data order;
and the pytorch/examples MNIST recipe (DataLoader, Adadelta), until it first reaches 99%.
JSON: reports/time-to-99-<device>.json.

`--hvp` prints instead what second derivatives cost: one gradient of the training objective
against one Hessian-vector product of each mode of nnhw.hessian (forward over reverse,
reverse over reverse), on the same 1,000 training points and weights, for the relu MLP
and the CNN, measured side by side. JSON: reports/hvp-<device>.json.

This file is a benchmark, not part of the library: its baselines use nn.Module and torch.optim
on purpose, as the code nnhw is compared with.
"""

import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnhw import PROJECT_ROOT  # noqa: E402
from nnhw import config as config_mod  # noqa: E402
from nnhw import data as data_mod  # noqa: E402
from nnhw import functions as nf  # noqa: E402
from nnhw import hessian, models  # noqa: E402
from nnhw.config import conv_strides  # noqa: E402
from nnhw.data import IMAGE_SIDE, N_PIXELS, N_TRAIN  # noqa: E402
from nnhw.optim import lr_at  # noqa: E402
from nnhw.rundir import git_commit  # noqa: E402
from nnhw.command import NnhwError, Parser, run_command  # noqa: E402
from nnhw.data import Split  # noqa: E402
from nnhw.step import build, describe_device, evaluate, make_train_step, objective, resolve_device  # noqa: E402
from nnhw.train import run  # noqa: E402



def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, batches, device, warmup, repeats):
    """Median seconds per step over `repeats` passes through `batches`, after `warmup` steps."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    sync(device)
    per_step = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            step(*b)
        sync(device)
        per_step.append((time.perf_counter() - t0) / len(batches))
    return statistics.median(per_step)


def multiply_adds(cfg):
    """Multiply-adds of one image's forward pass: the model summary's total (models.layer_table)."""
    return sum(macs for _, _, _, macs in models.layer_table(cfg.model))


def matmul_gflops(device, n=2048, repeats=5):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


# --------------------------------------------------------------------------- #
# The built-in baseline: the same model in built-in ops and torch.optim        #
# --------------------------------------------------------------------------- #

ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda a: a, "square": lambda a: a * a}


def builtin_step_fn(cfg, params_init):
    m = cfg.model
    params = {n: p.detach().clone().requires_grad_() for n, p in params_init.items()}
    act, out_act = ACT[m.transfer], ACT[m.output_transfer]
    n_conv = len(m.conv_channels) if m.arch == "cnn" else 0
    n_fc = len(m.hidden) + 1
    opt = torch.optim.SGD(list(params.values()), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.l2)

    def forward(x):
        z = F.dropout(x, m.dropout_input) if m.dropout_input else x
        if n_conv:
            z = z.view(len(z), 1, IMAGE_SIDE, IMAGE_SIDE)
            for l in range(1, n_conv + 1):
                z = act(F.conv2d(z, params[f"Wc{l}"], params[f"bc{l}"], 1, m.conv_padding))
                if m.pool > 1:
                    z = F.avg_pool2d(z, m.pool, m.pool_stride)
            z = z.flatten(1)
        for l in range(1, n_fc):
            z = act(F.linear(z, params[f"W{l}"], params[f"b{l}"]))
            if m.dropout_hidden:
                z = F.dropout(z, m.dropout_hidden)
        return out_act(F.linear(z, params[f"W{n_fc}"], params[f"b{n_fc}"]))

    def step(x, y):
        out = forward(x)
        if m.loss == "cross_entropy":
            loss = F.cross_entropy(out, y)
        else:
            loss = F.mse_loss(out, F.one_hot(y, 10).to(out.dtype))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


# --------------------------------------------------------------------------- #
# Two lower references for MLPs: the products alone, and a hand-fused step      #
# --------------------------------------------------------------------------- #

FUSED_TRANSFERS = {  # f(a), and f'(a) written with z = f(a)
    "sigmoid": (torch.sigmoid, lambda z: z - z * z),
    "tanh": (torch.tanh, lambda z: 1 - z * z),
    "relu": (torch.relu, torch.sign),  # 1 where z > 0, else 0: as nnhw's ReLU writes it
}


def mlp_sizes(cfg):
    return [N_PIXELS, *cfg.model.hidden, data_mod.N_CLASSES]


def products_step_fn(cfg, device):
    """The step's matrix products and nothing else: per layer l, A = Z W^T and dW = G^T Z, and
    dZ = G W for every layer but the first (the input needs no gradient)."""
    sizes, B = mlp_sizes(cfg), cfg.train.batch_size
    gen = torch.Generator().manual_seed(0)
    W = [torch.randn(o, i, generator=gen).to(device) for i, o in zip(sizes, sizes[1:])]
    Z = [torch.randn(B, d, generator=gen).to(device) for d in sizes[1:]]
    G = [torch.randn(B, d, generator=gen).to(device) for d in sizes[1:]]

    def step(x, y):
        z = x
        for l, w in enumerate(W):
            torch.mm(z, w.t(), out=Z[l])
            z = Z[l]
        for l in reversed(range(len(W))):
            torch.mm(G[l].t(), x if l == 0 else Z[l - 1])
            if l:
                torch.mm(G[l], W[l])

    return step


def fused_step_fn(cfg, params_init):
    """The step hand-fused in raw ops, or None where the model is not a plain MLP with
    cross-entropy. Same update as nnhw's: v <- mu v + g + lambda W, W <- W - lr v."""
    m, o = cfg.model, cfg.optim
    if m.arch != "mlp" or m.loss != "cross_entropy" or m.output_transfer != "identity" or m.transfer not in FUSED_TRANSFERS \
            or m.dropout_input or m.dropout_hidden or (o.l2 and o.l2_bias):
        return None
    f, df = FUSED_TRANSFERS[m.transfer]
    n = len(m.hidden) + 1
    Ws = [params_init[f"W{l}"].detach().clone() for l in range(1, n + 1)]
    bs = [params_init[f"b{l}"].detach().clone() for l in range(1, n + 1)]
    vW, vb = [torch.zeros_like(w) for w in Ws], [torch.zeros_like(b) for b in bs]
    tensors, velocities = Ws + bs, vW + vb
    mu, lr = o.momentum, o.lr

    @torch.no_grad()
    def step(x, y):
        zs = [x]
        for l in range(n - 1):
            zs.append(f(torch.addmm(bs[l], zs[-1], Ws[l].t())))
        g = torch.softmax(torch.addmm(bs[-1], zs[-1], Ws[-1].t()), 1)  # dL/dA = (softmax - onehot) / N
        g[torch.arange(len(y), device=y.device), y] -= 1
        g.div_(len(y))
        for l in reversed(range(n)):
            vW[l].addmm_(g.t(), zs[l], beta=mu)  # v <- mu v + G^T Z
            vb[l].mul_(mu).add_(g.sum(0))
            if l:
                g = (g @ Ws[l]).mul_(df(zs[l]))
        if o.l2:
            torch._foreach_add_(vW, Ws, alpha=o.l2)
        torch._foreach_add_(tensors, velocities, alpha=-lr)

    step.params = {**{f"W{l}": w for l, w in enumerate(Ws, 1)}, **{f"b{l}": b for l, b in enumerate(bs, 1)}}
    return step


def loader_seconds_per_epoch(root, repeats, n_batches=100):
    """The pytorch/examples way for the sigmoid config: nn.Module + DataLoader + torch.optim."""
    import torchvision
    from torch import nn
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=tf)
    ds = torch.utils.data.Subset(ds, range(N_TRAIN))
    net = nn.Sequential(nn.Flatten(), nn.Linear(N_PIXELS, 200), nn.Sigmoid(), nn.Linear(200, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = torch.utils.data.DataLoader(ds, batch_size=100, shuffle=True)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i + 1 == n_batches:
                break
        if r:  # the first pass warms up
            times.append((time.perf_counter() - t0) / (n_batches * 100))
    return statistics.median(times) * N_TRAIN


# --------------------------------------------------------------------------- #


def bench_config(name, splits, device, repeats, gflops):
    cfg = config_mod.load(PROJECT_ROOT / "configs" / f"{name}.toml", ['run.device="cpu"'])
    m = cfg.model
    B = cfg.train.batch_size
    n_steps = {1: 2000}.get(B, max(10, 10000 // B if m.arch == "mlp" else 2500 // B))
    if device.type == "cuda":
        n_steps = max(n_steps, 200)
    train = splits["train"]
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(train), generator=gen)[: n_steps * B].to(device)
    x_all, y_all = train.x[idx], train.y[idx]
    batches = [(x_all[i * B : (i + 1) * B], y_all[i * B : (i + 1) * B]) for i in range(n_steps)]

    noise = torch.Generator(device=device).manual_seed(0)
    lr = cfg.optim.lr
    warmup = min(50, n_steps)
    init = {n: p.detach().clone() for n, p in build(cfg, device)[0].items()}
    t_engine = {}
    for engine in ("autograd", "tape"):
        params, forward, loss_fn, opt = build(cfg, device)
        ours = make_train_step(params, forward, loss_fn, opt, engine=engine)
        t_engine[engine] = time_steps(lambda x, y: ours(x, y, lr, noise), batches, device, warmup, repeats)
    t_ours = t_engine[cfg.train.engine]
    t_base = time_steps(builtin_step_fn(cfg, init), batches, device, warmup, repeats)
    t_products = t_fused = None
    if m.arch == "mlp":
        t_products = time_steps(products_step_fn(cfg, device), batches, device, warmup, repeats)
        fused = fused_step_fn(cfg, init)
        if fused is not None:
            t_fused = time_steps(fused, batches, device, warmup, repeats)
    flops_per_image = 6 * multiply_adds(cfg)  # forward + two products in backward, 2 flops each
    t_floor = flops_per_image * B / (gflops * 1e9)

    t0 = time.perf_counter()
    for _ in range(2):
        for split in splits.values():
            evaluate(params, forward, loss_fn, split, cfg.eval.batch_size)
    eval_s = (time.perf_counter() - t0) / 2
    per_epoch = N_TRAIN / B
    return dict(
        config=name, batch_size=B, steps_timed=n_steps, engine=cfg.train.engine,
        autograd_engine_s_per_epoch=t_engine["autograd"] * per_epoch, tape_engine_s_per_epoch=t_engine["tape"] * per_epoch,
        nnhw_s_per_epoch=t_ours * per_epoch, builtin_s_per_epoch=t_base * per_epoch, floor_s_per_epoch=t_floor * per_epoch,
        nnhw_images_per_s=B / t_ours, builtin_images_per_s=B / t_base,
        nnhw_updates_per_s=1 / t_ours, builtin_updates_per_s=1 / t_base,
        ratio_builtin=t_ours / t_base, ratio_floor=t_ours / t_floor,
        products_s_per_epoch=t_products and t_products * per_epoch, fused_s_per_epoch=t_fused and t_fused * per_epoch,
        ratio_products=t_products and t_ours / t_products, fused_ratio_floor=t_fused and t_fused / t_floor,
        eval_s_train_dev_test=eval_s, gflop_per_epoch=flops_per_image * N_TRAIN / 1e9,
    )


# The CNN's layers (configs/cnn.toml at batch 128): (name, input shape, Function, its arguments, the built-in)
ADJOINT_CASES = [
    ("conv1 5x5, 1->32 ch, 28x28", (128, 1, 28, 28), "conv", (32, 1, 5, 5)),
    ("conv2 5x5, 32->64 ch, 12x12", (128, 32, 12, 12), "conv", (64, 32, 5, 5)),
    ("avgpool 2x2, 32 ch, 24x24", (128, 32, 24, 24), "pool", 2),
    ("avgpool 2x2, 64 ch, 8x8", (128, 64, 8, 8), "pool", 2),
]


def adjoint_rows(device, repeats):
    """The convolution's and the pooling's backward: nnhw's written-out adjoints (transposed
    convolutions, the correlation of X with G) against aten's kernels (what F.conv2d and F.avg_pool2d
    run backward), at the CNN's shapes. Median seconds of one backward pass, from one forward."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, shape, kind, arg in ADJOINT_CASES:
        x = torch.randn(shape, generator=gen).to(device).requires_grad_(shape[1] > 1)  # as in training: no gradient for the image
        if kind == "conv":
            w = (torch.randn(arg, generator=gen) * 0.1).to(device).requires_grad_()
            b = torch.zeros(arg[0], device=device, requires_grad=True)
            ours, builtin, inputs = nf.conv2d(x, w, b, 1, 0), F.conv2d(x, w, b), (x, w, b)
        else:
            ours, builtin, inputs = nf.AvgPool2d.apply(x, arg, arg), F.avg_pool2d(x, arg, arg), (x,)
        inputs = tuple(t for t in inputs if t.requires_grad)
        g = torch.randn(ours.shape, generator=gen).to(device)
        timed = {}
        for label, out in (("nnhw", ours), ("aten", builtin)):
            step = lambda: torch.autograd.grad(out, inputs, g, retain_graph=True)  # noqa: E731
            timed[label] = time_steps(lambda: step(), [()] * 5, device, 3, repeats)
        rows.append(dict(layer=name, nnhw_s=timed["nnhw"], aten_s=timed["aten"], ratio=timed["nnhw"] / timed["aten"]))
    return rows


# --------------------------------------------------------------------------- #
# Time to 99% test accuracy: the fast recipe three ways                       #
# --------------------------------------------------------------------------- #

EVERY = 10_000  # images between test evaluations, for all three
TARGETS = ("99", "99.5")  # test accuracies, %, whose first time each row gives


def nnhw_time_to_accuracy(cfg_path, device, tmp):
    """The config exactly as `python -m nnhw.train` runs it; the seconds come from its summary."""
    cfg = config_mod.load(cfg_path, [f'run.device="{device.type}"', f'run.log_dir="{tmp}"', f"eval.every={EVERY}"])
    run_dir, _, _ = run(cfg)
    s = json.loads((Path(run_dir) / "summary.json").read_text())
    per_epoch = s["passes"] / s["epochs"]  # the summary counts epochs of 50,000 images
    first = {t: (hit["train_seconds"], hit["epoch"] * per_epoch) for t in TARGETS if (hit := s["time_to_accuracy"].get(f"{t}%"))}
    return tta_row(first, s["final"]["test_error"], s["train_seconds"], s["passes"])


def until_accuracy(steps, test_error, device, n_train, max_seconds, stop_at=None):
    """Run `steps` (an iterator that takes one step per item and yields the images it used) with the
    clock running only while it trains, testing every EVERY images: the training seconds and passes
    over the n_train images before the first test accuracy of 99% and of 99.5% (None where never
    reached), the final test error, and the seconds and passes trained in all. Stops early at the first
    test error <= stop_at, or past max_seconds."""
    trained, seen, next_eval, err, first = 0.0, 0, EVERY, 100.0, {}

    def tested():
        err = test_error()
        for target in TARGETS:
            if err <= 100.0 - float(target) and target not in first:
                first[target] = (trained, seen / n_train)
        return err

    t0 = time.perf_counter()
    for n in steps:
        seen += n
        if seen >= next_eval:
            sync(device)
            trained += time.perf_counter() - t0
            err, next_eval = tested(), next_eval + EVERY
            if (stop_at is not None and err <= stop_at) or trained > max_seconds:
                break
            t0 = time.perf_counter()
    else:
        sync(device)
        trained += time.perf_counter() - t0
        err = tested()
    return tta_row(first, err, trained, seen / n_train)


def tta_row(first, final_test_error, train_seconds, passes):
    """One row of the table from {target accuracy: (seconds, passes) when first reached}."""
    row = dict(final_test_error=final_test_error, train_seconds=train_seconds, passes=passes,
               seconds_per_pass=train_seconds / passes if passes else None)
    for target in TARGETS:
        row[f"seconds_{target}"], row[f"passes_{target}"] = first.get(target, (None, None))
    return row


def check_twin(cfg):
    """NnhwError unless builtin_fast_net can build the config's twin."""
    m, o = cfg.model, cfg.optim
    if (m.arch != "cnn" or o.optimizer != "adam" or m.loss != "cross_entropy" or m.output_transfer != "identity" or m.transfer != "relu"
            or m.dropout_input or m.dropout_hidden or any(m.dropout_conv) or o.l2 or o.max_norm or m.pool > 1 and m.pool_type != "max"
            or cfg.train.augment != "none"):
        raise NnhwError("--recipe: the built-in twin is a ReLU CNN with max pooling or none, cross-entropy and Adam, no dropout, L2, "
                        "max-norm or augmentation (torch.optim.Adam's weight_decay would also decay the biases, which nnhw leaves out)")


def builtin_fast_net(cfg, init, device):
    """(nn.Sequential, torch.optim.Adam) for a CNN config without dropout (strided convolutions, max pooling
    or none, batch normalisation or none), starting from nnhw's weights `init`."""
    from torch import nn

    check_twin(cfg)
    m, o = cfg.model, cfg.optim

    def normalised(layer, width, tag, batch_norm):  # [layer] + batch normalisation as nnhw's, from nnhw's gamma and beta
        if not m.batch_norm:
            return [layer]
        bn = batch_norm(width, eps=1e-5, momentum=m.batch_norm_momentum)
        bn.weight.data, bn.bias.data = init[f"g{tag}"].clone(), init[f"bn{tag}"].clone()
        return [layer, bn]

    layers, c_in = [nn.Unflatten(1, (1, IMAGE_SIDE, IMAGE_SIDE))], 1
    for l, (c, k, stride) in enumerate(zip(m.conv_channels, m.conv_kernel, conv_strides(m)), 1):
        conv = nn.Conv2d(c_in, c, k, stride=stride, padding=m.conv_padding)
        conv.weight.data, conv.bias.data = init[f"Wc{l}"].clone(), init[f"bc{l}"].clone()
        pool = [nn.MaxPool2d(m.pool, m.pool_stride)] if m.pool > 1 else []
        if m.batch_norm_after_pool:
            layers += [conv] + normalised(pool[0], c, f"c{l}", nn.BatchNorm2d) + [nn.ReLU()]
        else:
            layers += normalised(conv, c, f"c{l}", nn.BatchNorm2d) + pool + [nn.ReLU()]
        c_in = c
    layers.append(nn.Flatten())
    for l in range(1, len(m.hidden) + 2):
        fc = nn.Linear(*init[f"W{l}"].shape[::-1])
        fc.weight.data, fc.bias.data = init[f"W{l}"].clone(), init[f"b{l}"].clone()
        layers += normalised(fc, m.hidden[l - 1], str(l), nn.BatchNorm1d) + [nn.ReLU()] if l <= len(m.hidden) else [fc]
    net = nn.Sequential(*layers).to(device)
    return net, torch.optim.Adam(net.parameters(), lr=o.lr, betas=(o.momentum, o.beta2), eps=o.eps)


def builtin_time_to_accuracy(cfg_path, device, max_seconds):
    """The same recipe in built-in layers: nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Linear in an
    nn.Sequential, F.cross_entropy and torch.optim.Adam, with nnhw's initial weights, schedule, data
    tensors and order, trained for the whole schedule as nnhw is."""
    cfg = config_mod.load(cfg_path, [f'run.device="{device.type}"'])
    o = cfg.optim
    splits = data_mod.load_splits(data_mod.resolve_root(cfg.data.root), False, cfg.data.train_split, cfg.data.standardize, device)
    net, opt = builtin_fast_net(cfg, models.init_params(cfg.model, cfg.run.seed), device)
    train, test = splits["train"], splits["test"]
    n, B = len(train), cfg.train.batch_size
    order = torch.Generator().manual_seed(cfg.run.seed + 1)

    def steps():
        seen = 0
        while seen < cfg.train.epochs * n:
            perm = torch.randperm(n, generator=order).to(device)
            x_all, y_all = train.x[perm], train.y[perm]
            for i in range(0, n, B):
                for group in opt.param_groups:
                    group["lr"] = lr_at(o, seen / n, cfg.train.epochs)
                x, y = x_all[i : i + B], y_all[i : i + B]
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
                yield len(y)

    @torch.no_grad()
    def test_error():
        net.eval()  # batch normalisation by its running averages
        wrong = sum((net(test.x[i : i + 250]).argmax(1) != test.y[i : i + 250]).sum().item() for i in range(0, len(test), 250))
        net.train()
        return 100.0 * wrong / len(test)

    return until_accuracy(steps(), test_error, device, n, max_seconds)


def examples_time_to_99(root, device, max_seconds):
    """pytorch/examples mnist/main.py as a user runs it: its Net (two 3x3 convolutions, max pooling,
    dropout), a DataLoader with ToTensor and Normalize, Adadelta at lr 1.0, StepLR(1, gamma 0.7), batch 64."""
    import torchvision
    from torch import nn
    from torchvision import transforms

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
            self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
            self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
            x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
            return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)

    torch.manual_seed(1)  # the example's default --seed
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_ds = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=tf)
    test_ds = torchvision.datasets.MNIST(str(root), train=False, download=False, transform=tf)
    kw = dict(num_workers=1, pin_memory=True) if device.type == "cuda" else {}
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=64, shuffle=True, **kw)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=1000, **kw)
    net = Net().to(device)
    opt = torch.optim.Adadelta(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    def steps():
        for _ in range(14):  # the example's default --epochs
            net.train()
            for x, y in train_loader:
                x, y = x.to(device), y.to(device)
                opt.zero_grad()
                loss = F.nll_loss(net(x), y)
                loss.backward()
                opt.step()
                yield len(y)
            sched.step()

    @torch.no_grad()
    def test_error():
        net.eval()
        wrong = sum((net(x.to(device)).argmax(1) != y.to(device)).sum().item() for x, y in test_loader)
        net.train()
        return 100.0 * wrong / len(test_ds)

    return until_accuracy(steps(), test_error, device, len(train_ds), max_seconds, stop_at=1.0)


def time_to_99_rows(device, max_seconds, cfg_path):
    """nnhw's recipe, the same recipe in built-ins, and the pytorch/examples recipe, one after the other."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows = [dict(recipe=f"nnhw {cfg_path.parent.name}/{cfg_path.name}", **nnhw_time_to_accuracy(cfg_path, device, tmp))]
    rows.append(dict(recipe="the same recipe, built-in layers + torch.optim", **builtin_time_to_accuracy(cfg_path, device, max_seconds)))
    rows.append(dict(recipe="pytorch/examples mnist (Adadelta, DataLoader)", **examples_time_to_99(data_mod.resolve_root("data"), device, max_seconds)))
    ours, per_pass = rows[0]["seconds_99"], rows[0]["seconds_per_pass"]
    for r in rows:
        r["ratio_99"] = r["seconds_99"] / ours if r["seconds_99"] and ours else None
        r["pass_ratio"] = r["seconds_per_pass"] / per_pass if r["seconds_per_pass"] and per_pass else None
    return rows


TTA_COLUMNS = [  # (title, key, width, format): the header, the rows and the JSON come from this one list
    ("recipe", "recipe", -48, "s"),
    ("s to 99%", "seconds_99", 9, ".2f"),
    ("passes", "passes_99", 6, ".2f"),
    ("x nnhw", "ratio_99", 7, ".2f"),
    ("s to 99.5%", "seconds_99.5", 10, ".2f"),
    ("passes", "passes_99.5", 6, ".2f"),
    ("s/pass", "seconds_per_pass", 7, ".2f"),
    ("x nnhw", "pass_ratio", 7, ".2f"),
    ("final test err %", "final_test_error", 16, ".2f"),
    ("s trained", "train_seconds", 9, ".1f"),
]


def print_time_to_99(rows):
    print("\ntime to 99% and 99.5% test accuracy (training seconds only; the test set evaluated every 10,000 images; - = not "
          "reached; pytorch/examples stops at 99%; x nnhw: its seconds over nnhw's)")
    cell = lambda text, width: f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"  # noqa: E731
    print(" ".join(cell(title, w) for title, _, w, _ in TTA_COLUMNS))
    for r in rows:
        print(" ".join(cell("-" if r[k] is None else format(r[k], fmt), w) for _, k, w, fmt in TTA_COLUMNS), flush=True)


# --------------------------------------------------------------------------- #
# What a Hessian-vector product costs against a gradient                      #
# --------------------------------------------------------------------------- #


def hvp_rows(train, device, repeats, configs=("relu", "cnn"), n=1000):
    """For each config: median seconds of one gradient of the training objective on the first n
    training points, and of one Hessian-vector product of each mode at the same weights, and the ratios."""
    rows = []
    for name in configs:
        cfg = config_mod.load(PROJECT_ROOT / "configs" / f"{name}.toml", [f'run.device="{device.type}"'])
        params, forward, loss_fn, _ = build(cfg, device)
        f = objective(forward, loss_fn, cfg.optim, Split(train.x[:n], train.y[:n]))
        gen = torch.Generator().manual_seed(0)
        v = {k: torch.randn(p.shape, generator=gen).to(device) for k, p in params.items()}
        seconds = {"gradient": time_steps(lambda: torch.autograd.grad(f(params), list(params.values())), [()] * 3, device, 2, repeats)}
        for mode in hessian.MODES:
            seconds[mode] = time_steps(lambda: hessian.hvp(f, params, v, mode), [()] * 3, device, 2, repeats)
        rows.append(dict(config=name, points=n, gradient_s=seconds["gradient"], **{f"{m}_s": seconds[m] for m in hessian.MODES},
                         **{f"{m}_over_gradient": seconds[m] / seconds["gradient"] for m in hessian.MODES}))
    return rows


def print_hvp(rows):
    print(f"{'config':<8} {'points':>6} {'gradient ms':>11} {'fwd-over-rev ms':>15} {'rev-over-rev ms':>15} {'fwd/grad':>8} {'rev/grad':>8}")
    for r in rows:
        print(f"{r['config']:<8} {r['points']:>6} {1e3 * r['gradient_s']:>11.2f} {1e3 * r['forward-over-reverse_s']:>15.2f} "
              f"{1e3 * r['reverse-over-reverse_s']:>15.2f} {r['forward-over-reverse_over_gradient']:>8.2f} {r['reverse-over-reverse_over_gradient']:>8.2f}")


def opt_num(v):
    return "-" if v is None else f"{v:.3f}"


def check_options(args):
    """Every option checked before minutes of work: NnhwError (one line) for the first bad one."""
    for name in args.device or []:
        resolve_device(name)  # ConfigError for a name that is not a device here
    missing = [c for c in args.configs if not (PROJECT_ROOT / "configs" / f"{c}.toml").is_file()]
    if missing:
        known = ", ".join(sorted(p.stem for p in (PROJECT_ROOT / "configs").glob("*.toml")))
        raise NnhwError(f"--configs: no configs/{missing[0]}.toml; the configs are {known}")
    if not 1 <= args.repeats <= 1000:
        raise NnhwError(f"--repeats: need 1 to 1000 timed repeats, got {args.repeats}")
    if not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise NnhwError(f"--max-seconds: need a positive number of seconds, got {args.max_seconds}")
    if args.time_to_99:
        check_twin(config_mod.load(args.recipe))


def bench_command(argv=None):
    p = Parser(prog="tools/bench.py", description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["softmax", "sigmoid", "relu", "deep", "cnn"])
    p.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-loader", action="store_true", help="skip the DataLoader baseline")
    p.add_argument("--out", default=None, help="JSON path (default reports/bench-<device>.json, or reports/time-to-99-<device>.json)")
    p.add_argument("--time-to-99", action="store_true", help="only the time-to-accuracy table: the seconds and passes to 99%% and "
                   "99.5%% test accuracy of configs/fast.toml (or --recipe) and of the same recipe in built-in layers over its whole "
                   "schedule, and of the pytorch/examples recipe until 99%%")
    p.add_argument("--recipe", default=str(PROJECT_ROOT / "configs" / "fast.toml"), help="--time-to-99: the config that nnhw and "
                   "its built-in twin train (default configs/fast.toml)")
    p.add_argument("--max-seconds", type=float, default=600, help="--time-to-99: give up on a recipe after this many training seconds")
    p.add_argument("--hvp", action="store_true", help="only the cost of a Hessian-vector product of each mode (nnhw.hessian) against "
                   "a gradient, for the relu MLP and the CNN")
    args = p.parse_args(argv)
    check_options(args)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    root = data_mod.resolve_root("data")
    command = "python tools/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for dev_name in devices:
        device = torch.device(dev_name)
        if args.time_to_99:
            rows = time_to_99_rows(device, args.max_seconds, Path(args.recipe))
            print_time_to_99(rows)
            out = Path(args.out or PROJECT_ROOT / "reports" / f"time-to-99-{dev_name.replace(':', '')}.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(dict(command=command, commit=git_commit(), device=describe_device(device), torch=torch.__version__,
                                           columns=[k for _, k, _, _ in TTA_COLUMNS], rows=rows), indent=1) + "\n")
            print(out)
            continue
        splits = data_mod.load_splits(root, device=device)
        if args.hvp:
            rows = hvp_rows(splits["train"], device, args.repeats)
            print_hvp(rows)
            out = Path(args.out or PROJECT_ROOT / "reports" / f"hvp-{dev_name.replace(':', '')}.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(dict(command=command, commit=git_commit(), device=describe_device(device), torch=torch.__version__,
                                           rows=rows), indent=1) + "\n")
            print(out)
            continue
        gflops = matmul_gflops(device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        print(f"\n{dev_name} ({name}): large float32 matmul {gflops:.1f} GFLOP/s; torch {torch.__version__}")
        print("nnhw = nnhw's step with the config's train.engine; 'autograd' and 'tape' give both engines' s/epoch;\n"
              "products = the step's matrix products alone; fused = the step hand-fused in raw ops (MLPs; see the docstring)")
        print(f"{'config':<8} {'batch':>5} {'engine':>8} {'nnhw s/ep':>10} {'autograd':>9} {'tape':>7} {'builtin s/ep':>12} {'floor s/ep':>10} {'products':>8} {'fused':>6} {'nnhw/builtin':>12} {'nnhw/floor':>10} {'nnhw upd/s':>10} {'builtin upd/s':>13} {'eval s':>7}")
        rows = []
        for cfg_name in args.configs:
            r = bench_config(cfg_name, splits, device, args.repeats, gflops)
            rows.append(r)
            print(f"{r['config']:<8} {r['batch_size']:>5} {r['engine']:>8} {r['nnhw_s_per_epoch']:>10.3f} {r['autograd_engine_s_per_epoch']:>9.3f} {r['tape_engine_s_per_epoch']:>7.3f} {r['builtin_s_per_epoch']:>12.3f} {r['floor_s_per_epoch']:>10.3f} "
                  f"{opt_num(r['products_s_per_epoch']):>8} {opt_num(r['fused_s_per_epoch']):>6} {r['ratio_builtin']:>12.3f} {r['ratio_floor']:>10.2f} {r['nnhw_updates_per_s']:>10.0f} {r['builtin_updates_per_s']:>13.0f} {r['eval_s_train_dev_test']:>7.2f}", flush=True)
        adjoints = adjoint_rows(device, args.repeats)
        print("\nbackward of the CNN's layers at batch 128: nnhw's written-out adjoints against aten's kernels")
        print(f"{'layer':<30} {'nnhw ms':>8} {'aten ms':>8} {'nnhw/aten':>9}")
        for a in adjoints:
            print(f"{a['layer']:<30} {1e3 * a['nnhw_s']:>8.2f} {1e3 * a['aten_s']:>8.2f} {a['ratio']:>9.2f}")
        loader = None
        if "sigmoid" in args.configs and not args.no_loader and device.type == "cpu":
            loader = loader_seconds_per_epoch(root, max(1, args.repeats // 2))
            sig = next(r for r in rows if r["config"] == "sigmoid")
            print(f"sigmoid, the DataLoader way (nn.Module + DataLoader + ToTensor/Normalize): {loader:.2f} s/epoch, "
                  f"{loader / sig['nnhw_s_per_epoch']:.1f}x nnhw")
        out = Path(args.out or PROJECT_ROOT / "reports" / f"bench-{dev_name.replace(':', '')}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(
            command=command,
            commit=git_commit(), device=f"{dev_name} ({name})", torch=torch.__version__, matmul_gflops=gflops, loader_s_per_epoch=loader, rows=rows, adjoints=adjoints,
        ), indent=1) + "\n")
        print(out)


def main(argv=None):
    """`python tools/bench.py`: the exit code (nnhw.command)."""
    return run_command("tools/bench.py", bench_command, argv)


if __name__ == "__main__":
    sys.exit(main())
