"""Ready for the GPU without one: one training step and one evaluation of every committed config on
simulated CUDA tensors.

Under torch's FakeTensorMode a tensor made with device "cuda" carries that device and a shape but no
data, and an operation that mixes it with a CPU tensor raises, as it would on a GPU. So a parameter,
running average, mask, batch or optimiser buffer left on the CPU fails here. Two things a machine
without a GPU cannot make are stood in for: the CUDA random generator (a CPU one, from which a fake
tensor draws nothing) and the free-memory query. The tape engine takes the step, calling each
Function's backward itself: torch's autograd engine wants a real device. For the same reason a
config that measures sharpness has its objective evaluated on its sharpness points here, and its
Hessian-vector products are left to tools/gpu_check.sh's smoke run on a real GPU.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from nnhw import config, sharpness, trainer
from nnhw.checkpoint import TrainState
from nnhw.data import Split

from conftest import REPO

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.toml"))
CUDA = torch.device("cuda")


def off_cuda(tensors):
    return [name for name, t in tensors.items() if t.device.type != "cuda"]


@pytest.fixture
def simulated_gpu(monkeypatch):
    monkeypatch.setattr(trainer, "check_memory", lambda cfg, model, device: model.n_params)
    monkeypatch.setattr(trainer, "random_streams", lambda seed, device, rank=0: (torch.Generator().manual_seed(seed + 1),
                                                                                  torch.Generator().manual_seed(seed + 2)))
    with FakeTensorMode():
        yield


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_takes_a_step_and_an_evaluation_on_simulated_cuda(name, simulated_gpu, monkeypatch):
    cfg = config.load(REPO / "configs" / f"{name}.toml", ["train.compile=false"])
    if cfg.train.adversarial == "none":  # the tape runs every Function's backward without torch.autograd's engine,
        cfg = config.load(REPO / "configs" / f"{name}.toml", ['train.engine="tape"', "train.compile=false"])
    else:  # which cannot start on a simulated GPU: the adversarial step's own tensors (its probe, its moved images) are what
        # is checked here, with gradients of the right shape and device in place of the engine's (the other configs run
        # every backward rule on the simulated device through the tape)
        monkeypatch.setattr(torch.autograd, "grad", lambda outputs, inputs, **kw: tuple(torch.zeros_like(t) for t in
                                                                                         (inputs if isinstance(inputs, (list, tuple)) else [inputs])))
    split = Split(torch.rand(300, 784, device=CUDA), torch.randint(0, 10, (300,), device=CUDA))
    run = trainer.Trainer.start(cfg, CUDA, split)
    state = TrainState(fingerprint={"checksums": None})  # a fake loss has no value for the fingerprint to note
    run.step(state)  # augmentation, dropout, batch normalisation, the update: whatever the config has
    assert state.step == 1
    net = run.net
    buffers = {k: v for k, v in net.opt.state_dict().items() if k != "t"}  # Adam's step count is a number, kept as a CPU scalar
    assert not off_cuda(net.params) and not off_cuda(net.running) and not off_cuda(buffers)
    with torch.no_grad():  # evaluation: the running averages, no dropout
        out = net.forward(net.params, split.x[:50])
        assert out.shape == (50, 10) and net.loss_fn(out, split.y[:50]).device.type == "cuda"
    if cfg.eval.sharpness_every:
        points = run.sharpness_points
        assert points.x.device.type == "cuda" and points.y.device.type == "cuda"
        with torch.no_grad():
            assert sharpness.objective(net.forward, net.loss_fn, cfg.optim, points)(net.params).device.type == "cuda"
    ckpt = run.checkpoint(state)  # what a checkpoint keeps comes back to the CPU
    assert all(t.device.type == "cpu" for t in [*ckpt["params"].values(), *ckpt["running"].values(), *ckpt["optimizer"].values()])


def test_a_tensor_left_on_the_cpu_fails_the_simulated_step(simulated_gpu, monkeypatch):
    """The simulation has teeth: running averages made on the CPU (as nnhw once made them) stop the step."""
    real = trainer.models.init_running
    monkeypatch.setattr(trainer.models, "init_running", lambda model, device: real(model, torch.device("cpu")))
    cfg = config.load(REPO / "configs" / "fast.toml", ['train.engine="tape"'])
    run = trainer.Trainer.start(cfg, CUDA, Split(torch.rand(300, 784, device=CUDA), torch.randint(0, 10, (300,), device=CUDA)))
    with pytest.raises(Exception, match="device"):
        run.step(TrainState(fingerprint={"checksums": None}))
