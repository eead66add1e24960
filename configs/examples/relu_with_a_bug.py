"""A ReLU written by hand as a torch.autograd.Function, with a deliberate bug in its backward.

    dlcourse gradcheck configs/examples/backprop_worked.yaml \
        --function configs/examples/relu_with_a_bug.py

puts it in place of the network's ReLU, so that backpropagation goes through this backward,
and compares the gradients with finite differences: fc1.weight and fc1.bias fail, with both
values. The derivative of relu(x) is 1 where x > 0 (else 0), not relu(x) itself: fix the
return line to `grad_output * (x > 0).to(x.dtype)` and the check passes.
"""

import torch


class MyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)  # backward needs to know where x > 0
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * x.clamp(min=0)  # the bug: relu(x) is not relu'(x)
