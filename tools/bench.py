"""Training throughput of nnhw beside plain PyTorch, measured in the same run.

For each config (softmax at batch 1, sigmoid, relu, deep, cnn by default; --configs takes any
committed config) and each device (the CPU, and CUDA when present) it times, as the median of
several repeats after a warm-up, the steps that are compared timed in turns (timing.time_side_by_side):

  nnhw      nnhw's own training step (trainer.build + trainer.make_train_step: the hand-written
            Functions and optimiser that `python -m nnhw.train` runs);
  builtin   the same model in built-in layers (tools/twin.py: nn.Conv2d, nn.BatchNorm2d, nn.Linear,
            ... built layer by layer from the description nnhw's forward pass reads) and its
            torch.optim optimiser, on the same preloaded tensors; a config whose model has no
            built-in twin is refused with one line;
  floor     the matrix-multiply floor: the step's multiply-adds (x3 for forward and backward)
            at the GFLOP/s this machine reaches in one large float32 matmul;
  products  (MLPs) only the step's matrix products, at their own shapes, on the same batches: the
            products a step cannot skip (no input gradient for the first layer), nothing else;
  fused     (MLPs with cross-entropy and no dropout) the same step hand-fused in raw tensor ops,
            no autograd and no Functions: gradients accumulate straight into the velocities
            (addmm_ with beta = momentum). The least time eager PyTorch needs for this step here;
  loader    (sigmoid only) the pytorch/examples way: nn.Module + DataLoader over torchvision's
            MNIST with ToTensor/Normalize, timed over a slice of an epoch.

It prints s/epoch (50,000 images) and the ratios, the backward of the CNN's layers and batch normalisation
against the built-in ones, three forms of the convolution's weight gradient, the cost of one full evaluation of
train+dev+test, and with --out writes JSON (the committed one: reports/bench-<device>.json).

    python tools/bench.py [--configs sigmoid softmax ...] [--device cpu] [--repeats 5] [--out 'reports/bench-{device}.json']

Two other benchmarks live beside it: tools/time_to_99.py (how many seconds and passes three recipes
take to first reach 99% and 99.5% test accuracy) and tools/hvp_cost.py (what a Hessian-vector product
costs against a gradient).

This file is a benchmark, not part of the library: its baselines use nn.Module and torch.optim
on purpose, as the code nnhw is compared with.
"""

import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import matmul_gflops, time_side_by_side, write_json  # noqa: E402
from twin import TwinError, check, loss_fn, twin  # noqa: E402

from nnhw import PROJECT_ROOT  # noqa: E402
from nnhw import config as config_mod  # noqa: E402
from nnhw import data as data_mod  # noqa: E402
from nnhw import functions as nf  # noqa: E402
from nnhw import layers  # noqa: E402
from nnhw.command import NnhwError, Parser, run_command  # noqa: E402
from nnhw.data import N_PIXELS, N_TRAIN  # noqa: E402
from nnhw.device import resolve_device  # noqa: E402
from nnhw.evaluate import evaluate  # noqa: E402
from nnhw.trainer import build, make_train_step  # noqa: E402


def multiply_adds(cfg):
    """Multiply-adds of one image's forward pass: the model summary's total (nnhw.layers)."""
    return layers.describe(cfg.model).multiply_adds


def builtin_step_fn(cfg, init, device):
    """One training step of the built-in twin (tools/twin.py) from nnhw's weights `init`, at the config's rate."""
    net, opt = twin(cfg, init, device)
    loss_of = loss_fn(cfg)

    def step(x, y):
        loss = loss_of(net(x), y)
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


def nnhw_step(net, engine, lr, noise):
    """nnhw's training step of `net` with `engine`, at a fixed rate: (x, y) -> the batch's loss."""
    ours = make_train_step(net, engine=engine)
    return lambda x, y: ours(x, y, lr, noise)


def bench_config(name, splits, device, repeats, gflops):
    cfg = config_mod.load(PROJECT_ROOT / "configs" / f"{name}.toml", ['run.device="cpu"'])
    m = cfg.model
    check(cfg)  # a model without a built-in twin is refused before any timing
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
    init = {n: p.detach().clone() for n, p in build(cfg, device).params.items()}
    steps = {}
    for engine in ("autograd", "tape"):
        net = build(cfg, device)
        steps[engine] = nnhw_step(net, engine, lr, noise)
    steps["builtin"] = builtin_step_fn(cfg, init, device)
    if m.arch == "mlp":
        steps["products"] = products_step_fn(cfg, device)
        fused = fused_step_fn(cfg, init)
        if fused is not None:
            steps["fused"] = fused
    timed = time_side_by_side({label: (step, batches) for label, step in steps.items()}, device, warmup, repeats)
    t_engine = {engine: timed[engine] for engine in ("autograd", "tape")}
    t_ours, t_base = t_engine[cfg.train.engine], timed["builtin"]
    t_products, t_fused = timed.get("products"), timed.get("fused")
    flops_per_image = 6 * multiply_adds(cfg)  # forward + two products in backward, 2 flops each
    t_floor = flops_per_image * B / (gflops * 1e9)

    t0 = time.perf_counter()
    for _ in range(2):
        for split in splits.values():
            evaluate(net.params, net.forward, net.loss_fn, split, cfg.eval.batch_size)
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
        def backward(out):
            return lambda: torch.autograd.grad(out, inputs, g, retain_graph=True)

        timed = time_side_by_side({"nnhw": (backward(ours), [()] * 5), "aten": (backward(builtin), [()] * 5)}, device, 3, repeats)
        rows.append(dict(layer=name, nnhw_s=timed["nnhw"], aten_s=timed["aten"], ratio=timed["nnhw"] / timed["aten"]))
    return rows


# The BN CNNs' convolutions at batch 64 (cnn_bn's four; the strided ones stand in for pooling)
WEIGHT_GRADIENT_CASES = [((64, 1, 28, 28), (32, 1, 3, 3), 1), ((64, 32, 26, 26), (32, 32, 4, 4), 2),
                         ((64, 32, 12, 12), (64, 32, 3, 3), 1), ((64, 64, 10, 10), (64, 64, 4, 4), 2)]


def unfolded_weight_gradient(x, g, kernel, stride):
    """dK as one matrix product over the unfolded input, no per-image loop: the candidate form.
    dK (C_out, C_in kh kw) = G (C_out, N L) @ X_unfolded (N L, C_in kh kw), L the output positions."""
    cols = F.unfold(x, kernel, stride=stride)  # (N, C_in kh kw, L)
    n, k, positions = cols.shape
    c_out = g.shape[1]
    return g.reshape(n, c_out, positions).transpose(0, 1).reshape(c_out, -1) @ cols.transpose(1, 2).reshape(-1, k)


def weight_gradient_rows(device, repeats):
    """The convolution's weight gradient alone, three forms at cnn_bn's shapes: nnhw's (Conv2d's
    correlation of X with G, the stride as a dilation), the unfolded input times G in one matrix
    product, and aten's kernel (what F.conv2d runs backward). Median seconds of one."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for x_shape, w_shape, stride in WEIGHT_GRADIENT_CASES:
        x = torch.randn(x_shape, generator=gen).to(device)
        w = (torch.randn(w_shape, generator=gen) * 0.1).to(device).requires_grad_()
        ours, builtin = nf.conv2d(x, w, None, stride, 0), F.conv2d(x, w, None, stride)
        g = torch.randn(ours.shape, generator=gen).to(device)
        forms = {"nnhw": lambda: torch.autograd.grad(ours, (w,), g, retain_graph=True),
                 "unfolded": lambda: unfolded_weight_gradient(x, g, w_shape[2:], stride),
                 "aten": lambda: torch.autograd.grad(builtin, (w,), g, retain_graph=True)}
        gap = (unfolded_weight_gradient(x, g, w_shape[2:], stride).reshape(w_shape) - forms["nnhw"]()[0]).abs().max()
        if gap > 1e-3 * forms["nnhw"]()[0].abs().max():
            raise AssertionError(f"the unfolded weight gradient differs from nnhw's at {w_shape}: {gap:.3g}")
        timed = time_side_by_side({label: (f, [()] * 5) for label, f in forms.items()}, device, 3, repeats)
        rows.append(dict(layer=f"{w_shape[1]}->{w_shape[0]} ch {w_shape[2]}x{w_shape[3]} stride {stride}, {x_shape[2]}x{x_shape[3]}",
                         **{f"{label}_s": t for label, t in timed.items()}))
    return rows


# Batch normalisation's maps in the BN CNNs: cnn_bn's first (batch 64) and fast's pooled ones (batch 128)
BATCH_NORM_SHAPES = [(64, 32, 26, 26), (128, 16, 12, 12)]


def batch_norm_rows(device, repeats):
    """nnhw's batch-normalisation layer in training (BatchNorm, alone and with the ReLU it fuses) against
    F.batch_norm (and F.relu after it), forward and backward: median seconds of one of each."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape in BATCH_NORM_SHAPES:
        c = shape[1]
        x = torch.randn(shape, generator=gen).to(device).requires_grad_()
        gamma, beta = torch.ones(c, device=device, requires_grad=True), torch.zeros(c, device=device, requires_grad=True)
        mean, var = torch.zeros(c, device=device), torch.ones(c, device=device)
        g = torch.randn(shape, generator=gen).to(device)
        for relu in (False, True):
            def ours():
                y = nf.BatchNorm.apply(x, gamma, beta, 1e-5, mean, var, 0.1, relu)[0]
                return torch.autograd.grad(y, (x, gamma, beta), g)

            def builtin():
                y = F.batch_norm(x, mean, var, gamma, beta, True, 0.1, 1e-5)
                return torch.autograd.grad(F.relu(y) if relu else y, (x, gamma, beta), g)

            timed = time_side_by_side({"nnhw": (ours, [()] * 5), "builtin": (builtin, [()] * 5)}, device, 3, repeats)
            rows.append(dict(layer=f"batch norm{' + relu' if relu else ''} {tuple(shape)}", nnhw_s=timed["nnhw"], builtin_s=timed["builtin"],
                             ratio=timed["nnhw"] / timed["builtin"]))
    return rows


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
    for name in args.configs:
        try:
            check(config_mod.load(PROJECT_ROOT / "configs" / f"{name}.toml"))
        except TwinError as e:
            raise NnhwError(f"--configs {name}: {e}") from None


def bench_command(argv=None):
    p = Parser(prog="tools/bench.py", description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["softmax", "sigmoid", "relu", "deep", "cnn"],
                   help="committed configs to time (configs/<name>.toml); one whose model has no built-in twin is refused")
    p.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; each result is their median")
    p.add_argument("--no-loader", action="store_true", help="skip the DataLoader baseline")
    p.add_argument("--out", default=None, help="write the JSON here, '{device}' in it standing for each device's name (the committed "
                   "ones: --out 'reports/bench-{device}.json'); without it the benchmark only prints")
    args = p.parse_args(argv)
    check_options(args)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    root = data_mod.resolve_root("data")
    command = "python tools/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
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
        wgrads = weight_gradient_rows(device, args.repeats)
        print("\nthe convolution's weight gradient at cnn_bn's shapes, batch 64: nnhw's correlation, one matrix product over the unfolded input, aten's kernel")
        print(f"{'layer':<36} {'nnhw ms':>8} {'unfolded ms':>11} {'aten ms':>8} {'unfolded/nnhw':>13} {'nnhw/aten':>9}")
        for a in wgrads:
            print(f"{a['layer']:<36} {1e3 * a['nnhw_s']:>8.2f} {1e3 * a['unfolded_s']:>11.2f} {1e3 * a['aten_s']:>8.2f} "
                  f"{a['unfolded_s'] / a['nnhw_s']:>13.2f} {a['nnhw_s'] / a['aten_s']:>9.2f}")
        norms = batch_norm_rows(device, args.repeats)
        print("\nbatch normalisation in training, forward and backward: nnhw's layer against F.batch_norm (and F.relu)")
        print(f"{'layer':<40} {'nnhw ms':>8} {'builtin ms':>10} {'nnhw/builtin':>12}")
        for a in norms:
            print(f"{a['layer']:<40} {1e3 * a['nnhw_s']:>8.2f} {1e3 * a['builtin_s']:>10.2f} {a['ratio']:>12.2f}")
        loader = None
        if "sigmoid" in args.configs and not args.no_loader and device.type == "cpu":
            loader = loader_seconds_per_epoch(root, max(1, args.repeats // 2))
            sig = next(r for r in rows if r["config"] == "sigmoid")
            print(f"sigmoid, the DataLoader way (nn.Module + DataLoader + ToTensor/Normalize): {loader:.2f} s/epoch, "
                  f"{loader / sig['nnhw_s_per_epoch']:.1f}x nnhw")
        write_json(args.out and args.out.replace("{device}", dev_name.replace(":", "")), command, device,
                   matmul_gflops=gflops, loader_s_per_epoch=loader, rows=rows, adjoints=adjoints, weight_gradients=wgrads, batch_norm=norms)


def main(argv=None):
    """`python tools/bench.py`: the exit code (nnhw.command)."""
    return run_command("tools/bench.py", bench_command, argv)


if __name__ == "__main__":
    sys.exit(main())
