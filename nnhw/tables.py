"""`python -m nnhw.tables`: the results tables of the README and docs/results.md, from the runs.

Each committed config's newest finished run and its seed set (nnhw.inputs: the runs the report takes,
from tb_logs/ and reports/runs/) give one row: the final test error as mean +- std over the seeds, each
seed's, the seeds' committee, the test error at the best dev error, the lowest test error (chosen on
the test set), the passes, training and evaluation per seed (means over the seeds) and the training
time to 99% test accuracy. Beside them, the published rows that docs/results.md sets nnhw's against
(BESIDE, with their sources). The command prints the three tables; the README and docs/results.md hold
them as printed, and a test keeps them equal, so that no number in them is typed by hand.
"""

import sys

from .command import Parser, run_command
from .describe import QUESTIONS, committee_text, minutes, pct, question_label
from .inputs import gather


def stat(st, unit="%"):
    return "n/a" if st is None else f"{st['mean']:.2f} ± {st['std']:.2f}{unit}"


def row_of(question, name, what, run):
    """One config's numbers as table cells, or None when it has no finished run."""
    if run is None:
        return None
    s, seeds = run["summary"], run.get("seeds")
    st = seeds["stats"] if seeds else None
    n = len(seeds["runs"]) if seeds else 1
    t99 = st["seconds_to_99"] if st else None
    reached = "never" if not t99 else f"{t99['mean']:.3g} s" + ("" if t99["n"] == n else f" ({t99['n']} of {n} seeds)")
    return dict(
        config=f"`{name}`", homework=question_label(question, what),
        final=f"**{stat(st['final_test_error'])}**" if st else f"**{pct(s['final']['test_error'])}** (1 seed)",
        each=", ".join(f"{r['final_test_error']:.2f}" for r in seeds["runs"]) if seeds else f"{s['final']['test_error']:.2f}",
        committee=committee_text(seeds), best_dev=stat(st["test_error_at_best_dev"]) if st else pct(s["test_error_at_best_dev"]),
        lowest=stat(st["lowest_test_error"]) if st else pct(s["lowest_test_error"]), passes=f"{s['passes']:g}",
        train=minutes(st["train_seconds"]["mean"] if st else s["train_seconds"]),
        evaluation=minutes(st["eval_seconds"]["mean"] if st and st.get("eval_seconds") else s["eval_seconds"]),
        to_99=reached)


README_COLUMNS = [("config", "config"), ("homework", "homework"), ("final test error", "final"), ("each seed", "each"),
                  ("the seeds' committee", "committee"), ("lowest test error (chosen on test)", "lowest"), ("passes", "passes"),
                  ("training + evaluation per seed", "train+evaluation"), ("training time to 99% test accuracy", "to_99")]
RESULTS_COLUMNS = [("config", "config"), ("homework", "homework"), ("final test error", "final"), ("each seed", "each"),
                   ("the seeds' committee", "committee"), ("test error at best dev", "best_dev"),
                   ("lowest test error (chosen on test)", "lowest"), ("passes", "passes"), ("training per seed", "train"),
                   ("evaluation per seed", "evaluation"), ("training time to 99% test accuracy", "to_99")]


def markdown(rows, columns):
    def cell(row, key):
        return f"{row['train']} + {row['evaluation']}" if key == "train+evaluation" else row[key]

    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(r, k) for _, k in columns) + " |" for r in rows])


# (the published row, nnhw's configs for it with a note on how each differs, the published numbers)
BESIDE = [
    ("softmax (logistic) regression", [("softmax", "")], "7.49%, a tuned logistic regression (deeplearning.net tutorial)"),
    ("one hidden layer, 800 units, cross-entropy", [("sigmoid", "200 units, train split"), ("wide", "2048 units, dropout")],
     "1.6% (Simard et al. 2003)"),
    ("MLP on distorted images", [("mlp_aug", "")], "affine 1.1%, elastic 0.7% (Simard et al. 2003, 800 units)"),
    ("MLP, 2+ hidden layers, no augmentation", [("deep", ""), ("mlp_maxnorm", "")],
     "3x1024 ReLU, dropout and max-norm, 1.06% (Srivastava et al. 2014)"),
    ("MLP, adversarial training, no augmentation", [("mlp_vat", "50 passes, not 100")],
     "virtual adversarial training, 0.64 ± 0.05% (Miyato et al. 2016); adversarial (FGSM) training of a maxout MLP 0.78% (Goodfellow et al. 2015)"),
    ("CNN, no augmentation", [("cnn", ""), ("cnn_bn", ""), ("cnn_bn_deep", "")], "Jarrett et al. 2009 0.53%; stochastic pooling 0.47%"),
    ("CNN with augmentation, one model", [("cnn_aug", ""), ("cnn_bn_aug", ""), ("cnn_bn_aug_deep", "")], "0.35% (Ciresan et al. 2011)"),
]


def beside_markdown(found):
    """The published rows with nnhw's final test errors (and committees) beside them, from the table's rows."""
    by_name = {r["config"].strip("`"): r for r in found}

    def ours(name, note):
        r = by_name.get(name)
        if r is None:
            return f"{name}: no finished run"
        committee = "" if r["committee"] == "n/a" else f" (committee {r['committee']})"
        return f"{name}{f' ({note})' if note else ''} {r['final'].strip('*')}{committee}"

    lines = ["| row | nnhw, mean final test error | published |", "|---|---|---|"]
    return "\n".join(lines + [f"| {row} | {'; '.join(ours(n, note) for n, note in configs)} | {published} |"
                              for row, configs, published in BESIDE])


def rows(log_dir="tb_logs", out="reports"):
    """A row for each committed config with a finished run, in the homework's order."""
    return [r for q, name, what in QUESTIONS if (r := row_of(q, name, what, gather(name, log_dir, out))) is not None]


def tables_command(argv):
    p = Parser(prog="python -m nnhw.tables", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--log-dir", default="tb_logs", help="folder with the runs (default tb_logs)")
    p.add_argument("--out", default="reports", help="the report's folder, whose runs/ holds the kept runs (default reports)")
    args = p.parse_args(argv)
    found = rows(args.log_dir, args.out)
    print("README.md:\n\n" + markdown(found, README_COLUMNS) + "\n\ndocs/results.md:\n\n" + markdown(found, RESULTS_COLUMNS)
          + "\n\ndocs/results.md, beside the published rows:\n\n" + beside_markdown(found))
    return 0


def main(argv=None):
    """`python -m nnhw.tables`: the exit code (nnhw.command)."""
    return run_command("nnhw.tables", tables_command, argv)


if __name__ == "__main__":
    sys.exit(main())
