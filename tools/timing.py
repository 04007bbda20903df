"""Timing helpers the benchmarks share: device synchronisation, the median of repeats (of several
steps timed in turns, for their ratios), the matmul rate, and how a benchmark writes its JSON (the command, the commit, the device beside the rows)."""

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnhw.device import describe_device  # noqa: E402
from nnhw.rundir import git_commit  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, batches, device, warmup, repeats):
    """Median seconds per step over `repeats` passes through `batches`, after `warmup` steps."""
    return time_side_by_side({"step": (step, batches)}, device, warmup, repeats)["step"]


def time_side_by_side(steps, device, warmup, repeats):
    """{label: median seconds per step} for steps = {label: (step, batches)}, timed in turns: each repeat
    times one pass of every step through its batches, starting each time with the next label, so that a
    machine that slows down or speeds up during the benchmark moves every step alike and their ratios stay."""
    for step, batches in steps.values():
        for i in range(warmup):
            step(*batches[i % len(batches)])
    sync(device)
    labels = list(steps)
    per_step = {label: [] for label in labels}
    for r in range(repeats):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            step, batches = steps[label]
            t0 = time.perf_counter()
            for b in batches:
                step(*b)
            sync(device)
            per_step[label].append((time.perf_counter() - t0) / len(batches))
    return {label: statistics.median(times) for label, times in per_step.items()}


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


def write_json(path, command, device, **fields):
    """The benchmark's JSON at path (nothing when path is None): its command, the commit, the device and
    torch, then `fields`."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(command=command, commit=git_commit(), device=describe_device(device), torch=torch.__version__,
                                    **fields), indent=1) + "\n")
    print(path)
