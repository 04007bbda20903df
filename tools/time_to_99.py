"""Time to 99% test accuracy: a recipe three ways, in one run.

    python tools/time_to_99.py [--recipe configs/fast.toml] [--device cpu] [--repeats 3] [--max-seconds 600] [--out FILE]

It prints how many training seconds and passes each takes to first reach 99% and 99.5% test
accuracy, testing every 10,000 images (evaluation time left out), and its seconds per pass. nnhw and
the built-in recipe run --repeats times each, in turns (nnhw, built-in, nnhw, ...), so that a CPU
whose speed drifts between runs moves both alike; each of their rows is the run with the median
seconds to 99%, every run's seconds beside it:

  nnhw      the recipe (configs/fast.toml by default) as `python -m nnhw.train` runs it, its whole
            schedule, in a process of its own (the seconds come from its summary);
  builtin   the same recipe in built-in layers (tools/twin.py) from the same weights, schedule, data
            tensors and order, its whole schedule;
  examples  the pytorch/examples MNIST recipe (its Net, a DataLoader, Adadelta), until it first
            reaches 99%.

A recipe whose model has no built-in twin is refused with one line. With --out it writes JSON (the
committed one: reports/time-to-99-<device>.json). This file is a benchmark, not part of the library: its baselines
use nn.Module and torch.optim on purpose.
"""

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import sync, write_json  # noqa: E402
from twin import TwinError, check, loss_fn, twin  # noqa: E402

from nnhw import PROJECT_ROOT  # noqa: E402
from nnhw import config as config_mod  # noqa: E402
from nnhw import data as data_mod  # noqa: E402
from nnhw.command import NnhwError, Parser, run_command  # noqa: E402
from nnhw.device import resolve_device  # noqa: E402
from nnhw.optim import lr_at  # noqa: E402
from nnhw.trainer import build  # noqa: E402


EVERY = 10_000  # images between test evaluations, for all three
TARGETS = ("99", "99.5")  # test accuracies, %, whose first time each row gives


def nnhw_time_to_accuracy(cfg_path, device, tmp):
    """The config as `python -m nnhw.train` runs it, in a process of its own; the seconds come from its summary."""
    command = [sys.executable, "-m", "nnhw.train", str(cfg_path), f"run.device={device}", f'run.log_dir="{tmp}"', f"eval.every={EVERY}"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise NnhwError(f"{' '.join(command[1:])} ended with exit code {done.returncode} (its message above)")
    s = json.loads((Path(done.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
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


def builtin_time_to_accuracy(cfg_path, device, max_seconds):
    """The same recipe in built-in layers (tools/twin.py: nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d,
    nn.Linear in an nn.Sequential, with the torch.optim twin of nnhw's optimiser), with nnhw's initial
    weights, loss, schedule, data tensors and order, trained for the whole schedule as nnhw is."""
    cfg = config_mod.load(cfg_path, [f'run.device="{device.type}"'])
    o = cfg.optim
    splits = data_mod.load_splits(data_mod.resolve_root(cfg.data.root), False, cfg.data.train_split, cfg.data.standardize, device)
    net, opt = twin(cfg, build(cfg, torch.device("cpu")).params, device)
    loss_of = loss_fn(cfg)
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
                loss = loss_of(net(x), y)
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


def median_run(runs):
    """The run whose seconds to 99% are the median of the runs' (the lower of the middle two; seconds per
    pass where a run never reached 99%), with every run's seconds beside it."""
    key = "seconds_99" if all(r["seconds_99"] is not None for r in runs) else "seconds_per_pass"
    middle = sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]
    return dict(middle, runs_seconds_99=[r["seconds_99"] for r in runs], runs_seconds_per_pass=[r["seconds_per_pass"] for r in runs])


def time_to_99_rows(device, max_seconds, cfg_path, repeats=3):
    """nnhw's recipe and the same recipe in built-ins, `repeats` runs each in turns, then the
    pytorch/examples recipe once; each run is printed as soon as it ends (they take minutes), then the rows."""
    ours, builtin, examples = (f"nnhw {cfg_path.parent.name}/{cfg_path.name}", "the same recipe, built-in layers + torch.optim",
                               "pytorch/examples mnist (Adadelta, DataLoader)")
    runs = {ours: [], builtin: [], examples: []}

    def run(name, k, of, measure):
        runs[name].append(measure())
        print_run(name, k, of, runs[name][-1])

    with tempfile.TemporaryDirectory() as tmp:  # nnhw.train's log folder
        for k in range(repeats):
            run(ours, k, repeats, lambda: nnhw_time_to_accuracy(cfg_path, device, tmp))
            run(builtin, k, repeats, lambda: builtin_time_to_accuracy(cfg_path, device, max_seconds))
            if k == 0:  # pytorch/examples takes minutes a run: once
                run(examples, 0, 1, lambda: examples_time_to_99(data_mod.resolve_root("data"), device, max_seconds))
    print_header()
    rows = []
    for name in runs:
        r = dict(recipe=name, **median_run(runs[name]))
        nnhw_row = rows[0] if rows else r
        for key, ratio in (("seconds_99", "ratio_99"), ("seconds_per_pass", "pass_ratio")):
            r[ratio] = r[key] / nnhw_row[key] if r[key] and nnhw_row[key] else None
        rows.append(r)
        print_row(r)
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


def cell(text, width):
    return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"


def print_run(name, k, of, r):
    to_99 = "never reached 99%" if r["seconds_99"] is None else f"99% after {r['seconds_99']:.2f} s"
    print(f"{name}, run {k + 1} of {of}: {to_99}, {r['seconds_per_pass']:.2f} s a pass", flush=True)


def print_header():
    print("time to 99% and 99.5% test accuracy (training seconds only; the test set evaluated every 10,000 images; - = not "
          "reached; pytorch/examples stops at 99%; x nnhw: its seconds over nnhw's)")
    print(" ".join(cell(title, w) for title, _, w, _ in TTA_COLUMNS), flush=True)


def print_row(r):
    print(" ".join(cell("-" if r[k] is None else format(r[k], fmt), w) for _, k, w, fmt in TTA_COLUMNS), flush=True)


def time_to_99_command(argv=None):
    p = Parser(prog="tools/time_to_99.py", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(PROJECT_ROOT / "configs" / "fast.toml"), help="the config that nnhw and its built-in twin "
                   "train (default configs/fast.toml)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--repeats", type=int, default=3, help="runs of nnhw and of the built-in recipe, in turns; each row is the "
                   "median run (pytorch/examples runs once)")
    p.add_argument("--max-seconds", type=float, default=600, help="give up on the built-in and examples recipes after this many training seconds")
    p.add_argument("--out", default=None, help="write the JSON here (the committed one: reports/time-to-99-<device>.json); without it the benchmark only prints")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise NnhwError(f"--max-seconds: need a positive number of seconds, got {args.max_seconds}")
    if not 1 <= args.repeats <= 100:
        raise NnhwError(f"--repeats: need 1 to 100 runs, got {args.repeats}")
    try:
        check(config_mod.load(args.recipe))
    except TwinError as e:
        raise NnhwError(f"--recipe: {e}") from None
    rows = time_to_99_rows(device, args.max_seconds, Path(args.recipe), args.repeats)
    command = "python tools/time_to_99.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.out, command, device,
               columns=[k for _, k, _, _ in TTA_COLUMNS], rows=rows)
    return 0


def main(argv=None):
    """`python tools/time_to_99.py`: the exit code (nnhw.command)."""
    return run_command("tools/time_to_99.py", time_to_99_command, argv)


if __name__ == "__main__":
    sys.exit(main())
