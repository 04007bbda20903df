"""The transfer functions and losses of nnhw, each a torch.autograd.Function with both derivatives by hand.

Every class has the same shape (micrograd, minitorch, and the homework's problem 5):

* ``forward`` computes f from the inputs alone;
* ``setup_context`` saves the least that the derivatives need;
* ``backward`` is the reverse rule: it chains the local derivative with the upstream gradient ``g``
  (the vector-Jacobian product, one reverse-mode line);
* ``jvp`` is the forward rule: it pushes the inputs' tangents through the local derivative
  (the Jacobian-vector product, one forward-mode line).

Each docstring states f, the reverse rule and the forward rule. Nothing runs autograd through
built-in ops to get a derivative, and no aten ``*_backward`` kernel is called: the convolution's
and the pooling's adjoints are written as the (transposed) convolutions they are. The suite checks
both rules with gradcheck (``check_forward_ad``), second derivatives with gradgradcheck, and
``torch.func.vmap`` through them (``generate_vmap_rule``, ``check_batched_grad``).

Public aliases (``sigmoid = Sigmoid.apply`` ...) are what callers use; ``nnhw.tape`` calls
``forward``, ``setup_context`` and ``backward`` itself.
"""

from .affine import Affine, affine
from .batch_norm import BatchNorm, BatchNormEval, batch_norm
from .convolution import AvgPool2d, Conv2d, Flatten, MaxPool2d, conv2d, max_pool2d
from .dropout import Dropout, dropout
from .losses import IGNORE_NONE, SoftmaxCrossEntropy, SoftmaxKL, SquaredError, softmax_cross_entropy, softmax_kl, squared_error
from .shared import _Function
from .transfer import TRANSFER_FUNCTIONS, Identity, ReLU, Sigmoid, Square, Tanh, identity, relu, sigmoid, square, tanh

__all__ = ["Affine", "AvgPool2d", "BatchNorm", "BatchNormEval", "Conv2d", "Dropout", "Flatten", "IGNORE_NONE", "Identity", "MaxPool2d",
           "ReLU", "Sigmoid", "SoftmaxCrossEntropy", "SoftmaxKL", "Square", "SquaredError", "TRANSFER_FUNCTIONS", "Tanh", "_Function", "affine",
           "batch_norm", "conv2d", "dropout", "identity", "max_pool2d", "relu", "sigmoid", "softmax_cross_entropy", "softmax_kl", "square", "squared_error", "tanh"]
