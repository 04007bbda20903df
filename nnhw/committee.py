"""`python -m nnhw.committee RUN_DIR ...`: the test error of several finished runs voting together.

A committee's output for an image is the mean of its members' softmax outputs, each from its run's
final checkpoint; its guess is the class where that mean is largest. For a squared-error model the
softmax of its outputs is taken too: it keeps the model's own guess and puts every member on the
same scale. Every member is evaluated here, on the same test images: the first eval.max_points of
them when a member's config evaluates only those (the fewest of any member), all 10,000 otherwise,
whatever batch sizes the members evaluated with. A member that is not a finished run, whose
checkpoint does not fit its config's model, or whose test set differs stops the command with one
line. `python -m nnhw.train CONFIG --seeds 0,1,2` reports its seeds' committee the same way.
"""

import json
import sys
from pathlib import Path

import torch

from . import config as config_mod
from . import data as data_mod
from . import layers, models
from .checkpoint import evaluated_weights, load_checkpoint
from .command import NnhwError, Parser, run_command
from .device import resolve_device


class CommitteeError(NnhwError, ValueError):
    """Runs that cannot vote together; one line."""


def committee_error(probabilities, labels):
    """% of images where the mean of the members' probabilities (each (N, k)) picks a wrong class."""
    mean = torch.stack(probabilities).mean(0)  # (N, k)
    return 100.0 * (mean.argmax(1) != labels).double().mean().item()


def member(run_dir):
    """(config, checkpoint) of a finished run, checked: CommitteeError (one line) otherwise."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    try:
        status = json.loads(summary.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status != "finished":
        raise CommitteeError(f"{run_dir} is not a finished run (no summary.json that says 'finished'); finish it with "
                             f"python -m nnhw.train --resume {run_dir}")
    cfg = config_mod.load(run_dir / "config.toml")
    ckpt = load_checkpoint(run_dir)
    model = layers.describe(cfg.model)
    params, running = evaluated_weights(ckpt)  # with optim.ema, the weights' moving average
    for what, saved, want in (("parameters", params, {p.name: p.shape for p in model.params}),
                              ("running averages", running, {n: (w,) for n, w in model.running.items()})):
        if {k: tuple(t.shape) for k, t in saved.items()} != {k: tuple(s) for k, s in want.items()}:
            raise CommitteeError(f"{run_dir}: its checkpoint's {what} do not fit the model its config.toml describes (was one of them edited?)")
    return cfg, ckpt, model


@torch.no_grad()
def test_probabilities(cfg, ckpt, model, device, n=None, batch_size=1000):
    """(softmax outputs (N, k) on the first n test images (all of them when None), their labels (N,)),
    of a member (cfg, ckpt, model: member's), in batches of batch_size."""
    params, running = evaluated_weights(ckpt)  # the weights' moving average when the run kept one (optim.ema)
    params = {k: p.to(device) for k, p in params.items()}
    running = {k: t.to(device) for k, t in running.items()}  # batch normalisation's averages, if any
    test = data_mod.splits_on_disk(cfg.data, device)["test"]
    n = len(test) if n is None else min(n, len(test))
    forward = models.make_forward(model, running, cfg.model.batch_norm_momentum)
    out = torch.cat([torch.softmax(forward(params, test.x[i : min(i + batch_size, n)].float()).double(), 1) for i in range(0, n, batch_size)])
    return out, test.y[:n]


def committee(run_dirs, device):
    """{'test_error', 'members': [{'run_dir', 'test_error'}], 'n_images'} for the runs voting together."""
    if not run_dirs:
        raise CommitteeError("a committee needs at least one finished run")
    checked = [member(d) for d in run_dirs]
    limits = [cfg.eval.max_points for cfg, _, _ in checked if cfg.eval.max_points]
    n = min(limits) if limits else None  # the images every member was tested on
    probabilities, members, labels = [], [], None
    for run_dir, (cfg, ckpt, model) in zip(run_dirs, checked):
        p, y = test_probabilities(cfg, ckpt, model, device, n)
        if labels is not None and (len(y) != len(labels) or not torch.equal(y, labels)):
            raise CommitteeError(f"{run_dir} was tested on other images than {run_dirs[0]} ({len(y)} against {len(labels)}); "
                                 "a committee needs one test set")
        if probabilities and p.shape[1] != probabilities[0].shape[1]:
            raise CommitteeError(f"{run_dir} has {p.shape[1]} classes and {run_dirs[0]} {probabilities[0].shape[1]}; "
                                 "a committee needs one set of classes")
        labels = y
        probabilities.append(p)
        members.append(dict(run_dir=str(run_dir), test_error=committee_error([p], y)))
    return dict(test_error=committee_error(probabilities, labels), members=members, n_images=len(labels))


def committee_command(argv):
    p = Parser(prog="python -m nnhw.committee", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run folders written by nnhw.train")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    args = p.parse_args(argv)
    result = committee(args.run_dirs, resolve_device(args.device))
    for m in result["members"]:
        print(f"{m['test_error']:6.2f}%  {m['run_dir']}")
    print(f"committee of {len(result['members'])}: test error {result['test_error']:.2f}% on {result['n_images']:,} images")
    return 0


def main(argv=None):
    """`python -m nnhw.committee`: the exit code (nnhw.command)."""
    return run_command("nnhw.committee", committee_command, argv)


if __name__ == "__main__":
    sys.exit(main())
