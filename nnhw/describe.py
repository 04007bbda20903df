"""One home for how nnhw writes things down: the questions, the commands, numbers and a config in words.

REPORT.md (nnhw.report), REPORT.pdf (nnhw.handin), the theory and autodiff
printouts and the README's commands table all take their wording from here, so
a percentage, a mean +- std, a commit or a model reads the same everywhere.
"""

from . import layers

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
    ("4.3", "mlp_vat", "Beyond the homework: virtual adversarial training of a batch-normalised MLP, on train+dev"),
    ("6", "cnn", "The CNN, with average pooling, on train+dev"),
    ("6", "cnn_aug", "The same CNN trained on augmented images"),
    ("6", "cnn_bn", "Beyond the homework: the published CNN recipe, with batch normalisation and strided convolutions"),
    ("6", "cnn_bn_deep", "Beyond the homework: the batch-normalised CNN at the recipe's depth, with averaged weights"),
    ("6", "cnn_bn_aug", "Beyond the homework: the batch-normalised CNN trained on augmented images"),
    ("6", "cnn_bn_aug_deep", "Beyond the homework: the augmented batch-normalised CNN at the recipe's depth, with milder moves, averaged weights and two last passes on the images as they are"),
    ("6", "fast", "Beyond the homework: a small CNN with max pooling, batch normalisation and Adam that reaches 99% test accuracy within one pass"),
    ("6", "fast995", "Beyond the homework: the fast CNN twice as wide, on shifted images, for 99.5% test accuracy within two passes"),
]

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
    ("python -m nnhw.report", "reports/REPORT.md and the hand-in reports/REPORT.pdf from the newest finished runs of each committed config (and its plain sweep), "
     "which it keeps under reports/runs/ with their figures in reports/<config>/"),
    ("python -m nnhw.plot RUN_DIR", "redraw a run's loss, error and weight figures"),
    ("python -m nnhw.theory [--out DIR]", "the claims of 2.2, 2.3 and 7, computed; with --out, their figure and numbers for the report"),
    ("python -m nnhw.autodiff [--full] [--out DIR]", "5.1 and 5.2 by hand against autograd, and 5.3's cost of forward against reverse mode; with --out, for the report"),
    ("python -m nnhw.config", "the config reference, docs/config.md"),
    ("python -m nnhw.tables", "the README's and docs/results.md's results tables, from the runs"),
    ("python tools/bench.py [--configs ...]", "seconds per pass of nnhw beside the same model in built-in layers, measured in the same run and timed in turns"),
    ("python tools/time_to_99.py", "seconds and passes to 99% and 99.5% test accuracy: configs/fast.toml and its built-in twin, three runs each in turns, and the pytorch/examples recipe"),
    ("python examples/minimal.py", "the whole idea in one short script: a two-layer MLP trained for one epoch"),
    ("tensorboard --logdir tb_logs", "the curves, the model summary and one HParams row per run"),
]


def question_label(question, what):
    """The homework question a config answers: '4.3', or '4.3, beyond' for a recipe past the homework."""
    return f"{question}, beyond" if what.startswith("Beyond the homework") else question


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
        ("model", layers.one_line(layers.describe(m)) + (f", {m.transfer} after every convolution and hidden layer" if m.arch == "cnn" else
                                                         f", {m.transfer} hidden" if m.hidden else "")
         + ("" if m.output_transfer == "identity" else f", {m.output_transfer} outputs")),
        ("loss", m.loss + (f", trained against labels smoothed by {m.label_smoothing:g}" if m.label_smoothing else "")),
        ("training split", cfg.data.train_split + (" (standardised)" if cfg.data.standardize else "")),
        ("batch size", f"{t.batch_size}"),
        ("passes over the training split (train.epochs)", f"{t.epochs:g}"),
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
