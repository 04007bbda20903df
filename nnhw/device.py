"""Where a run computes: the device that run.device names, what it is called, how it rounds, and whether a model fits.

`python -m nnhw.train` runs on CUDA when there is one (run.device = 'auto') and on the CPU
otherwise. A run's tensors are made where its inputs live, so that nothing is left on the CPU: the
test suite takes one step of every committed config on simulated CUDA tensors to show it.
"""

import functools
import hashlib
import os

import torch
import torch.nn.functional as F

from .config import DEVICE, ConfigError
from .optim import OPTIMIZERS

BYTES = 4  # parameters, their gradients and the optimiser's state are float32


def resolve_device(name):
    """The torch.device that run.device names ('auto': CUDA when there is one); ConfigError for a name
    that is not 'auto', 'cpu', 'cuda' or 'cuda:N', or a CUDA device this machine does not have."""
    if not DEVICE.fullmatch(name):
        raise ConfigError(f"run.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def describe_device(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


@functools.cache
def rounding_probe(device):
    """A digest of how `device` rounds the kernels a run's steps lean on: the float32 results of a matrix
    product, a convolution, a batch normalisation, a sum over a batch and a log-softmax, on fixed inputs.
    Machines with one digest round a run's first steps alike (one thread or two give one digest, and
    part by 5e-6 at most); another digest (another CPU, another build of torch) may part from them by
    rounding alone, which nnhw.replay then tells apart by running the run's own commit here."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(192, 300, generator=gen).to(device)
    x = torch.randn(16, 8, 14, 14, generator=gen).to(device)
    w = torch.randn(12, 8, 3, 3, generator=gen).to(device)
    outputs = (a @ a.t(), F.conv2d(x, w), torch.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)[0],
               x.sum((0, 2, 3)), torch.log_softmax(a, 1))
    digest = hashlib.sha256()
    for t in outputs:
        digest.update(t.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def cuda_numerics(device):
    """On CUDA, the GPU and the settings that decide its arithmetic: deterministic algorithms, and TF32
    in matrix products and cuDNN's convolutions; None on the CPU."""
    if device.type != "cuda":
        return None
    return dict(gpu=torch.cuda.get_device_name(device), deterministic=torch.are_deterministic_algorithms_enabled(),
                tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                cudnn_benchmark=torch.backends.cudnn.benchmark)


def memory_need(cfg, model):
    """(parameters, bytes) of a run of `model` (layers.describe): parameters, gradients, the optimiser's
    buffers and the checkpoint's copy, plus one batch's activations (forward, backward and a copy)."""
    copies = 3 + OPTIMIZERS[cfg.optim.optimizer].buffers
    batch = max(cfg.train.batch_size, cfg.eval.batch_size)
    return model.n_params, BYTES * (copies * model.n_params + 3 * batch * model.activations)


def free_bytes(device):
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(cfg, model, device):
    """Stop before allocating a model that cannot fit; returns the number of parameters."""
    n_params, need = memory_need(cfg, model)
    free = free_bytes(device)
    if need > free:
        raise ConfigError(
            f"model: {n_params:,} parameters need about {need / 2**30:.1f} GiB (parameters, gradients, the optimiser's state, "
            f"a checkpoint copy and a batch's activations), more than the {free / 2**30:.1f} GiB free on {device.type}; "
            "use smaller model.hidden or batch sizes"
        )
    return n_params
