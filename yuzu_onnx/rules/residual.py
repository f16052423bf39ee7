"""Residual folding: ``Add(Conv(x), x)`` runs on probes as one Conv.

Delta math. A stride-1 Conv whose tap ``t`` reads, for output ``j``, input ``j`` itself
(``t * dilation == pad_begin``) and whose output has the input's shape gives
``Conv(x)[o, j] + x[o, j] = Conv'(x)[o, j]`` with ``W'[o, o mod (C/group), t] =
W[o, o mod (C/group), t] + 1``: the identity joins the Conv's own sum. On probes the residual
Add then costs nothing (no pass over ``P x C x L``, and in a tiled plan no widening of the skip
with reference halos: the Conv's halo already holds the reference, so ``Conv'`` adds it).

Only the probe form is folded; the reference pass keeps the model's own Conv and Add, so
``y0`` stays bit for bit the model's. The mutants' values differ from the unfolded graph's by
float rounding only (the identity is added inside the Conv's sum, as a BatchNorm folded into
a Conv would be), which the oracle tests bound like every other rule's.

Declined (the Add then runs as a plain elementwise Add): the Conv's output feeds anything
else or is a graph output, the other operand is not the Conv's own input, shapes differ
(broadcasting), no tap is aligned (stride, asymmetric padding), channels in and out differ,
the weight is not a constant, the Conv runs as taps or with gaussian sensing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..ops import window_1d
from ..plan import NodePlan
from .base import Decline, Rule, no_flops
from .elementwise import check_elementwise, tile_elementwise
from .window import WINDOW

if TYPE_CHECKING:
    from ..analyze import Analysis
    from ..emit.context import EmitContext

FAMILY = "residual"


def decline(reason: str) -> Decline:
    """Why the Add is not folded (it may still run as a plain elementwise Add)."""
    return Decline(FAMILY, f"not a residual x + Conv(x) to fold: {reason}")


def aligned_tap(node: onnx.NodeProto, length: int, kernel: int) -> int | None:
    """Tap ``t`` of a Conv whose output ``j`` reads input ``j`` (stride 1, ``t * d == pad_begin``),
    or None."""
    win = window_1d(node, length, length, kernel)
    if win.stride != 1 or win.pad_begin % win.dilation:
        return None
    tap = win.pad_begin // win.dilation
    return tap if tap < kernel else None


def check_residual_add(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """``Add(Conv(x), x)`` (either order) whose Conv runs on probes as a plain structured Conv:
    the Add folds into the Conv (see the module docstring)."""
    if node.op_type != "Add" or len(dep) != 2 or len(set(node.input)) != 2:
        return decline("it is not an Add of two different sequence tensors")
    by_output = {np_.node.output[0]: np_ for np_ in a.plan.nodes if np_.node.output}
    conv = next((by_output[n] for n in node.input if n in by_output and by_output[n].node.op_type == "Conv"),
                None)
    if conv is None:
        return decline("neither operand is a Conv's output")
    y, x = conv.node.output[0], conv.node.input[0]
    other = node.input[1] if node.input[0] == y else node.input[0]
    if other != x:
        return decline(f"its other operand {other!r} is not the Conv's input {x!r}")
    if conv.spec is not WINDOW or conv.sensing != "spike" or conv.conv_impl != "conv":
        return decline(f"the Conv {conv.node.name or y!r} does not run as a structured Conv on probes")
    if len(a.consumers.get(y, [])) != 1 or y in a.output_names:
        return decline(f"the Conv's output {y!r} is read elsewhere too")
    shape_x, shape_y, w = a.shape(x), a.shape(y), a.const(conv.node.input[1])
    if shape_x is None or shape_x != shape_y or w is None or w.shape[0] != shape_x[1]:
        return decline(f"the Conv maps {x!r} to a tensor of another shape, or its weight is not a constant")
    if any(k != 1 for k in w.shape[2:-1]):
        return decline("its Conv's kernel spans more than the sequence axis")
    tap = aligned_tap(conv.node, int(shape_x[-1]), int(w.shape[-1]))
    if tap is None:
        return decline("no tap of its Conv reads the output's own position (stride or padding)")
    result = check_elementwise(a, node, dep)
    if isinstance(result, Decline):
        return result
    conv.identity_tap = tap  # the Conv, planned before its consumer, now emits W'
    return replace(result, spec=RESIDUAL, folded_into=y)


def folded_weight(ctx: "EmitContext", np_: NodePlan) -> str:
    """Constant ``W'``: the Conv's weight with 1 added at ``(o, o mod (C/group), ..., tap)``."""
    key = ("residual_w", np_.node.output[0])
    if key not in ctx.cache:
        folded = np.array(ctx.plan_const(np_.node.input[1]), copy=True)
        per_group = folded.shape[1]
        channels = np.arange(folded.shape[0])
        folded[(channels, channels % per_group) + (0,) * (folded.ndim - 3) + (np_.identity_tap,)] += 1
        ctx.cache[key] = ctx.b.const(folded, "residual_w", dtype=folded.dtype)
    return ctx.cache[key]


def emit_residual_add(ctx: "EmitContext", np_: NodePlan) -> None:
    """The Add's probe form is its Conv's (the Conv added the skip), carrying the reference row
    where the Conv's does, widened with reference values where a tiled plan's Add window is wider
    than the Conv's."""
    from ..emit.probes import carried_only, in_window_of, reprobe

    out, conv_out = np_.node.output[0], np_.folded_into
    carried = carried_only(ctx, conv_out, np_.probes)
    if carried is not None:  # the Conv ran with the reference row: so does the Add
        ctx.carried[(out, np_.probes)] = carried
        return
    ctx.probe[(out, np_.probes)] = (reprobe(ctx, conv_out, np_.probes) if ctx.tiling is None
                                    else in_window_of(ctx, conv_out, out, np_.probes))


RESIDUAL = Rule("residual", "probe residual (in its Conv)", "probe", no_flops, emit_residual_add,
                tile=tile_elementwise)
RULES = (RESIDUAL,)
CHECKS = {"Add": check_residual_add}
