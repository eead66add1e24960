"""A dense layer z = x W^T + b written by hand as a torch.autograd.Function, backward included.

    dlcourse gradcheck configs/examples/backprop_worked.yaml \
        --function configs/examples/linear_layer.py

puts it in place of every dense layer of the network (fc1 and out), so that the gradients of
every weight and bias come from this backward, and checks them against finite differences:
they pass. Break one line of backward (drop the .t(), or sum over the wrong axis) and see
which tensors fail.
"""

import torch


class MyLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        # x: (batch, inputs), weight: (units, inputs), bias: (units,)
        ctx.save_for_backward(x, weight)
        return x @ weight.t() + bias

    @staticmethod
    def backward(ctx, grad_output):
        # grad_output: dL/dz, (batch, units)
        x, weight = ctx.saved_tensors
        grad_x = grad_output @ weight  # dL/dx = dL/dz W: (batch, inputs)
        grad_weight = grad_output.t() @ x  # dL/dW = dL/dz^T x: (units, inputs)
        grad_bias = grad_output.sum(0)  # dL/db: summed over the batch
        return grad_x, grad_weight, grad_bias
