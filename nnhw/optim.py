"""Momentum SGD and Adam with L2 regularisation, and learning-rate schedules, written out.

The objective is  L(w) + (lambda/2) ||W||^2  over the weights (biases only if
asked), so its gradient adds lambda W. The heavy-ball update is

    v <- mu v + (g + lambda W)
    W <- W - lr v

Adam (Kingma and Ba 2015) keeps running means of the gradient and of its square,
g = dL/dW + lambda W, after t updates:

    m <- beta1 m + (1 - beta1) g
    s <- beta2 s + (1 - beta2) g^2
    W <- W - lr (m / (1 - beta1^t)) / (sqrt(s / (1 - beta2^t)) + eps)

Max-norm (Srivastava et al. 2014), after either update: every unit's incoming weights, a row w_j
of W (a whole filter of a convolution), are projected back onto the ball ||w_j|| <= c:

    w_j <- w_j * min(1, c / ||w_j||)
"""

import math

import torch


def is_weight(name):
    """W1, Wc1, ...: the weights that L2 and max-norm act on. Biases, and batch normalisation's gamma
    and beta, are the other parameters: L2 reaches them only with optim.l2_bias, max-norm never."""
    return name.startswith("W")


def lr_at(cfg_optim, done, total):
    """The learning rate after `done` passes over the training split (a float) out of `total`
    (train.epochs); optim.milestones count passes too.

    With warm-up, the rate first climbs linearly from 0 to lr over the first `warmup` of the run,
    and the schedule then runs over the rest: warm-up and a linear or cosine decay together are
    the one-cycle schedule (Smith and Topin 2018)."""
    lr, warm = cfg_optim.lr, cfg_optim.warmup * total
    if done < warm:
        return lr * done / warm
    if cfg_optim.schedule == "constant":
        return lr
    if cfg_optim.schedule == "exponential":  # lr gamma^k in pass k + 1 (after the warm-up)
        return lr * cfg_optim.gamma ** math.floor(done - warm)
    if cfg_optim.schedule == "step":
        passed = sum(1 for m in cfg_optim.milestones if done >= m)
        return lr * cfg_optim.gamma**passed
    t = min((done - warm) / (total - warm), 1.0)
    end = lr * cfg_optim.final_fraction
    if cfg_optim.schedule == "cosine":
        return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * t))
    return lr + (end - lr) * t  # linear


def momentum_at(cfg_optim, done):
    """The heavy-ball momentum after `done` passes: optim.momentum, or on a ramp (optim.momentum_ramp
    passes long) the linear climb from optim.momentum_start to it."""
    o = cfg_optim
    if not o.momentum_ramp or done >= o.momentum_ramp:
        return o.momentum
    return o.momentum_start + (o.momentum - o.momentum_start) * done / o.momentum_ramp


@torch.no_grad()
def max_norm_(weights, c):
    """Project each row w_j of every weight tensor onto ||w_j|| <= c, in place (see the module docstring)."""
    for W in weights:
        rows = W.view(len(W), -1)  # (units, fan_in)
        norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)  # (units, 1)
        rows.mul_(torch.clamp(c / norms.clamp_min(1e-30), max=1.0))


class MomentumSGD:
    """Owns one velocity tensor per parameter; `step` updates the parameters in place.

    The update runs on whole lists of tensors at once (torch._foreach_*: one call for every
    parameter instead of a Python loop), the same arithmetic as the loop in the module docstring.
    """

    buffers = 1  # tensors of state per parameter: the velocity

    def __init__(self, params, momentum=0.9, l2=0.0, l2_bias=False, max_norm=0.0):
        self.momentum = momentum  # the caller may set it before each step (optim.momentum_ramp)
        self.l2 = l2
        self.max_norm = max_norm  # 0: no constraint
        self.weights = [p for n, p in params.items() if is_weight(n)]
        self.names = list(params)
        self.tensors = list(params.values())
        self.velocity = {n: torch.zeros_like(p, requires_grad=False) for n, p in params.items()}
        self.v = list(self.velocity.values())
        decayed = [i for i, n in enumerate(self.names) if l2 and (l2_bias or is_weight(n))]
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
        if self.max_norm:
            max_norm_(self.weights, self.max_norm)

    def state_dict(self):
        return {n: v.detach().clone() for n, v in self.velocity.items()}

    def load_state_dict(self, state):
        with torch.no_grad():
            for n, v in self.velocity.items():
                v.copy_(state[n])


class Adam:
    """Owns the two running means per parameter and the update count; `step` updates in place.
    The same _foreach arithmetic as MomentumSGD, following the module docstring line by line."""

    buffers = 2  # tensors of state per parameter: m and s

    def __init__(self, params, beta1=0.9, beta2=0.999, eps=1e-8, l2=0.0, l2_bias=False, max_norm=0.0):
        self.beta1, self.beta2, self.eps, self.l2, self.max_norm = beta1, beta2, eps, l2, max_norm
        self.weights = [p for n, p in params.items() if is_weight(n)]
        self.names = list(params)
        self.tensors = list(params.values())
        self.m = [torch.zeros_like(p, requires_grad=False) for p in self.tensors]
        self.s = [torch.zeros_like(p, requires_grad=False) for p in self.tensors]
        self.t = 0
        self.decayed = [l2 and (l2_bias or is_weight(n)) for n in self.names]

    @torch.no_grad()
    def step(self, grads, lr):
        g = [gi + self.l2 * p if decay else gi for gi, p, decay in zip(grads, self.tensors, self.decayed)]  # + lambda W
        self.t += 1
        torch._foreach_lerp_(self.m, g, 1 - self.beta1)  # m <- beta1 m + (1 - beta1) g
        torch._foreach_mul_(self.s, self.beta2)  #          s <- beta2 s
        torch._foreach_addcmul_(self.s, g, g, value=1 - self.beta2)  # + (1 - beta2) g^2
        bias1, bias2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        denom = torch._foreach_sqrt(self.s)  # sqrt(s / bias2) + eps = (sqrt(s) + eps sqrt(bias2)) / sqrt(bias2)
        torch._foreach_add_(denom, self.eps * math.sqrt(bias2))
        torch._foreach_addcdiv_(self.tensors, self.m, denom, value=-lr * math.sqrt(bias2) / bias1)  # W <- W - lr m^ / (sqrt(s^) + eps)
        if self.max_norm:
            max_norm_(self.weights, self.max_norm)

    def preconditioner(self):
        """{name: P}, P = sqrt(s^) + eps, s^ = s / (1 - beta2^t): the diagonal that this step divides m^ by,
        whose P^(-1/2) H P^(-1/2) meets Adam's stability threshold (Cohen et al. 2022); None before the first step."""
        if not self.t:
            return None
        bias2 = 1 - self.beta2**self.t
        return {n: (s / bias2).sqrt() + self.eps for n, s in zip(self.names, self.s)}

    def state_dict(self):
        state = {f"m.{n}": m.detach().clone() for n, m in zip(self.names, self.m)}
        state |= {f"s.{n}": s.detach().clone() for n, s in zip(self.names, self.s)}
        return state | {"t": torch.tensor(self.t)}

    def load_state_dict(self, state):
        with torch.no_grad():
            for n, m, s in zip(self.names, self.m, self.s):
                m.copy_(state[f"m.{n}"])
                s.copy_(state[f"s.{n}"])
        self.t = int(state["t"])


class WeightAverage:
    """An exponential moving average of the parameters and of batch normalisation's running averages
    (optim.ema), which evaluation reads in their place. After update t (t = 1, 2, ...):

        a <- d_t a + (1 - d_t) w,   d_t = min(ema, (1 + t) / (10 + t))

    The decay climbs from 0.18 towards `ema` over the first steps (TensorFlow's ExponentialMovingAverage
    with num_updates), so that the average does not hold on to the initial weights for thousands of steps."""

    def __init__(self, decay, params, running):
        self.decay = decay
        self.params = {n: p.detach().clone() for n, p in params.items()}
        self.running = {n: t.detach().clone() for n, t in running.items()}

    @torch.no_grad()
    def update(self, params, running, t):
        d = min(self.decay, (1 + t) / (10 + t))
        for average, now in ((self.params, params), (self.running, running)):
            if average:
                torch._foreach_lerp_(list(average.values()), [now[n] for n in average], 1 - d)

    def state_dict(self):
        """What a checkpoint keeps (on the CPU): {'params': ..., 'running': ...}."""
        return {"params": {n: a.cpu() for n, a in self.params.items()}, "running": {n: a.cpu() for n, a in self.running.items()}}

    def load_state_dict(self, state):
        with torch.no_grad():
            for part in ("params", "running"):
                for n, a in getattr(self, part).items():
                    a.copy_(state[part][n])


OPTIMIZERS = {"sgd": MomentumSGD, "adam": Adam}  # optim.optimizer -> its class


def make_optimizer(cfg_optim, params):
    """The optimiser that optim.optimizer names, over params, with the config's settings."""
    o = cfg_optim
    if o.optimizer == "adam":
        return Adam(params, o.momentum, o.beta2, o.eps, o.l2, o.l2_bias, o.max_norm)
    return MomentumSGD(params, o.momentum, o.l2, o.l2_bias, o.max_norm)
