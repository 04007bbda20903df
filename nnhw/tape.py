"""Reverse mode written out: a tape that runs nnhw's own Functions without torch.autograd.

`train.engine = "tape"` trains with this instead of torch.autograd. The forward
pass calls each Function's `forward` and `setup_context` directly and records them; the
backward pass walks the records in reverse and calls each Function's hand-written
`backward(ctx, g)`, adding up the gradient of every input, exactly as the
reverse mode of homework 5 does line by line. The arithmetic is the same as
under torch.autograd (the same backward methods run); what goes away is the
engine's bookkeeping, which dominates a step when the batch holds one image.
"""

import torch


class Context:
    """What a Function's setup_context and backward see as `ctx`."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors):
        pass  # the tape runs reverse mode only

    def mark_non_differentiable(self, *tensors):
        pass  # the tape sends gradients only to what a Function's backward returns them for


class Tape:
    """Records Function applications that depend on `wrt`; `gradients` runs them backwards."""

    def __init__(self, wrt):
        self.records = []  # (Function, ctx, inputs, output): they also keep every id below alive
        self.tracked = {id(t) for t in wrt}

    def apply(self, fn, *args):
        needs = tuple(torch.is_tensor(a) and id(a) in self.tracked for a in args)
        ctx = Context(needs)
        with torch.no_grad():
            out = fn.forward(*args)
            fn.setup_context(ctx, args, out)
        if any(needs):
            outs = out if isinstance(out, tuple) else (out,)  # BatchNorm also returns its statistics
            self.tracked.update(id(o) for o in outs)
            self.records.append((fn, ctx, args, outs))
        return out

    def gradients(self, loss, wrt):
        """d loss / d t for every t in wrt (zeros where loss does not depend on t)."""
        grads = {id(loss): torch.ones_like(loss)}
        with torch.no_grad():
            for fn, ctx, args, outs in reversed(self.records):
                gs = [grads.pop(id(o), None) for o in outs]
                if all(g is None for g in gs):
                    continue
                back = fn.backward(ctx, *gs)
                back = back if isinstance(back, tuple) else (back,)
                for a, ga, need in zip(args, back, ctx.needs_input_grad):
                    if need and ga is not None:
                        k = id(a)
                        grads[k] = grads[k] + ga if k in grads else ga
        return [grads[id(t)] if id(t) in grads else torch.zeros_like(t) for t in wrt]


def autograd_apply(fn, *args):
    """The default: torch.autograd records the Function."""
    return fn.apply(*args)
