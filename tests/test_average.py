"""Weight averaging (optim.ema) and the augmentation schedule (train.augment_off_last): what
evaluation reads, what a checkpoint keeps, and which batches are moved."""

import pytest
import torch

from nnhw import checkpoint, config, models, train
from nnhw.checkpoint import TrainState, load_checkpoint
from nnhw.data import N_PIXELS, Split
from nnhw.evaluate import evaluate
from nnhw.optim import WeightAverage
from nnhw.trainer import Trainer

from conftest import REPO, killed_after_checkpoint

BN_MLP = ["model.hidden=[16]", "model.batch_norm=true", "train.batch_size=20", "optim.ema=0.9", 'run.device="cpu"']


def toy_split(n=100, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, N_PIXELS, generator=gen), torch.randint(0, 10, (n,), generator=gen))


def test_the_average_moves_by_its_decay_with_the_warm_up():
    w = {"W1": torch.zeros(3)}
    avg = WeightAverage(0.5, w, {"mean.1": torch.zeros(2)})
    expected = torch.zeros(3)
    for t, value in enumerate([1.0, 2.0, 4.0, 8.0], start=1):
        w["W1"].fill_(value)
        avg.update(w, {"mean.1": torch.full((2,), value)}, t)
        d = min(0.5, (1 + t) / (10 + t))  # 0.18, 0.25, 0.31, 0.36: all below 0.5
        expected = d * expected + (1 - d) * value
        torch.testing.assert_close(avg.params["W1"], expected)
        torch.testing.assert_close(avg.running["mean.1"], expected[:2])
    for t in (50, 51):  # later, the decay itself
        before = avg.params["W1"].clone()
        avg.update(w, {"mean.1": w["W1"][:2]}, t)
        torch.testing.assert_close(avg.params["W1"], 0.5 * before + 0.5 * w["W1"])


def test_evaluation_reads_the_average_and_its_running_averages():
    cfg = config.load(REPO / "configs" / "relu.toml", BN_MLP)
    split = toy_split()
    trainer = Trainer.start(cfg, torch.device("cpu"), split)
    state = TrainState()
    for _ in range(5):
        trainer.step(state)
    net = trainer.net
    params, forward = net.evaluated()
    assert params is net.average.params and not torch.equal(params["W1"], net.params["W1"])
    assert not torch.equal(net.average.running["mean.1"], net.running["mean.1"])
    by_hand = models.make_forward(net.model, net.average.running)(net.average.params, split.x)
    torch.testing.assert_close(forward(params, split.x), by_hand, rtol=0, atol=0)
    assert evaluate(params, forward, net.loss_fn, split, 50) != evaluate(net.params, net.forward, net.loss_fn, split, 50)
    # Without the key the trained weights are what evaluation reads.
    plain = Trainer.start(config.load(REPO / "configs" / "relu.toml", [*BN_MLP, "optim.ema=0"]), torch.device("cpu"), split).net
    assert plain.average is None and plain.evaluated()[0] is plain.params


def test_the_weight_average_cannot_change_on_resume():
    saved = config.to_dict(config.load(REPO / "configs" / "relu.toml", BN_MLP))
    with pytest.raises(config.ConfigError, match=r"^optim.ema: cannot change on --resume"):
        checkpoint.resume_config(saved, ["optim.ema=0.99"])


def test_augmentation_off_for_the_last_passes_must_leave_some_on():
    with pytest.raises(config.ConfigError, match=r"^train.augment_off_last: 3 passes without augmentation leave none of the run's 3"):
        config.load(REPO / "configs" / "relu.toml", ["train.epochs=3", "train.augment_off_last=3", 'train.augment="shift"'])


def test_the_last_passes_train_on_the_images_as_they_are(monkeypatch):
    """100 images in batches of 20 over 3 passes, the last 1.5 unaugmented: the first 8 batches moved."""
    cfg = config.load(REPO / "configs" / "relu.toml", [*BN_MLP, "train.epochs=3", 'train.augment="shift"', "train.augment_off_last=1.5"])
    moved, real = [], models.augment
    monkeypatch.setattr(models, "augment", lambda x, *a, **k: moved.append(len(x)) or real(x, *a, **k))
    trainer, state = Trainer.start(cfg, torch.device("cpu"), toy_split()), TrainState()
    while state.points < trainer.total_points:
        trainer.step(state)
    assert state.step == 15 and moved == [20] * 8  # points 0-140 moved; from 150 on (1.5 passes) as they are


@pytest.mark.slow  # two short real runs
def test_a_resume_keeps_the_weight_average_bit_for_bit(tmp_path, mnist_root, monkeypatch):
    """Killed mid-pass and resumed, a run with optim.ema and batch normalisation ends with the average
    (parameters and running averages) of the run never stopped, and its evaluations read that average."""
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    extra = ["data.train_points=200", "train.epochs=3", "eval.every=150", "eval.max_points=100", "model.batch_norm=true",
             "optim.ema=0.95", "train.batch_size=50", 'train.augment="shift"', "train.augment_off_last=1"]

    def cfg(folder):
        return config.load(REPO / "configs" / "relu.toml", [f'run.log_dir="{tmp_path / folder}"', *extra])

    whole_dir, status, _ = train.run(cfg("a"))
    assert status == "finished"
    killed_after_checkpoint(monkeypatch, 3, lambda: train.run(cfg("b")))
    (killed_dir,) = (tmp_path / "b" / "relu").iterdir()
    assert load_checkpoint(killed_dir)["points"] == 300
    assert train.main(["--resume", str(killed_dir)]) == 0
    a, b = load_checkpoint(whole_dir), load_checkpoint(killed_dir)
    for part in ("params", "running"):
        assert a["average"][part].keys() == b["average"][part].keys() and a["average"][part]
        assert all(torch.equal(a["average"][part][n], b["average"][part][n]) for n in a["average"][part])
    assert a["history"][-1]["test_error"] == b["history"][-1]["test_error"]
    assert not torch.equal(a["average"]["params"]["W1"], a["params"]["W1"])
