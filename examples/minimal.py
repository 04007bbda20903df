"""nnhw in one sitting: a two-layer MLP on MNIST, written out with nnhw's Functions, trained for one
epoch with nnhw's momentum SGD, and checked against its own test accuracy.

    python examples/minimal.py

Every derivative here is hand-written in nnhw/functions/: torch.autograd.grad below calls each
Function's backward, and never differentiates a built-in op. `python -m nnhw.train` does the same,
with configs, logging, checkpoints and evaluation around it.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout, installed or not
from nnhw import data  # noqa: E402
from nnhw import functions as nf  # noqa: E402
from nnhw.optim import MomentumSGD  # noqa: E402

HIDDEN, BATCH, LR, MOMENTUM = 200, 100, 0.1, 0.9

try:  # MNIST from NNHW_DATA_ROOT or data/, downloaded there when missing
    splits = data.load_splits(data.resolve_root("data"), download=True)
except data.DataError as e:
    sys.exit(f"minimal.py: {e}")
train, test = splits["train"], splits["test"]  # x (N, 784) in [0, 1], y (N,) digits

gen = torch.Generator().manual_seed(0)


def xavier(d_out, d_in):
    return (torch.randn(d_out, d_in, generator=gen) * (2 / (d_in + d_out)) ** 0.5).requires_grad_()


params = {  # plain tensors, named as in the homework: W1 is d(1) x d(0)
    "W1": xavier(HIDDEN, data.N_PIXELS), "b1": torch.zeros(HIDDEN, requires_grad=True),
    "W2": xavier(data.N_CLASSES, HIDDEN), "b2": torch.zeros(data.N_CLASSES, requires_grad=True),
}


def forward(p, x):
    z1 = nf.relu(nf.affine(x, p["W1"], p["b1"]))  # (N, 200): h(X W1^T + b1)
    return nf.affine(z1, p["W2"], p["b2"])  # (N, 10): the outputs, no transfer on the last layer


opt = MomentumSGD(params, momentum=MOMENTUM)
for step, idx in enumerate(torch.randperm(len(train), generator=gen).split(BATCH)):  # one epoch
    loss = nf.softmax_cross_entropy(forward(params, train.x[idx]), train.y[idx])
    grads = torch.autograd.grad(loss, list(params.values()))  # each Function's hand-written backward
    opt.step(grads, LR)  # v <- mu v + g;  W <- W - lr v
    if step % 100 == 0:
        print(f"step {step:4d}  loss {loss.item():.4f}")

with torch.no_grad():
    accuracy = (forward(params, test.x).argmax(dim=1) == test.y).double().mean().item()
print(f"test accuracy after one epoch: {accuracy:.2%}")
assert accuracy > 0.96, f"one epoch of this MLP reaches about 97% test accuracy, not {accuracy:.2%}"
