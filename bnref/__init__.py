"""bnref: the reference implementation of the batch normalization course.

Submodules:
    functional  NumPy from scratch: batch, layer and group norm, forward and backward.
    gradcheck   numerical gradients and relative error.
    nn          PyTorch modules with hand-written backward passes.
    fold        folding eval-mode batch norm into the preceding layer.
    triton      Triton kernels (GPU, or Triton's interpreter on the CPU).

Submodules that need torch are imported on demand, so ``import bnref`` and
``bnref.functional`` work with NumPy alone.
"""

__version__ = "0.1.0"
