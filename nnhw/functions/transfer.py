"""The transfer functions, elementwise: sigmoid, tanh, ReLU, the identity and the square."""

import torch

from .shared import _check_float, _Function, _save


class Sigmoid(_Function):
    """f(a) = 1 / (1 + e^-a);  f'(a) = f(a) (1 - f(a)).
    reverse: da = g f (1 - f);  forward: dz = f (1 - f) da.

    torch.sigmoid never overflows (it picks e^a / (1 + e^a) for a < 0), so the
    output is exactly 0 or 1 far out and the derivative is 0 there, never NaN.
    """

    @staticmethod
    def forward(a):
        _check_float("sigmoid", a)
        return torch.sigmoid(a)

    @staticmethod
    def setup_context(ctx, inputs, y):
        _save(ctx, y)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)

    @staticmethod
    def jvp(ctx, da):
        (y,) = ctx.saved_tensors
        return da * y * (1 - y)


class Tanh(_Function):
    """f(a) = tanh(a);  f'(a) = 1 - f(a)^2.
    reverse: da = g (1 - f^2);  forward: dz = (1 - f^2) da."""

    @staticmethod
    def forward(a):
        _check_float("tanh", a)
        return torch.tanh(a)

    @staticmethod
    def setup_context(ctx, inputs, y):
        _save(ctx, y)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)

    @staticmethod
    def jvp(ctx, da):
        (y,) = ctx.saved_tensors
        return da * (1 - y * y)


class ReLU(_Function):
    """f(a) = max(a, 0);  f'(a) = 1 if a > 0 else 0 (the homework sets f'(0) = 0).
    reverse: da = sign(z) g;  forward: dz = sign(z) da,  with z = f(a).

    sign(z) is f'(a), since z > 0 exactly where a > 0 and z = 0 elsewhere. Written that way
    the derivative is two float passes, no boolean mask to build and convert."""

    @staticmethod
    def forward(a):
        _check_float("relu", a)
        return a.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, z):
        _save(ctx, z)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return torch.sign(z) * g

    @staticmethod
    def jvp(ctx, da):
        (z,) = ctx.saved_tensors
        return torch.sign(z) * da


class Identity(_Function):
    """f(a) = a;  f'(a) = 1 (the homework's linear transfer).
    reverse: da = g;  forward: dz = da."""

    @staticmethod
    def forward(a):
        _check_float("identity", a)
        return a.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g

    @staticmethod
    def jvp(ctx, da):
        return da.clone()


class Square(_Function):
    """f(a) = a^2;  f'(a) = 2a (the homework's quadratic transfer, 2.3.1b).
    reverse: da = 2 a g;  forward: dz = 2 a da."""

    @staticmethod
    def forward(a):
        _check_float("square", a)
        return a * a

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs[0])

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return 2 * a * g

    @staticmethod
    def jvp(ctx, da):
        (a,) = ctx.saved_tensors
        return 2 * a * da


sigmoid = Sigmoid.apply
tanh = Tanh.apply
relu = ReLU.apply
identity = Identity.apply
square = Square.apply

# Transfer functions by the names configs use (the classes: models apply them through autograd or nnhw.tape).
TRANSFER_FUNCTIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity, "square": Square}
