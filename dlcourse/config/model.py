"""The `model` section: the network's layers, non-linearity, dropout and initialization."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dlcourse.config.base import Section

ActivationName = Literal["identity", "step", "sigmoid", "tanh", "relu", "leaky_relu", "elu"]
InitName = Literal["default", "xavier", "kaiming", "normal", "zeros", "constant"]


class ConvBlock(Section):
    """conv -> [batch norm] -> activation -> [pool 2x2] -> [dropout]."""

    channels: int = Field(ge=1, le=1024, description="output channels (feature maps)")
    kernel: int = Field(3, ge=1, le=11, description="kernel size")
    padding: Literal["same", "valid"] = Field(
        "same", description="same: pad to keep the image size (odd kernels); valid: no padding"
    )
    batch_norm: bool = Field(True, description="batch normalization after the convolution")
    pool: Literal["max", "avg", "none"] = Field("max", description="2x2 pooling after the block")
    dropout: float = Field(0.0, ge=0, lt=1, description="drop probability after the block")


class Model(Section):
    conv: list[ConvBlock] | None = Field(
        None,
        description="mnist: the convolution blocks, in order (default two blocks, 16 and 32; "
        "[]: a plain MLP on the 784 pixels)",
    )
    hidden: list[int] | None = Field(
        None, description="sizes of the hidden fully-connected layers (default by task)"
    )
    activation: ActivationName = Field("relu", description="non-linearity of every hidden layer")
    leaky_slope: float = Field(0.01, gt=0, lt=1, description="leaky_relu: slope for x < 0")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="drop probability (1 - keep_prob) after each hidden FC layer"
    )
    init: InitName = Field(
        "default",
        description="weight initialization (biases start at 0 except under default; zeros and "
        "constant make every hidden unit the same: the symmetry problem)",
    )
    init_std: float = Field(0.01, gt=0, le=1000, description="init: normal: std of the weights")
    init_value: float = Field(
        0.1, ge=-1000, le=1000, description="init: constant: the value of every weight"
    )

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and any(not 1 <= size <= 65_536 for size in sizes):
            raise ValueError(f"model.hidden: layer sizes must be from 1 to 65536, got {sizes}")
        return sizes
