"""One home for how nnhw writes things down: the questions, the commands, numbers and a config in words.

REPORT.md (nnhw.report), REPORT.pdf (nnhw.handin), the theory and autodiff
printouts and the README's commands table all take their wording from here, so
a percentage, a mean +- std, a commit or a model reads the same everywhere.
"""

from .data import N_CLASSES, N_PIXELS

# (homework question, config, what that config's runs answer), in the homework's order: REPORT.md's
# sections, and in REPORT.pdf the parts of 4.3 and 6.
QUESTIONS = [
    ("3", "softmax", "Softmax regression by SGD, one point at a time"),
    ("4.1", "sigmoid", "One hidden layer of 200 sigmoid units, softmax cross-entropy"),
    ("4.2", "relu", "One hidden layer of 200 ReLU units, ReLU outputs, squared error"),
    ("4.3", "wide", "Architecture 1: one wide hidden layer, on train+dev"),
    ("4.3", "deep", "Architecture 2: several hidden layers, on train+dev"),
    ("4.3", "mlp_aug", "Being creative: an MLP trained on elastically distorted images, on train+dev"),
    ("4.3", "mlp_maxnorm", "Beyond the homework: Srivastava et al.'s dropout recipe, with max-norm and a momentum ramp, on train+dev"),
    ("6", "cnn", "The CNN, with average pooling, on train+dev"),
    ("6", "cnn_aug", "The same CNN trained on augmented images"),
    ("6", "cnn_bn", "Beyond the homework: the published CNN recipe, with batch normalisation and strided convolutions"),
    ("6", "cnn_bn_aug", "The batch-normalised CNN trained on augmented images"),
    ("6", "fast", "Beyond the homework: a small CNN with max pooling, batch normalisation and Adam that reaches 99% test accuracy within one pass"),
    ("6", "fast995", "Beyond the homework: the fast CNN twice as wide, on shifted images, for 99.5% test accuracy within four passes"),
]

# Beyond the homework, after 7.3: full-batch gradient descent at three constant steps, its sharpness measured.
SHARPNESS_CONFIGS = ["gd_sharpness_lr0.04", "gd_sharpness_lr0.1", "gd_sharpness_lr0.2"]



def sharpness_facts(name, run):
    """What one full-batch run's sharpness measurements show (eval.sharpness_every), as plain numbers:
    the sharpness at the start, at its lowest, at its highest after that (each with its step) and at the
    end, against 1/lr and 2/lr; how many measurements were at or below 1/lr; the last third's mean as a
    fraction of 2/lr; and how often the training loss rose between evaluations. None for a run that
    measured no sharpness."""
    cfg, history = run["cfg"], run["history"]
    rows = [r for r in history if "sharpness" in r]
    if not rows:
        return None
    lr, b = cfg.optim.lr, cfg.train.batch_size
    low = min(range(len(rows)), key=lambda i: rows[i]["sharpness"])
    high = max(rows[low:], key=lambda r: r["sharpness"])
    last_third = [r["sharpness"] for r in rows[len(rows) - max(1, len(rows) // 3):]]
    rises = [r for before, r in zip(history, history[1:]) if r["train_loss"] > before["train_loss"]]
    threshold = rows[0]["sharpness_threshold"]
    return dict(name=name, lr=lr, one_over_lr=1 / lr, threshold=threshold, start=rows[0]["sharpness"],
                low=rows[low]["sharpness"], low_step=round(rows[low]["points"] / b), high=high["sharpness"], high_step=round(high["points"] / b),
                end=rows[-1]["sharpness"], steps=round(history[-1]["points"] / b), measurements=len(rows),
                every_steps=round((rows[1]["points"] - rows[0]["points"]) / b) if len(rows) > 1 else 0,
                below_one_over_lr=sum(r["sharpness"] <= 1 / lr for r in rows),
                last_third_of_threshold=None if threshold is None else sum(last_third) / len(last_third) / threshold,
                loss_rises=len(rises), evaluations=len(history), start_loss=history[0]["train_loss"], end_loss=history[-1]["train_loss"],
                test_error=history[-1]["test_error"])


def sharpness_sentences(facts):
    """A few sentences per run that hold problem 7's step condition lr <= 1/L against the measurements,
    then what the runs say of that condition together; only what the numbers say."""
    out = []
    for f in facts:
        head = f"At lr = {f['lr']:g} (1/lr = {f['one_over_lr']:.3g}, 2/lr = {f['threshold']:.3g}), the sharpness started at {f['start']:.3g}"
        if f["below_one_over_lr"] == f["measurements"]:
            cond = f", and stayed at or below 1/lr at all {f['measurements']} measurements: problem 7's lr <= 1/L held locally throughout"
        else:
            where = ("already above 2/lr, where gradient descent on a quadratic diverges" if f["start"] > f["threshold"] else
                     "above 1/lr" if f["start"] > f["one_over_lr"] else "at or below 1/lr")
            cond = (f", {where}; lr <= 1/L held at {f['below_one_over_lr']} of {f['measurements']} measurements")
        if f["high_step"] == f["low_step"]:  # its lowest was its last
            path = f". It fell to {f['end']:.3g} by the end"
        else:
            fell = f" fell to {f['low']:.3g} by step {f['low_step']}, then" if f["low_step"] > 0 else ""
            path = f". It{fell} rose to {f['high']:.3g} (step {f['high_step']}) and ended at {f['end']:.3g}"
        edge = (f", {100 * f['last_third_of_threshold']:.0f}% of 2/lr on average over the last third of the run"
                if f["last_third_of_threshold"] is not None else "")
        loss = ("falling at every evaluation" if f["loss_rises"] == 0 else
                f"rising between {f['loss_rises']} of {f['evaluations'] - 1} pairs of consecutive evaluations")
        out.append(f"{head}{cond}{path}{edge}. The training loss went from {f['start_loss']:.4g} to {f['end_loss']:.4g} in "
                   f"{f['steps']} steps, {loss}.")
    never = [f for f in facts if f["below_one_over_lr"] == 0 and f["end_loss"] < f["start_loss"]]
    if never:
        rates = " and ".join(format(f["lr"], "g") for f in never)
        losses = " and ".join(format(f["end_loss"], ".4g") for f in never)
        out.append(f"lr <= 1/L is sufficient, not necessary: at lr = {rates} it held at no measurement, and the training loss still fell, to {losses}.")
    return out


# (command, what it does): the README's table of commands (a test keeps the two equal) and REPORT.pdf's.
COMMANDS = [
    ("make train [CONFIG=configs/relu.toml] [ARGS=...]", "set up .venv on first use, then train one config"),
    ("make test", "the fast test tier (a few minutes): every Function's gradcheck, the config, optimiser, tape, data and policy checks, one short real run"),
    ("make test-all", "every test, the full trainings, PDF builds and torchrun included (what CI runs)"),
    ("python -m nnhw.train CONFIG [key=value ...]", "train one model; curves in tb_logs/, a checkpoint, summary.json and figures in its run folder"),
    ("python -m nnhw.train CONFIG --seeds 0,1,2", "one run per seed, then the mean +- std of their results in seeds_*.json"),
    ("python -m nnhw.train CONFIG --seeds 0,1,2 --reuse", "the same, taking each seed's finished run of the same config from tb_logs/ when it replays as the same arithmetic: a seed set over several sittings"),
    ("python -m nnhw.train --resume RUN_DIR", "continue a run from its checkpoint, bit for bit as if never stopped"),
    ("python -m nnhw.committee RUN_DIR ...", "the test error of several finished runs' mean softmax output (--seeds reports its seeds')"),
    ("python -m nnhw.sweep CONFIG", "the learning-rate threshold of 4.1.2 and 4.2.2: short runs over a grid of rates"),
    ("python -m nnhw.replay RUN_DIR ...", "does the code at hand still compute these runs? replays each run's first steps"),
    ("python -m nnhw.report", "reports/REPORT.md and the hand-in reports/REPORT.pdf from the newest finished runs"),
    ("python -m nnhw.plot RUN_DIR", "redraw a run's loss, error and weight figures"),
    ("python -m nnhw.theory", "the claims of 2.2, 2.3 and 7, computed"),
    ("python -m nnhw.autodiff [--full]", "5.1 and 5.2 by hand against autograd, and 5.3's cost of forward against reverse mode"),
    ("python -m nnhw.config", "the config reference, docs/config.md"),
    ("python tools/bench.py", "seconds per pass of nnhw beside the same model in built-in layers, measured in the same run; --time-to-99 and --hvp time other things (its docstring)"),
    ("python examples/minimal.py", "the whole idea in one short script: a two-layer MLP trained for one epoch"),
    ("tensorboard --logdir tb_logs", "the curves, the model summary and one HParams row per run"),
]

POOLING_NAMES = {"avg": "average", "max": "max"}  # model.pool_type -> words


def pct(x, missing="n/a"):
    """1.2345 -> '1.23%'; None -> `missing`."""
    return missing if x is None else f"{x:.2f}%"


def mean_std(stat, unit="%"):
    """'0.77 +- 0.04% (3 seeds)' from an aggregate's statistic (summary.aggregate)."""
    if stat is None:
        return "n/a"
    return f"{stat['mean']:.2f} +- {stat['std']:.2f}{unit} ({stat['n']} seed{'s' if stat['n'] != 1 else ''})"


def short_commit(commit):
    """The first 12 hex digits, keeping '-dirty' (code that differed from the commit) in view."""
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def show(v):
    """A computed value as the theory's printout and the report print it: 4 significant digits,
    lists as [a, b], booleans as yes/no, integers and text as they are."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "0" if v == 0 else f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(show(x) for x in v) + "]"
    return str(v)


def sweep_rates(sw):
    """(threshold, diverging) of a sweep (nnhw.sweep) as words."""
    return tuple("none on the grid" if sw[key] is None else f"{sw[key]:g}" for key in ("threshold_lr", "diverging_lr"))


def seeds_text(seeds):
    """One sentence on a --seeds set: mean +- std of the final and lowest test errors, the committee,
    each seed's final error and time, the commits."""
    if seeds is None:
        return None
    st = seeds["stats"]
    text = (f"over seeds {', '.join(map(str, seeds['seeds']))}: final test error {mean_std(st['final_test_error'])}; "
            f"lowest, chosen on the test set, {mean_std(st['lowest_test_error'])}")
    if st["seconds_to_99"]:
        text += f"; 99% test accuracy after {mean_std(st['seconds_to_99'], ' s')} of training"
    if committee_text(seeds) != "n/a":
        text += f"; the seeds' committee {committee_text(seeds)}"
    text += f"; each seed's final error{timed_label(seeds)}: " + ", ".join(f"{pct(r['final_test_error'])}{seed_time(r)}" for r in seeds["runs"])
    return text + f" (commit {', '.join(short_commit(c) for c in seeds['git_commits'])})"


def minutes(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def committee_text(seeds):
    """The seeds' committee's test error, or 'n/a' for a seed set made before sets had one."""
    committee = (seeds or {}).get("committee")
    error = committee.get("test_error") if isinstance(committee, dict) else None
    return pct(error) if isinstance(error, (int, float)) else "n/a"


def seed_time(run):
    """' (17.3 min + 6.1 min)': one seed's training and evaluation time where its aggregate has them
    (sets made before aggregates kept them have not), else ''."""
    train, evaluation = run.get("train_seconds"), run.get("eval_seconds")
    return f" ({minutes(train)} + {minutes(evaluation)})" if isinstance(train, (int, float)) and isinstance(evaluation, (int, float)) else ""


def timed_label(seeds):
    """' (training + evaluation)' where the set's runs say their times (seed_time), else ''."""
    return " (training + evaluation)" if any(seed_time(r) for r in seeds["runs"]) else ""


def schedule_text(o):
    if o.schedule == "constant":
        return "constant"
    if o.schedule == "step":
        return f"x{o.gamma:g} after {', '.join(f'{m:g}' for m in o.milestones)} passes"
    if o.schedule == "exponential":
        return f"x{o.gamma:g} after each pass"
    return f"{o.schedule} to {o.final_fraction:g} x lr"


def model_text(m):
    """The architecture in one line: 784 - 200 - 10, sigmoid hidden, identity outputs; or the CNN's layers."""
    if m.arch == "cnn":
        pooling = f"{POOLING_NAMES[m.pool_type]} pooling {m.pool}x{m.pool} stride {m.pool_stride} after each" if m.pool > 1 else "no pooling"
        return (f"CNN: conv channels {m.conv_channels}, filters {m.conv_kernel} (padding {m.conv_padding}"
                + (f", strides {m.conv_stride}" if m.conv_stride else "") + f"), {pooling}; fully connected {m.hidden}; {m.transfer}")
    return " - ".join(str(d) for d in [N_PIXELS, *m.hidden, N_CLASSES]) + (f", {m.transfer} hidden" if m.hidden else "") + f", {m.output_transfer} outputs"


def augmentation_text(t):
    affine = f"random shifts up to {t.augment_shift:g} px, rotations up to {t.augment_rotate:g} deg, scale +-{t.augment_scale:g}"
    return {
        "shift": f"random shifts up to {t.augment_shift:g} px, on the device",
        "affine": f"{affine}, on the device",
        "elastic": f"{affine}, then an elastic distortion (alpha {t.elastic_alpha:g} px, sigma {t.elastic_sigma:g} px), on the device",
    }.get(t.augment)


def parameter_rows(cfg):
    """(parameter, value) for every choice the homework asks to state: the model, loss, split, batch,
    epochs, optimiser, rate and schedule, momentum, lambda, initialisation, seed, and what else is on."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    rows = [
        ("model", model_text(m)),
        ("loss", m.loss),
        ("training split", cfg.data.train_split + (" (standardised)" if cfg.data.standardize else "")),
        ("batch size", f"{t.batch_size}"),
        ("epochs", f"{t.epochs:g}"),
        ("optimiser", "momentum SGD" if o.optimizer == "sgd" else f"Adam (beta2 {o.beta2:g}, eps {o.eps:g})"),
        ("learning rate", f"{o.lr:g}"),
        ("schedule", schedule_text(o) + (f", after a linear warm-up over the first {o.warmup:g} of the run" if o.warmup else "")),
        ("momentum" if o.optimizer == "sgd" else "beta1", f"{o.momentum:g}"
         + (f", climbing linearly from {o.momentum_start:g} over the first {o.momentum_ramp:g} passes" if o.momentum_ramp else "")),
        ("lambda (L2)", f"{o.l2:g}" + (" (biases too)" if o.l2_bias else " (weights only)")),  # and batch norm's gamma, beta
        *([("max-norm", f"each unit's incoming weights kept at norm <= {o.max_norm:g}")] if o.max_norm else []),
        ("initialisation", f"{m.init} (scale {m.init_scale:g}), biases {m.bias_init:g}"),
        ("seed", f"{cfg.run.seed}"),
        ("backward engine", t.engine + (", torch.compile" if t.compile else "")),
    ]
    if m.dropout_input or m.dropout_hidden or any(m.dropout_conv):
        maps = ", feature maps " + " ".join(f"{p:g}" for p in m.dropout_conv) if any(m.dropout_conv) else ""
        rows.append(("dropout", f"input {m.dropout_input:g}, hidden {m.dropout_hidden:g}{maps}"))
    if m.batch_norm:
        where = "every convolution's pooling" if m.batch_norm_after_pool else "every convolution"
        rows.append(("batch normalisation", f"after {where} and hidden layer; running averages' momentum {m.batch_norm_momentum:g}"))
    if t.augment != "none":
        rows.append(("augmentation", augmentation_text(t)))
    return rows
