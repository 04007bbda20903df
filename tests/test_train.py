"""Short real runs of the training loop on ../shared/data (a fraction of an epoch each)."""

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnhw import checkpoint, config, seeds, summary, train
from nnhw.checkpoint import load_checkpoint

from conftest import REPO, SHORT, killed_after_checkpoint, run_cli


def short_cfg(tmp_path, name="relu", extra=()):
    return config.load(REPO / "configs" / f"{name}.toml", [*SHORT, f'run.log_dir="{tmp_path}"', *extra])


def scalars(path, tag):
    """(step, value) of each event of `tag` under path, in the order written: a resumed run adds an event
    file, and the files' names (time, host, process, a counter) need not sort in that order."""
    acc = EventAccumulator(str(path))
    acc.Reload()
    return [(e.step, e.value) for e in sorted(acc.Scalars(tag), key=lambda e: e.wall_time)] if tag in acc.Tags()["scalars"] else None


def test_train_points_evaluates_part_of_the_training_split_but_at_the_last_evaluation(tmp_path, monkeypatch, mnist_root):
    """eval.train_points: every evaluation but the last reads the training split's first points only
    (with max_points too, the fewer of the two); dev and test, and the last evaluation, read all they would."""
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    read, real = [], train.evaluate

    def evaluate(params, forward, loss_fn, split, batch_size, world=None, max_points=0):
        read.append((len(split), max_points))
        return real(params, forward, loss_fn, split, batch_size, world, max_points)

    monkeypatch.setattr(train, "evaluate", evaluate)
    cfg = config.load(REPO / "configs" / "relu.toml", ["train.epochs=0.02", "eval.every=500", "eval.train_points=300",
                                                       "eval.max_points=2000", f'run.log_dir="{tmp_path}"'])
    run_dir, status, _ = train.run(cfg)
    train_reads = [points for n, points in read if n == 50000]  # relu's training split; dev and test hold 10,000
    assert status == "finished" and train_reads == [300, 300, 2000]  # evaluations at 0, 500 and 1,000 points
    assert [points for n, points in read if n == 10000] == [2000] * 6
    last = json.loads((run_dir / "history.json").read_text())[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["train_error"] == last["train_error"]  # the summary's training error is the full read's


def test_cli_short_run_writes_curves_checkpoint_and_summary(tmp_path, mnist_root):
    res = run_cli("nnhw.train", "configs/sigmoid.toml", *SHORT, f"run.log_dir={tmp_path}", env={"NNHW_DATA_ROOT": str(mnist_root)})
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "sigmoid" / res.stdout.strip().splitlines()[-1].split("/")[-1]
    assert res.stdout.strip().splitlines()[-1] == str(run_dir)  # the last line printed is the run folder
    # 0.04 epochs = 2,000 points = 40 updates of 50; evaluations at 0, 500, ..., 2000.
    for split in ("train", "dev", "test"):
        for tag in ("loss", "error"):
            curve = scalars(run_dir / split, tag)
            assert [s for s, _ in curve] == [0, 500, 1000, 1500, 2000], (split, tag)
    assert scalars(run_dir, "lr")[0][1] == pytest.approx(config.load(REPO / "configs" / "sigmoid.toml").optim.lr)
    dev_loss = scalars(run_dir / "dev", "loss")
    assert dev_loss[-1][1] < dev_loss[0][1]  # it learns
    summary = json.loads((run_dir / "summary.json").read_text())
    hist = json.loads((run_dir / "history.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 40 and summary["epochs"] == pytest.approx(0.04)
    assert summary["best_dev_error"] == min(r["dev_error"] for r in hist)
    assert summary["lowest_test_error"] == min(r["test_error"] for r in hist)
    seconds = [r["train_seconds"] for r in hist]
    assert seconds[0] == 0 and seconds == sorted(seconds) and seconds[-1] == pytest.approx(summary["train_seconds"], abs=1e-3)
    assert summary["time_to_accuracy"] == {"98%": None, "99%": None, "99.5%": None}  # 40 updates are far from 98%
    assert summary["device"].startswith("cpu") and summary["command"].startswith("python -m nnhw.train configs/sigmoid.toml")
    assert config.load(run_dir / "config.toml").train.batch_size == 50  # the resolved config, reloadable
    ckpt = load_checkpoint(run_dir)
    assert ckpt["points"] == 2000 and set(ckpt["params"]) == {"W1", "b1", "W2", "b2"}


def final_params(run_dir):
    return load_checkpoint(run_dir)["params"]


@pytest.mark.slow  # more real runs, most in subprocesses
@pytest.mark.parametrize("extra", [(), ("optim.optimizer=adam", "optim.lr=0.003", "optim.warmup=0.5")], ids=["sgd", "adam_warmup"])
def test_resumed_run_ends_with_identical_parameters(tmp_path, mnist_root, monkeypatch, extra):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    cfg = short_cfg(tmp_path / "a", extra=extra)
    whole_dir, status, _ = train.run(cfg)
    assert status == "finished"

    # The same run, killed right after its third checkpoint is on disk (as SIGKILL would leave it).
    killed_after_checkpoint(monkeypatch, 3, lambda: train.run(short_cfg(tmp_path / "b", extra=extra)))
    (killed_dir,) = (tmp_path / "b" / "relu").iterdir()
    assert not (killed_dir / "summary.json").exists()
    saved = load_checkpoint(killed_dir)
    assert saved["points"] == 1000

    assert train.main(["--resume", str(killed_dir)]) == 0
    a, b = final_params(whole_dir), final_params(killed_dir)
    assert all(torch.equal(a[n], b[n]) for n in a)
    # The resumed run's curves have each evaluation once.
    assert [s for s, _ in scalars(killed_dir / "dev", "loss")] == [0, 500, 1000, 1500, 2000]


@pytest.mark.slow  # more real runs, most in subprocesses
def test_same_seed_same_curves(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    runs = [train.run(short_cfg(tmp_path, extra=["run.seed=3"]))[0] for _ in range(2)]
    assert runs[0] != runs[1]  # two runs of one config never share a folder
    h = [json.loads((r / "history.json").read_text()) for r in runs]
    untimed = [[{k: v for k, v in r.items() if k != "train_seconds"} for r in run] for run in h]
    assert untimed[0] == untimed[1]


@pytest.mark.slow  # more real runs, most in subprocesses
def test_unwritable_log_dir_fails_before_training(tmp_path, mnist_root):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = run_cli("nnhw.train", "configs/relu.toml", f"run.log_dir={blocker}", env={"NNHW_DATA_ROOT": str(mnist_root)})
    assert res.returncode == 2 and "cannot write the log folder" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # more real runs, most in subprocesses
def test_missing_data_is_one_line(tmp_path):
    res = run_cli("nnhw.train", "configs/relu.toml", "data.download=false", f"run.log_dir={tmp_path}", env={"NNHW_DATA_ROOT": str(tmp_path / "none")})
    assert res.returncode == 2 and "no MNIST files in" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # more real runs, most in subprocesses
def test_divergence_stops_with_lr_and_keeps_checkpoint(tmp_path, mnist_root):
    res = run_cli(
        "nnhw.train", "configs/relu.toml", *SHORT, "optim.lr=1e30", "optim.schedule=constant", f"run.log_dir={tmp_path}",
        env={"NNHW_DATA_ROOT": str(mnist_root)},
    )
    assert res.returncode == train.EXIT_DIVERGED, res.stderr
    assert "learning rate 1e+30" in res.stderr and "Traceback" not in res.stderr
    (run_dir,) = (tmp_path / "relu").iterdir()
    ckpt = load_checkpoint(run_dir)
    assert ckpt["points"] == 0 and all(torch.isfinite(p).all() for p in ckpt["params"].values())
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow  # more real runs, most in subprocesses
@pytest.mark.parametrize("name", ["wide", "deep", "mlp_aug", "mlp_maxnorm", "mlp_vat", "cnn", "cnn_aug", "cnn_bn", "cnn_bn_deep", "cnn_bn_aug", "cnn_bn_aug_deep", "fast", "fast995"])
def test_extra_credit_configs_train_a_few_steps(tmp_path, mnist_root, monkeypatch, name):
    """Each extra-credit config, as committed, takes a few real steps (dropout, augmentation, conv, max pooling, Adam) and learns."""
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    committed = config.load(REPO / "configs" / f"{name}.toml")
    short = (["train.epochs=0.05"] + (["train.augment_off_last=0.01"] if committed.train.augment_off_last else [])
             + (["model.batch_norm_momentum=0.1"] if committed.model.batch_norm_momentum < 0.1 else []))
    # ~47 steps: the schedule's last passes and batch normalisation's running averages must fit in them, not in 1,000 steps
    cfg = config.load(REPO / "configs" / f"{name}.toml", [*short, f'run.log_dir="{tmp_path}"', "eval.every=3000",
                                                          "eval.max_points=5000"])  # the first 5,000 of each split show the learning
    run_dir, status, _ = train.run(cfg)
    assert status == "finished"
    hist = json.loads((run_dir / "history.json").read_text())
    assert "dev_loss" not in hist[0]  # train+dev: curves are train and test
    assert hist[-1]["points"] == 3000 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert (run_dir / "weights.png").is_file()


def test_summary_times_the_first_evaluation_at_each_accuracy():
    cfg = config.load(REPO / "configs" / "cnn.toml")
    hist = [dict(points=p, epoch=p / 50000, lr=0.1, train_seconds=t, train_loss=0.1, train_error=e, test_loss=0.1, test_error=e)
            for p, t, e in [(0, 0.0, 90.0), (6000, 2.5, 2.0), (12000, 5.0, 0.99), (18000, 7.5, 1.01), (24000, 10.0, 0.8)]]
    state = checkpoint.TrainState(points=24000, step=100, train_seconds=10.0, eval_seconds=1.0, history=hist)
    first = summary.summarize(cfg, state, torch.device("cpu"), "finished", "cmd", 60000)["time_to_accuracy"]
    assert first["98%"] == {"epoch": 6000 / 50000, "train_seconds": 2.5}  # 2.00% error is 98% accuracy: reached
    assert first["99%"] == {"epoch": 12000 / 50000, "train_seconds": 5.0}  # the first, not the best
    assert first["99.5%"] is None  # 0.8% error is 99.2% accuracy
    state.history = [dict(r, test_error=max(r["test_error"], 1.5)) for r in hist]
    assert summary.summarize(cfg, state, torch.device("cpu"), "finished", "cmd", 60000)["time_to_accuracy"]["99%"] is None


def test_a_seed_sets_statistics_are_the_mean_and_the_sample_std_over_the_seeds_that_have_each_number():
    def seed_summary(seed, final, t99):
        return dict(name="relu", seed=seed, git_commit="abc", final=dict(test_error=final), test_error_at_best_dev=None,
                    lowest_test_error=final, time_to_accuracy={"99%": None if t99 is None else dict(epoch=1.0, train_seconds=t99)},
                    train_seconds=10.0 * (seed + 1), eval_seconds=1.0)

    agg = summary.aggregate([seed_summary(0, 1.0, 30.0), seed_summary(1, 2.0, None), seed_summary(2, 3.0, 50.0)], "cmd", ["a", "b", "c"])
    st = agg["stats"]
    assert st["final_test_error"] == dict(mean=2.0, std=1.0, min=1.0, max=3.0, n=3)  # sum of squares 2 over n - 1 = 2
    assert st["seconds_to_99"]["n"] == 2 and st["seconds_to_99"]["mean"] == 40.0  # seed 1 never got there
    assert st["seconds_to_99"]["std"] == pytest.approx(math.sqrt(200.0)) and st["test_error_at_best_dev"] is None


@pytest.mark.slow  # more real runs, most in subprocesses
def test_seeds_run_one_run_each_and_write_their_aggregate(tmp_path, mnist_root):
    res = run_cli("nnhw.train", "configs/relu.toml", "--seeds", "0,5", *SHORT, f"run.log_dir={tmp_path}",
                  env={"NNHW_DATA_ROOT": str(mnist_root)})
    assert res.returncode == 0, res.stderr
    agg_path = Path(res.stdout.strip().splitlines()[-1])
    assert agg_path.parent == tmp_path / "relu" and agg_path.name.startswith("seeds_") and agg_path.name.endswith("_0-5.json")
    agg = json.loads(agg_path.read_text())
    summaries = [json.loads((Path(r["run_dir"]) / "summary.json").read_text()) for r in agg["runs"]]
    assert [s["seed"] for s in summaries] == agg["seeds"] == [0, 5]
    # each seed is a run of its own whose command runs that seed alone (seed 0 is the config's own)
    assert summaries[0]["command"] == f"python -m nnhw.train configs/relu.toml {' '.join(SHORT)} run.log_dir={tmp_path}"
    assert summaries[1]["command"].endswith("run.seed=5")
    finals = [s["final"]["test_error"] for s in summaries]
    assert finals[0] != finals[1]  # two seeds, two results
    st = agg["stats"]["final_test_error"]
    assert st["mean"] == pytest.approx(sum(finals) / 2) and st["min"] == min(finals) and st["max"] == max(finals)
    assert st["std"] == pytest.approx(abs(finals[0] - finals[1]) / 2**0.5) and st["n"] == 2
    assert agg["stats"]["seconds_to_99"] is None  # 40 updates never get there
    assert "final test error" in res.stdout and "+-" in res.stdout
    c = agg["committee"]  # the seeds' mean softmax output, from their final checkpoints, on the same 1,000 test images
    assert c["n_images"] == 1000 and [m["test_error"] for m in c["members"]] == pytest.approx(finals, abs=1e-9)
    assert 0 <= c["test_error"] <= 100 and f"the seeds' committee (their mean softmax output): test error {c['test_error']:.2f}%" in res.stdout


@pytest.mark.slow  # more real runs, most in subprocesses
def test_reuse_takes_the_finished_seeds_that_replay_and_trains_the_rest(tmp_path, mnist_root):
    env = {"NNHW_DATA_ROOT": str(mnist_root)}
    base = ["configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}"]
    first = run_cli("nnhw.train", *base, "--seeds", "0,1", env=env)
    assert first.returncode == 0, first.stderr
    before = [r["run_dir"] for r in json.loads(Path(first.stdout.strip().splitlines()[-1]).read_text())["runs"]]
    other = run_cli("nnhw.train", *base, "optim.lr=0.01", "--seeds", "2", env=env)  # seed 2 of another config
    assert other.returncode == 0, other.stderr
    # seed 1's run stops replaying: its recorded first loss is no longer what the code computes
    path = Path(before[1]) / "summary.json"
    summary = json.loads(path.read_text())
    summary["fingerprint"]["losses"][0] *= 1.01
    path.write_text(json.dumps(summary))
    again = run_cli("nnhw.train", *base, "--seeds", "0,1,2", "--reuse", env=env)
    assert again.returncode == 0, again.stderr
    after = [r["run_dir"] for r in json.loads(Path(again.stdout.strip().splitlines()[-1]).read_text())["runs"]]
    assert after[0] == before[0] and f"seed 0: {before[0]} finished and replays as the same arithmetic" in again.stdout
    assert after[1] != before[1] and after[2] not in before  # seed 1 parts, seed 2 had only another config's run
    assert again.stdout.count("replays as the same arithmetic; taken as it is") == 1
    alone = run_cli("nnhw.train", *base, "--reuse", env=env)
    assert alone.returncode == 2 and alone.stderr.count("\n") == 1 and "--seeds" in alone.stderr


@pytest.mark.slow  # more real runs, most in subprocesses
@pytest.mark.parametrize("seeds", ["0,x", "1,1", "", "-1"])
def test_bad_seeds_are_one_line_errors(tmp_path, seeds):
    res = run_cli("nnhw.train", "configs/relu.toml", f"--seeds={seeds}", f"run.log_dir={tmp_path}")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--seeds" in res.stderr, res.stderr
    assert not any(tmp_path.iterdir())  # nothing started


def test_reuse_takes_a_run_copied_in_from_another_log_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(seeds, "replay_run", lambda run_dir, summary: (True, ""))  # replay is tested with real runs above
    cfg = short_cfg(tmp_path / "here")
    run_dir = tmp_path / "here" / cfg.run.name / "20260101-000000"
    run_dir.mkdir(parents=True)
    elsewhere = short_cfg(tmp_path / "elsewhere")  # logged first under another folder, then copied here
    (run_dir / "config.toml").write_text(config.to_toml(elsewhere))
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert seeds.finished_run_of(cfg) == run_dir
    # where it went, not what it is: the device, the data's folder and download switch (replay judges the device)
    (run_dir / "config.toml").write_text(config.to_toml(short_cfg(tmp_path, extra=['run.device="cuda"', 'data.root="/elsewhere"', "data.download=false"])))
    assert seeds.finished_run_of(cfg) == run_dir
    assert seeds.finished_run_of(short_cfg(tmp_path / "here", extra=["optim.lr=0.01"])) is None  # another recipe
    (run_dir / "summary.json").write_text(json.dumps({"status": "stopped"}))
    assert seeds.finished_run_of(cfg) is None


def test_a_resume_across_a_pass_boundary_with_dropout_and_augmentation_is_bit_for_bit(tmp_path, mnist_root, monkeypatch):
    """200 training images in batches of 50, a checkpoint every 150: killed mid-pass at 300 points, the
    resumed run must draw pass 2's order, its dropout masks and its moved images from the restored
    streams, and end with the parameters of the run never stopped."""
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    extra = ["data.train_points=200", "train.batch_size=50", "train.epochs=3", "eval.every=150", "eval.max_points=100",
             "model.dropout_hidden=0.3", 'train.augment="shift"']
    whole_dir, status, _ = train.run(short_cfg(tmp_path / "a", extra=extra))
    assert status == "finished"
    killed_after_checkpoint(monkeypatch, 3, lambda: train.run(short_cfg(tmp_path / "b", extra=extra)))
    (killed_dir,) = (tmp_path / "b" / "relu").iterdir()
    assert load_checkpoint(killed_dir)["points"] == 300  # mid-pass: the resumed run reshuffles at 400
    assert train.main(["--resume", str(killed_dir)]) == 0
    a, b = final_params(whole_dir), final_params(killed_dir)
    assert all(torch.equal(a[n], b[n]) for n in a)
