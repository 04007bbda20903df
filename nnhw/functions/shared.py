"""What every Function of nnhw.functions shares: the input check, saving for both rules, the base class."""

import inspect

import torch


def _check_float(name, t):
    if not torch.is_floating_point(t):
        raise ValueError(f"{name} expects a floating-point tensor, got dtype {t.dtype}")


def _save(ctx, *tensors):
    """What both rules need, for backward and for jvp."""
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


class _Function(torch.autograd.Function):
    generate_vmap_rule = True  # torch.func.vmap runs forward, backward and jvp per example

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Function.apply binds its arguments to forward's signature at every call, and inspect.signature
        # reads a function's __signature__ before it parses the function: worked out once here, it saves
        # about 20 us a call, more than a small layer's arithmetic.
        if "forward" in cls.__dict__:
            cls.forward.__signature__ = inspect.signature(cls.forward)
