"""Adversarial training (train.adversarial): VAT's and FGSM's terms against the same math written with
built-in ops, the running averages that the moved passes leave alone, and the configs it refuses."""

import pytest
import torch
import torch.nn.functional as F

from nnhw import config, trainer
from nnhw.checkpoint import TrainState
from nnhw.config import ConfigError
from nnhw.data import N_PIXELS, PIXEL_STD, Split

from conftest import REPO

# relu.toml's MLP with one batch-normalised hidden layer of 16, logits and cross-entropy: W1 -> batch norm (g1, bn1) -> relu -> W2, b2
BN_MLP = ["model.hidden=[16]", "model.batch_norm=true", "train.batch_size=20", 'train.engine="autograd"', 'model.output_transfer="identity"', 'model.loss="cross_entropy"', 'run.device="cpu"', "data.standardize=true"]


def reference_forward(p, x):
    """The same net in built-in ops: batch statistics, no running averages."""
    h = F.batch_norm(x @ p["W1"].T, None, None, p["g1"], p["bn1"], training=True)
    return F.linear(h.relu(), p["W2"], p["b2"])


def kl(a, b):
    """KL(softmax(a) || softmax(b)), averaged over the rows."""
    return F.kl_div(torch.log_softmax(b, 1), torch.log_softmax(a, 1), reduction="batchmean", log_target=True)


def unit_rows(t):
    return t / t.norm(dim=1, keepdim=True)


def reference_vat(p, x, eps, xi, gen):
    clean = reference_forward(p, x).detach()
    d = (xi * unit_rows(torch.randn(x.shape, generator=gen, dtype=x.dtype))).requires_grad_()
    (g,) = torch.autograd.grad(kl(clean, reference_forward(p, x + d)), d)
    return kl(clean, reference_forward(p, x + eps * unit_rows(g)))


def reference_fgsm(p, x, y, eps):
    x = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(reference_forward(p, x), y), x)
    return F.cross_entropy(reference_forward(p, x.detach() + eps * g.sign()), y)


def net_and_batch(*overrides):
    cfg = config.load(REPO / "configs" / "relu.toml", [*BN_MLP, *overrides])
    net = trainer.build(cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    params = {n: (t.detach().double() + 0.1 * torch.randn(t.shape, generator=gen, dtype=torch.float64)).requires_grad_()
              for n, t in net.params.items()}  # float64, away from the initial gamma = 1, beta = 0
    x, y = torch.randn(20, N_PIXELS, generator=gen, dtype=torch.float64), torch.randint(0, 10, (20,), generator=gen)
    return cfg, net, params, x, y


def test_vat_term_is_the_kl_at_the_power_iterations_direction():
    cfg, net, p, x, y = net_and_batch('train.adversarial="vat"', "train.adversarial_eps=2.0", "train.vat_xi=1e-6",
                                      "train.adversarial_weight=0.5")
    out = net.forward(p, x, training=True, moving=False)
    ours = net.adversarial.term(p, x, y, out, None, torch.Generator().manual_seed(7))
    pixel = 1 / PIXEL_STD  # eps and xi are in pixel units; x is standardised
    ref = 0.5 * reference_vat(p, x, 2.0 * pixel, 1e-6 * pixel, torch.Generator().manual_seed(7))
    assert ref.item() > 1e-4  # a real move of the outputs, not a KL of 0
    # the probe's gradient is a difference of outputs 1e-6 apart: rounding enters the direction at ~1e-16 / 1e-6
    torch.testing.assert_close(ours, ref, rtol=1e-7, atol=0)
    names = sorted(p)
    torch.testing.assert_close(torch.autograd.grad(ours, [p[n] for n in names]), torch.autograd.grad(ref, [p[n] for n in names]))
    # the power iteration's direction moves the outputs far more than a random one of the same norm
    random = 2.0 * pixel * unit_rows(torch.randn(x.shape, generator=torch.Generator().manual_seed(8), dtype=x.dtype))
    assert ref.item() > 10 * 0.5 * kl(out.detach(), reference_forward(p, x + random)).item()


def test_fgsm_term_is_the_loss_at_the_signed_gradients_step():
    cfg, net, p, x, y = net_and_batch('train.adversarial="fgsm"', "train.adversarial_eps=0.1")
    x = x.requires_grad_()
    out = net.forward(p, x, training=True, moving=False)
    loss = net.loss_fn(out, y)
    ours = net.adversarial.term(p, x, y, out, loss, None)
    ref = reference_fgsm(p, x.detach(), y, 0.1 / PIXEL_STD)
    assert ours.item() > loss.item()  # the step goes uphill
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)
    names = sorted(p)
    torch.testing.assert_close(torch.autograd.grad(ours, [p[n] for n in names]), torch.autograd.grad(ref, [p[n] for n in names]))


@pytest.mark.parametrize("kind", ["vat", "fgsm"])
def test_moved_passes_leave_the_running_averages_to_the_clean_pass(kind):
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.rand(100, N_PIXELS, generator=gen), torch.randint(0, 10, (100,), generator=gen))
    ran = {}
    for adversarial in ("none", kind):
        cfg = config.load(REPO / "configs" / "relu.toml", [*BN_MLP, f'train.adversarial="{adversarial}"'])
        t = trainer.Trainer.start(cfg, torch.device("cpu"), split)
        state = TrainState()
        t.step(state)
        ran[adversarial] = (t.net, state.fingerprint["losses"][0], state.fingerprint["initial_loss"])
    (plain, plain_loss, plain_initial), (moved, moved_loss, moved_initial) = ran["none"], ran[kind]
    assert moved_initial == plain_initial  # the loss a replay on another CPU checks holds no adversarial term
    # The same first batch: its clean pass, the same in both runs, is the only one that moved the averages.
    for name in plain.running:
        torch.testing.assert_close(moved.running[name], plain.running[name], rtol=0, atol=0)
    assert not torch.equal(plain.running["mean.1"], torch.zeros_like(plain.running["mean.1"]))
    # The term is added to the loss, and it changes the update.
    assert moved_loss > plain_loss
    assert not torch.equal(moved.params["W1"], plain.params["W1"])


@pytest.mark.parametrize("overrides, words", [
    (['train.adversarial="vat"'], "train.engine = 'autograd'"),  # relu.toml runs on the tape
    (['train.adversarial="fgsm"', 'train.engine="autograd"', "train.compile=true"], "train.compile = false"),
    (['train.adversarial="vat"', 'train.engine="autograd"', "model.dropout_hidden=0.5"], "dropout"),
    (['train.adversarial="vat"', 'train.engine="autograd"', "train.adversarial_eps=0"], "adversarial_eps"),
])
def test_configs_that_adversarial_training_cannot_run_are_refused(overrides, words):
    with pytest.raises(ConfigError, match="train.adversarial") as err:
        config.load(REPO / "configs" / "relu.toml", overrides)
    assert words in str(err.value)
