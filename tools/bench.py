"""Training throughput of nnhw beside plain PyTorch, measured in the same run.

For each config (softmax at batch 1, sigmoid, relu, deep, cnn) and each device (the CPU, and
CUDA when present) it times, as the median of several repeats after a warm-up:

  nnhw      nnhw's own training step (models.make_forward + train.make_train_step + MomentumSGD:
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

This file is a benchmark, not part of the library: its baselines use nn.Module and torch.optim
on purpose, as the code nnhw is compared with.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnhw import config as config_mod  # noqa: E402
from nnhw import data as data_mod  # noqa: E402
from nnhw import functions as nf  # noqa: E402
from nnhw import models  # noqa: E402
from nnhw.train import build, evaluate, git_commit, make_train_step  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EPOCH = 50000


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
    """Multiply-adds of one image's forward pass (affine and convolution layers)."""
    m = cfg.model
    total, d_in = 0, 784
    if m.arch == "cnn":
        size, c_in = 28, 1
        for c_out, k in zip(m.conv_channels, m.conv_kernel):
            size = size + 2 * m.conv_padding - k + 1
            total += size * size * c_out * c_in * k * k
            size = (size - m.pool) // m.pool_stride + 1
            c_in = c_out
        d_in = models.conv_output_size(m)[1]
    sizes = [d_in, *m.hidden, 10]
    return total + sum(a * b for a, b in zip(sizes, sizes[1:]))


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
            z = z.view(len(z), 1, 28, 28)
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
    return [784, *cfg.model.hidden, 10]


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
    ds = torch.utils.data.Subset(ds, range(EPOCH))
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.Sigmoid(), nn.Linear(200, 10))
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
    return statistics.median(times) * EPOCH


# --------------------------------------------------------------------------- #


def bench_config(name, splits, device, repeats, gflops):
    cfg = config_mod.load(REPO / "configs" / f"{name}.toml", ['run.device="cpu"'])
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
    per_epoch = EPOCH / B
    return dict(
        config=name, batch_size=B, steps_timed=n_steps, engine=cfg.train.engine,
        autograd_engine_s_per_epoch=t_engine["autograd"] * per_epoch, tape_engine_s_per_epoch=t_engine["tape"] * per_epoch,
        nnhw_s_per_epoch=t_ours * per_epoch, builtin_s_per_epoch=t_base * per_epoch, floor_s_per_epoch=t_floor * per_epoch,
        nnhw_images_per_s=B / t_ours, builtin_images_per_s=B / t_base,
        nnhw_updates_per_s=1 / t_ours, builtin_updates_per_s=1 / t_base,
        ratio_builtin=t_ours / t_base, ratio_floor=t_ours / t_floor,
        products_s_per_epoch=t_products and t_products * per_epoch, fused_s_per_epoch=t_fused and t_fused * per_epoch,
        ratio_products=t_products and t_ours / t_products, fused_ratio_floor=t_fused and t_fused / t_floor,
        eval_s_train_dev_test=eval_s, gflop_per_epoch=flops_per_image * EPOCH / 1e9,
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


def opt_num(v):
    return "-" if v is None else f"{v:.3f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["softmax", "sigmoid", "relu", "deep", "cnn"])
    p.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-loader", action="store_true", help="skip the DataLoader baseline")
    p.add_argument("--out", default=None, help="JSON path (default reports/bench-<device>.json)")
    args = p.parse_args(argv)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    root = data_mod.resolve_root("data")
    for dev_name in devices:
        device = torch.device(dev_name)
        splits = data_mod.load_splits(root, device=device)
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
        out = Path(args.out or REPO / "reports" / f"bench-{dev_name.replace(':', '')}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(
            command="python tools/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            commit=git_commit(), device=f"{dev_name} ({name})", torch=torch.__version__, matmul_gflops=gflops, loader_s_per_epoch=loader, rows=rows, adjoints=adjoints,
        ), indent=1) + "\n")
        print(out)


if __name__ == "__main__":
    main()
