"""Momentum SGD with L2 regularisation and learning-rate schedules, written out.

The objective is  L(w) + (lambda/2) ||W||^2  over the weights (biases only if
asked), so its gradient adds lambda W. The heavy-ball update is

    v <- mu v + (g + lambda W)
    W <- W - lr v
"""

import math

import torch


def is_bias(name):
    return name.startswith("b")


def lr_at(cfg_optim, epoch, total_epochs):
    """The learning rate after `epoch` passes (a float) out of `total_epochs`."""
    lr = cfg_optim.lr
    if cfg_optim.schedule == "constant":
        return lr
    if cfg_optim.schedule == "step":
        passed = sum(1 for m in cfg_optim.milestones if epoch >= m)
        return lr * cfg_optim.gamma**passed
    t = min(epoch / total_epochs, 1.0)
    end = lr * cfg_optim.final_fraction
    if cfg_optim.schedule == "cosine":
        return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * t))
    return lr + (end - lr) * t  # linear


class MomentumSGD:
    """Owns one velocity tensor per parameter; `step` updates the parameters in place."""

    def __init__(self, params, momentum=0.9, l2=0.0, l2_bias=False):
        self.params = params
        self.momentum = momentum
        self.decay = {n: (l2 if (l2_bias or not is_bias(n)) else 0.0) for n in params}
        self.velocity = {n: torch.zeros_like(p, requires_grad=False) for n, p in params.items()}

    @torch.no_grad()
    def step(self, grads, lr):
        """grads: name -> dL/dparam (the data loss only; the L2 term is added here)."""
        for name, p in self.params.items():
            g = grads[name]
            if self.decay[name]:
                g = g.add(p, alpha=self.decay[name])
            v = self.velocity[name]
            v.mul_(self.momentum).add_(g)
            p.sub_(v, alpha=lr)

    def state_dict(self):
        return {n: v.detach().clone() for n, v in self.velocity.items()}

    def load_state_dict(self, state):
        with torch.no_grad():
            for n, v in self.velocity.items():
                v.copy_(state[n])
