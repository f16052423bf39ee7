"""Shared facts about ONNX operators: attribute access, the window of 1-D Conv and pooling,
and FLOP counts. Which ops each rule accepts lives with the rule (:mod:`yuzu_onnx.rules`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

def attr(node: onnx.NodeProto, name: str, default=None):
    """Value of a node attribute, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@dataclass(frozen=True)
class Window1D:
    """Sliding window of a 1-D Conv or pool along its last axis."""

    kernel: int
    stride: int
    dilation: int
    pad_begin: int


def window_1d(node: onnx.NodeProto, in_length: int, out_length: int, kernel: int) -> Window1D:
    """Window parameters along the last spatial axis of a Conv/pool, resolving ``auto_pad``."""
    stride = int((attr(node, "strides") or [1])[-1])
    dilation = int((attr(node, "dilations") or [1])[-1])
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = max(0, (out_length - 1) * stride + (kernel - 1) * dilation + 1 - in_length)
        pad_begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    elif auto_pad == "VALID":
        pad_begin = 0
    else:
        pads = attr(node, "pads") or [0, 0]
        pad_begin = int(pads[len(pads) // 2 - 1])
    return Window1D(kernel, stride, dilation, pad_begin)


def transposed_window_1d(node: onnx.NodeProto, in_length: int, out_length: int, kernel: int) -> Window1D | None:
    """Window of a ConvTranspose along its last axis: input ``i`` feeds outputs
    ``i*stride - pad_begin + t*dilation``; ``None`` when the padding cannot be told."""
    stride = int((attr(node, "strides") or [1])[-1])
    dilation = int((attr(node, "dilations") or [1])[-1])
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    full = (in_length - 1) * stride + (kernel - 1) * dilation + 1 + int((attr(node, "output_padding") or [0])[-1])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = max(full - out_length, 0)
        pad_begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    elif attr(node, "output_shape") is not None:
        return None
    else:
        pads = attr(node, "pads") or [0, 0]
        pad_begin = int(pads[len(pads) // 2 - 1])
    return Window1D(kernel, stride, dilation, pad_begin)


def conv_flops(in_channels: int, out_channels: int, out_length: int, kernel: int, group: int) -> int:
    """2 x multiply-accumulates of a 1-D convolution for one sequence."""
    return 2 * out_channels * out_length * (in_channels // max(group, 1)) * kernel


def prod(dims) -> int:
    return int(np.prod([int(d) for d in dims], dtype=np.int64)) if len(dims) else 1
