"""Does the fast test tier catch realistic bugs? Plant each of MUTANTS alone, run `make test`'s tier.

    python tools/mutants.py                  # every mutant, in a copy of the repository (not this checkout)
    python tools/mutants.py --only 3 17      # some of them, by number
    python tools/mutants.py --list           # the list, with the module each one touches

Each mutant is one small change a contributor could make by mistake: an off-by-one, a sign, a missed
restore, the wrong tensor. It copies the repository once (without .venv, tb_logs/ and the data), then for
each mutant replaces its one piece of code, runs `python -m pytest -m "not slow" -x -q` there, and puts the
code back. A mutant is killed when a test fails (or the tier overruns --timeout), and survives when the
whole tier passes. It prints each mutant's fate and the first failing test, then the score.

Not part of CI: a survivor costs a whole tier, minutes on a 2-core CPU, and the list takes an hour or
more. The list must stay true to the code: a mutant whose piece of code is no longer there, or is there
more than once, stops the tool before anything runs.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (file, the code as it is, the code with the bug, what the bug is)
MUTANTS = [
    # nnhw/functions/: the derivatives
    ("nnhw/functions/transfer.py", "        return g * y * (1 - y)", "        return g * y", "sigmoid's reverse rule forgets (1 - f)"),
    ("nnhw/functions/transfer.py", "        return g * (1 - y * y)", "        return g * (1 - y)", "tanh's reverse rule with 1 - f for 1 - f^2"),
    ("nnhw/functions/affine.py", "        grad_w = g.t() @ x if need_w else None", "        grad_w = x.t() @ g if need_w else None", "affine's weight gradient transposed"),
    ("nnhw/functions/affine.py", "        grad_b = g.sum(0) if (ctx.has_bias and need_b) else None", "        grad_b = g.mean(0) if (ctx.has_bias and need_b) else None", "affine's bias gradient a mean, not a sum"),
    ("nnhw/functions/affine.py", "            da = da + x @ dw.t()", "            da = da + x @ dw", "affine's forward rule with dW untransposed"),
    ("nnhw/functions/convolution.py", "            grad_b = g.sum((0, 2, 3))", "            grad_b = g.sum((0, 2))", "the convolution's bias gradient summed over too few dims"),
    ("nnhw/functions/dropout.py", "        return g * mask, None", "        return g, None", "dropout's reverse rule ignores the mask"),
    ("nnhw/functions/batch_norm.py", "        c = -a * dbeta / m - b * mu", "        c = a * dbeta / m - b * mu", "batch norm's input gradient with the mean's term's sign flipped"),
    ("nnhw/functions/convolution.py", "        return F.avg_pool2d(dx, ctx.size, ctx.stride)", "        return F.avg_pool2d(dx, ctx.size, ctx.stride) * 2", "average pooling's forward rule doubled"),
    # tape.py: reverse mode written out
    ("nnhw/tape.py", "                        grads[k] = grads[k] + ga if k in grads else ga", "                        grads[k] = ga", "the tape overwrites a gradient that two uses should add"),
    # optim.py
    ("nnhw/optim.py", "            torch._foreach_mul_(self.v, self.momentum)  # v <- mu v", "            torch._foreach_mul_(self.v, self.momentum * self.momentum)  # v <- mu v", "momentum applied squared"),
    ("nnhw/optim.py", "            torch._foreach_add_(self.decayed_v, self.decayed_p, alpha=self.l2)  # + lambda W", "            torch._foreach_add_(self.decayed_v, self.decayed_p, alpha=-self.l2)  # + lambda W", "L2 pushes the weights up"),
    ("nnhw/optim.py", "        bias1, bias2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t", "        bias1, bias2 = 1 - self.beta1 ** (self.t + 1), 1 - self.beta2**self.t", "Adam's bias correction one step late"),
    ("nnhw/optim.py", "        passed = sum(1 for m in cfg_optim.milestones if done >= m)", "        passed = sum(1 for m in cfg_optim.milestones if done > m)", "the step schedule drops one milestone late"),
    ("nnhw/optim.py", "        return lr * done / warm", "        return lr", "no warm-up"),
    ("nnhw/optim.py", "    return o.momentum_start + (o.momentum - o.momentum_start) * done / o.momentum_ramp", "    return o.momentum", "no momentum ramp"),
    ("nnhw/optim.py", "        rows.mul_(torch.clamp(c / norms.clamp_min(1e-30), max=1.0))", "        rows.mul_(c / norms.clamp_min(1e-30))", "max-norm scales every row to norm c, short ones too"),
    # data.py
    ('nnhw/data.py', '"dev": to_split(xtr[N_TRAIN:], ytr[N_TRAIN:]), "test"', '"dev": to_split(xte, yte), "test"', "the dev split taken from the test set"),
    ("nnhw/data.py", "            x.sub_(PIXEL_MEAN).div_(PIXEL_STD)", "            x.sub_(PIXEL_MEAN).mul_(PIXEL_STD)", "standardisation multiplies by the std"),
    ("nnhw/data.py", "    return points / N_TRAIN", "    return points / 60000", "effective epochs of 60,000 images"),
    # layers.py and models.py: the model
    ("nnhw/layers.py", '            fan_in, fan_out = c_in * k * k, c_out * k * k', '            fan_in, fan_out = c_in * k, c_out * k * k', "a convolution's fan-in forgets a kernel side"),
    ("nnhw/layers.py", "    return (side + 2 * padding - kernel) // stride + 1 if side + 2 * padding >= kernel else 0", "    return (side + padding - kernel) // stride + 1 if side + 2 * padding >= kernel else 0", "the convolution's side counts one padding"),
    ("nnhw/models.py", '        "he": scale * math.sqrt(2.0 / fan_in),', '        "he": scale * math.sqrt(2.0 / fan_out),', "He's scale by fan-out"),
    ("nnhw/models.py", "            if drop:\n                z = nf.dropout(z, layer.dropout, generator, call)", "            z = nf.dropout(z, layer.dropout, generator or torch.Generator(), call)", "hidden dropout left on at evaluation"),
    ("nnhw/models.py", "            if pool and pool.kind == \"avg\":\n                z = call(nf.AvgPool2d, z, pool.size, pool.stride)", "            if pool and pool.kind == \"avg\":\n                z = call(nf.AvgPool2d, z, pool.size, pool.size)", "average pooling with its size as its stride"),
    ("nnhw/models.py", "    shift = u[:, 2:] * (2.0 * cfg_train.augment_shift / S)", "    shift = u[:, 2:] * (cfg_train.augment_shift / S)", "augmentation shifts half as far"),
    # trainer.py: the steps, and the state a checkpoint restores
    ("nnhw/trainer.py", "            self.order.set_state(ckpt[\"order_rng\"])", "            pass", "the data order's random state not restored on resume"),
    ("nnhw/trainer.py", "            self.noise.set_state(ckpt[\"noise_rng\"])", "            pass", "the dropout/augmentation stream not restored on resume"),
    ("nnhw/trainer.py", "            for n, t in self.net.running.items():\n                t.copy_(ckpt[\"running\"][n])", "            pass", "batch normalisation's running averages not restored on resume"),
    ("nnhw/trainer.py", "            state.perm, state.pos, self.x = torch.randperm(n, generator=self.order), 0, None", "            state.perm, state.pos, self.x = torch.arange(n), 0, None", "no shuffling"),
    ("nnhw/trainer.py", "        b = min(batch_size, n - state.pos, total_points - state.points)", "        b = min(batch_size, n - state.pos)", "the last batch runs past the schedule's end"),
    ("nnhw/trainer.py", "            if len(fp[\"losses\"]) == self.fingerprint_steps or state.points >= self.total_points:", "            if len(fp[\"losses\"]) == self.fingerprint_steps + 1 or state.points >= self.total_points:", "the fingerprint notes one step too many"),
    # evaluate.py
    ("nnhw/evaluate.py", "        totals[1] += (out.argmax(dim=1) != y).sum()", "        totals[1] = (out.argmax(dim=1) != y).sum()", "evaluation counts the last batch's mistakes only"),
    ("nnhw/evaluate.py", "    return loss_sum / n, 100.0 * wrong / n", "    return loss_sum / n, 100.0 * wrong / (hi - lo + 1)", "the error divided by one point too many"),
    # checkpoint.py
    ('nnhw/checkpoint.py', '"data.train_points", "data.bag"', '"data.bag"', "a resume may change data.train_points"),
    ("nnhw/checkpoint.py", "    changed = {k: (before[k], after[k]) for k in after if after[k] != before[k]}", "    changed = {}", "a resume records no change"),
    # summary.py
    ("nnhw/summary.py", '    best = min(hist, key=lambda r: r["dev_error"]) if has_dev else None', '    best = max(hist, key=lambda r: r["dev_error"]) if has_dev else None', "the best dev error is the worst"),
    ("nnhw/summary.py", '        row = next((r for r in history if r["test_error"] <= 100.0 - mark and "train_seconds" in r), None)', '        row = next((r for r in history if r["test_error"] < 100.0 - mark and "train_seconds" in r), None)', "time to accuracy misses an evaluation exactly at the mark"),
    ("nnhw/summary.py", "            mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,", "            mean=statistics.fmean(values), std=statistics.pstdev(values) if len(values) > 1 else 0.0,", "the seeds' std over n, not n - 1"),
    # replay.py
    ("nnhw/replay.py", "    if not sums and (first is None or first > LOSS_STEPS):", "    if first is None or first > LOSS_STEPS:", "replay ignores the checksums"),
    ("nnhw/replay.py", "    return abs(a - b) / max(abs(a), abs(b), 1e-300)", "    return abs(a - b) / max(abs(a), abs(b), 1.0)", "replay's relative difference floors the scale at 1"),
    # committee.py
    ("nnhw/committee.py", "torch.softmax(forward(params, test.x[i : min(i + batch_size, n)].float()).double(), 1)", "forward(params, test.x[i : min(i + batch_size, n)].float()).double()", "the committee averages logits, not softmax outputs"),
    ("nnhw/committee.py", "    return 100.0 * (mean.argmax(1) != labels).double().mean().item()", "    return 100.0 * (mean.argmin(1) != labels).double().mean().item()", "the committee picks the least likely class"),
    # hessian.py
    ("nnhw/hessian.py", "        for _ in range(2):  # Gram-Schmidt twice: orthogonal to working precision\n            w = w - Q @ (Q.t() @ w)", "        w = w - alphas[-1] * basis[-1] - (betas[-1] * basis[-2] if len(basis) > 1 else 0)", "Lanczos without full reorthogonalisation"),
    ("nnhw/hessian.py", "    return [Eigen(values[-i].item(), abs(betas[-1] * vectors[-1, -i].item()), j, lost)", "    return [Eigen(values[i - 1].item(), abs(betas[-1] * vectors[-1, i - 1].item()), j, lost)", "Lanczos returns the smallest eigenvalues"),
    # sharpness.py
    ("nnhw/sharpness.py", "    return (2 + 2 * (cfg_optim.momentum if momentum is None else momentum)) / lr", "    return 2 / lr", "the stability threshold forgets momentum"),
    # identity.py
    ("nnhw/identity.py", '    return [c for c in changes if (any(k not in WHERE_KEYS for k in c["keys"]) if "keys" in c else bool(c.get("change")))]', "    return []", "no resume alters a run"),
    # config.py
    ("nnhw/config.py", "    return {key: value for key, value in flatten(cfg).items() if key not in WHERE_KEYS}", "    return flatten(cfg)", "a run's recipe includes where it went"),
]


def copy_repo(dest):
    ignore = shutil.ignore_patterns(".venv", ".git", "tb_logs", "data", ".mnist", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info")
    shutil.copytree(REPO, dest, ignore=ignore)
    (dest / "tb_logs").mkdir()


def check_list():
    """SystemExit naming the first mutant whose code is not in its file exactly once."""
    for i, (path, old, new, what) in enumerate(MUTANTS, 1):
        count = (REPO / path).read_text().count(old)
        if count != 1 or old == new:
            sys.exit(f"tools/mutants.py: mutant {i} ({what}): its code is in {path} {count} times, not once; update the list")


def data_root():
    """The MNIST copy the tier's real-data tests read: NNHW_DATA_ROOT, else ../shared/data beside the
    checkout as the Makefile finds it for make test (the copy in a temporary folder has nothing beside
    it), else None, and those tests skip."""
    beside = REPO.parent / "shared" / "data"
    return os.environ.get("NNHW_DATA_ROOT") or (str(beside) if (beside / "MNIST" / "raw").is_dir() else None)


def run_tier(root, timeout):
    """(killed, the first failing test or why) of the fast tier in root."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", NNHW_MUTANT="1")  # the list's own test stands aside
    mnist = data_root()
    if mnist:
        env["NNHW_DATA_ROOT"] = mnist
    try:
        res = subprocess.run([sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, f"the tier ran past {timeout} s"
    if res.returncode == 0:
        return False, ""
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", res.stdout, re.M)
    return True, failed.group(1) if failed else f"exit {res.returncode}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", type=int, nargs="+", help="mutant numbers (from 1) to plant; default every one")
    p.add_argument("--list", action="store_true", help="print the list and stop")
    p.add_argument("--timeout", type=int, default=900, help="seconds a tier may run before the mutant counts as killed")
    args = p.parse_args(argv)
    check_list()
    modules = sorted({path for path, *_ in MUTANTS})
    if args.list:
        for i, (path, _, _, what) in enumerate(MUTANTS, 1):
            print(f"{i:>3}  {path:<20} {what}")
        print(f"{len(MUTANTS)} mutants over {len(modules)} modules")
        return 0
    chosen = args.only or range(1, len(MUTANTS) + 1)
    print(f"MNIST for the real-data tests: {data_root() or 'none found, so they skip and catch nothing'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nnhw-mutants-") as tmp:
        root = Path(tmp) / "repo"
        copy_repo(root)
        killed, survivors = 0, []
        for i in chosen:
            path, old, new, what = MUTANTS[i - 1]
            target = root / path
            original = target.read_text()
            target.write_text(original.replace(old, new))
            t0 = time.perf_counter()
            try:
                dead, by = run_tier(root, args.timeout)
            finally:
                target.write_text(original)
            killed += dead
            if not dead:
                survivors.append((i, path, what))
            print(f"{i:>3}  {'killed ' if dead else 'SURVIVED'}  {time.perf_counter() - t0:6.0f} s  {path:<20} {what}" + (f"  <- {by}" if dead else ""), flush=True)
    n = len(list(chosen))
    print(f"\n{killed} of {n} mutants killed by the fast tier ({100 * killed / n:.0f}%), over {len(modules)} modules")
    for i, path, what in survivors:
        print(f"  survived: {i} {path}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
