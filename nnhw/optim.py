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
    """Owns one velocity tensor per parameter; `step` updates the parameters in place.

    The update runs on whole lists of tensors at once (torch._foreach_*: one call for every
    parameter instead of a Python loop), the same arithmetic as the loop in the module docstring.
    """

    def __init__(self, params, momentum=0.9, l2=0.0, l2_bias=False):
        self.momentum = momentum
        self.l2 = l2
        self.names = list(params)
        self.tensors = list(params.values())
        self.velocity = {n: torch.zeros_like(p, requires_grad=False) for n, p in params.items()}
        self.v = list(self.velocity.values())
        decayed = [i for i, n in enumerate(self.names) if l2 and (l2_bias or not is_bias(n))]
        self.decayed_p = [self.tensors[i] for i in decayed]
        self.decayed_v = [self.v[i] for i in decayed]

    @torch.no_grad()
    def step(self, grads, lr):
        """grads: dL/dparam for each parameter, in the params' order (the data loss only;
        the L2 term is added here)."""
        g = list(grads)
        if self.momentum:
            torch._foreach_mul_(self.v, self.momentum)  # v <- mu v
            torch._foreach_add_(self.v, g)  #            + g
        else:
            torch._foreach_copy_(self.v, g)  # plain SGD: v <- g
        if self.decayed_p:
            torch._foreach_add_(self.decayed_v, self.decayed_p, alpha=self.l2)  # + lambda W
        torch._foreach_add_(self.tensors, self.v, alpha=-lr)  # W <- W - lr v

    def state_dict(self):
        return {n: v.detach().clone() for n, v in self.velocity.items()}

    def load_state_dict(self, state):
        with torch.no_grad():
            for n, v in self.velocity.items():
                v.copy_(state[n])
