"""Assembling a run: the memory check's count, the model's description read once, the state a
checkpoint keeps, and the checkpoint format a resume accepts."""

import pytest
import torch
import torch.nn.functional as F

from nnhw import checkpoint, config, device, layers
from nnhw.rundir import RunError
from nnhw.trainer import build, make_train_step

from conftest import REPO, a_checkpoint


def need(cfg):
    return device.memory_need(cfg, layers.describe(cfg.model))


def test_memory_check_counts_each_optimisers_buffers():
    """Adam keeps two running means per parameter, momentum SGD one velocity."""
    sgd = config.load(REPO / "configs" / "cnn.toml")
    adam = config.load(REPO / "configs" / "cnn.toml", ["optim.optimizer=adam"])
    (n, need_sgd), (_, need_adam) = need(sgd), need(adam)
    assert n == sum(p.numel() for p in build(sgd, torch.device("cpu")).params.values())
    assert need_adam - need_sgd == 4 * n


def test_memory_check_counts_the_real_feature_maps():
    """Padding grows the maps: the activations counted follow the model's own geometry."""
    small = config.load(REPO / "configs" / "cnn.toml")
    padded = config.load(REPO / "configs" / "cnn.toml", ["model.conv_padding=20"])
    grown = need(padded)[1] - need(small)[1]
    maps = lambda cfg: sum(c * s * s for c, s in ((ly.width, ly.conv_shape[1]) for ly in layers.describe(cfg.model).layers if ly.kind == "conv"))  # noqa: E731
    params = lambda cfg: need(cfg)[0]  # noqa: E731
    batch = max(small.train.batch_size, small.eval.batch_size)
    assert maps(padded) > 4 * maps(small)  # 64x64 maps where 24x24 ones were
    assert grown == 4 * (4 * (params(padded) - params(small)) + 3 * batch * (maps(padded) - maps(small)))


def saved(tmp_path, **changes):
    ckpt = a_checkpoint(config.load(REPO / "configs" / "relu.toml"))
    ckpt.update(changes)
    checkpoint.save_checkpoint(tmp_path, ckpt)
    return ckpt


def test_checkpoint_format_is_checked(tmp_path):
    saved(tmp_path, format=99)
    with pytest.raises(RunError, match="its format is 99, and this nnhw reads format 3"):
        checkpoint.load_checkpoint(tmp_path)


def test_a_format_2_checkpoint_still_resumes(tmp_path):
    """Format 2 called the optimiser's state 'velocity'; it loads as 'optimizer'."""
    ckpt = saved(tmp_path)
    old = {k: v for k, v in ckpt.items() if k not in ("optimizer", "fingerprint")}
    checkpoint.save_checkpoint(tmp_path, dict(old, format=2, velocity=ckpt["optimizer"]))
    loaded = checkpoint.load_checkpoint(tmp_path)
    assert loaded["format"] == checkpoint.FORMAT and set(loaded["optimizer"]) == set(ckpt["optimizer"])


def test_a_history_without_its_keys_is_refused(tmp_path):
    saved(tmp_path, history=[{}])
    with pytest.raises(RunError, match="its history has rows without points"):
        checkpoint.load_checkpoint(tmp_path)


@pytest.mark.parametrize("override", ["data.train_points=500", 'data.train_split="train+dev"', "data.standardize=true",
                                      "train.batch_size=7", "model.hidden=[30]", "run.seed=3"])
def test_a_resume_cannot_change_what_the_checkpoint_or_the_data_order_depend_on(override):
    """The data order is a permutation of the training split: a resume that changed its size or its images
    would continue another run's order, so it is refused in one line before anything is written."""
    saved = config.to_dict(config.load(REPO / "configs" / "relu.toml"))
    key = override.partition("=")[0]
    with pytest.raises(config.ConfigError, match=rf"^{key}: cannot change on --resume"):
        checkpoint.resume_config(saved, [override])
    cfg, changed = checkpoint.resume_config(saved, ["train.epochs=40", "optim.lr=0.5"])  # a schedule may change
    assert changed == {"train.epochs": (30.0, 40.0), "optim.lr": (1.0, 0.5)} and cfg.train.epochs == 40


def test_evaluation_drops_nothing_and_a_dropout_model_evaluates_as_the_same_model_without_it():
    small = ["model.conv_channels=[4, 6]", "model.hidden=[16]"]
    cfg = config.load(REPO / "configs" / "cnn.toml", [*small, "model.dropout_input=0.2", "model.dropout_hidden=0.5", "model.dropout_conv=[0.3, 0.3]"])
    plain = config.load(REPO / "configs" / "cnn.toml", [*small, "model.dropout_input=0", "model.dropout_hidden=0", "model.dropout_conv=[]"])
    net, twin = build(cfg, torch.device("cpu")), build(plain, torch.device("cpu"))
    x = torch.rand(20, 784, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, again = net.forward(net.params, x), net.forward(net.params, x)
        assert torch.equal(first, again) and torch.equal(first, twin.forward(twin.params, x))
        assert not torch.equal(first, net.forward(net.params, x, torch.Generator().manual_seed(1)))  # training drops


def test_evaluation_in_small_batches_counts_every_point_as_one_batch_does():
    from nnhw.data import Split
    from nnhw.evaluate import evaluate

    net = build(config.load(REPO / "configs" / "sigmoid.toml"), torch.device("cpu"))
    gen = torch.Generator().manual_seed(2)
    split = Split(torch.rand(250, 784, generator=gen), torch.randint(0, 10, (250,), generator=gen))
    whole = evaluate(net.params, net.forward, net.loss_fn, split, batch_size=1000)
    for b in (1, 7, 100, 249):
        batched = evaluate(net.params, net.forward, net.loss_fn, split, batch_size=b)
        assert batched[1] == whole[1] and batched[0] == pytest.approx(whole[0], rel=1e-6), b
    assert evaluate(net.params, net.forward, net.loss_fn, split, batch_size=7, max_points=100)[1] == \
        evaluate(net.params, net.forward, net.loss_fn, Split(split.x[:100], split.y[:100]), batch_size=1000)[1]


def test_label_smoothing_changes_the_objective_trained_and_not_the_loss_evaluated():
    """With model.label_smoothing the step minimises the cross-entropy against the smoothed target
    (F.cross_entropy's label_smoothing), while evaluation reads the plain cross-entropy; at 0 the two are one."""
    cfg = config.load(REPO / "configs" / "softmax.toml", ["model.label_smoothing=0.2"])
    net = build(cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    out, y = torch.randn(8, 10, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    assert net.train_loss_fn(out, y).item() == pytest.approx(F.cross_entropy(out, y, label_smoothing=0.2).item(), rel=1e-6)
    assert net.loss_fn(out, y).item() == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
    assert net.train_loss_fn(out, y).item() != pytest.approx(net.loss_fn(out, y).item(), rel=1e-3)
    plain = build(config.load(REPO / "configs" / "softmax.toml"), torch.device("cpu"))
    assert torch.equal(plain.train_loss_fn(out, y), plain.loss_fn(out, y))
    x = torch.rand(8, 784, generator=gen)  # one step of each moves the same initial weights apart
    smoothed_step, plain_step = make_train_step(net, engine="tape"), make_train_step(plain, engine="tape")
    assert smoothed_step(x, y, 0.1).item() == pytest.approx(F.cross_entropy(plain.forward(plain.params, x), y, label_smoothing=0.2).item(), rel=1e-6)
    plain_step(x, y, 0.1)
    assert not torch.equal(net.params["W1"], plain.params["W1"])
