"""How far rounding moves a run's fingerprint, against how far a real change of arithmetic does.

    python tools/replay_tolerance.py [--configs relu cnn ...]

For each committed config it takes the fingerprint of the first 20 steps (nnhw.replay.first_steps)
three ways against a reference with torch's default threads: with one CPU thread (the same
arithmetic, rounded in another order, as another CPU would), with optim.lr 1% higher, and with
model.init_scale 1% higher. It prints the largest relative difference of the first LOSS_STEPS
losses, of all 20, and of the checksums, beside nnhw.replay's REL_TOL: the tolerance must lie above
every rounding row and below every change row.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnhw import PROJECT_ROOT, config  # noqa: E402
from nnhw.replay import LOSS_STEPS, REL_TOL, first_steps, rel_diff  # noqa: E402
from nnhw.trainer import FINGERPRINT_STEPS  # noqa: E402

CONFIGS = sorted(p.stem for p in (PROJECT_ROOT / "configs").glob("*.toml"))  # every committed config


def largest(a, b):
    """(first LOSS_STEPS losses, all losses, checksums): the largest relative difference of each."""
    losses = [rel_diff(x, y) for x, y in zip(a["losses"], b["losses"])]
    sums = max(rel_diff(a["checksums"][k], b["checksums"][k]) for k in a["checksums"])
    return max(losses[:LOSS_STEPS]), max(losses), sums


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=CONFIGS, help="committed configs (default: every one)")
    args = p.parse_args(argv)
    device, threads = torch.device("cpu"), torch.get_num_threads()
    print(f"relative differences from the reference ({threads} threads); REL_TOL {REL_TOL:g}")
    print(f"{'config':<8} {'variant':<16} {f'losses 1-{LOSS_STEPS}':>12} {f'all {FINGERPRINT_STEPS}':>8} {'checksums':>10}")
    for name in args.configs:
        def fingerprint(*overrides, n_threads=threads):
            torch.set_num_threads(n_threads)
            cfg = config.load(PROJECT_ROOT / "configs" / f"{name}.toml", ['run.device="cpu"', *overrides])
            fp = first_steps(cfg, device, FINGERPRINT_STEPS)
            torch.set_num_threads(threads)
            return fp

        cfg = config.load(PROJECT_ROOT / "configs" / f"{name}.toml")
        reference = fingerprint()
        variants = [("1 thread", fingerprint(n_threads=1)), ("lr x 1.01", fingerprint(f"optim.lr={cfg.optim.lr * 1.01!r}"))]
        if cfg.model.init != "zeros":  # zeros has no scale to change
            variants.append(("init x 1.01", fingerprint(f"model.init_scale={cfg.model.init_scale * 1.01!r}")))
        for label, fp in variants:
            first, every, sums = largest(reference, fp)
            print(f"{name:<8} {label:<16} {first:>12.1e} {every:>8.1e} {sums:>10.1e}", flush=True)


if __name__ == "__main__":
    main()
