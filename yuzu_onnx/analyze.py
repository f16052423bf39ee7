"""Pass 3, analyze: propagate support intervals through the graph and choose a rule per node.

See :mod:`yuzu_onnx.plan` for how tensors are represented (probe form, materialized, flat).

Rules (``NodePlan.rule``): ``reference`` (not sequence dependent); in probe form
``elementwise``, ``positional`` (axis moves, crops, pads, concat) and ``window`` (Conv/pool);
exits ``flatten`` + ``dense-exit``, ``reduce-exit`` and ``exit`` (materialize for an op over all
positions); ``per-mutant`` (the original node on materialized mutants) and ``fallback`` (the
same, when an input had to be materialized for an op without a rule).
Probe counts are chosen by :mod:`yuzu_onnx.probe_sizing`, FLOPs counted by :mod:`yuzu_onnx.flops`.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from .sensing import DEFAULT_TOLERANCE
from . import positional
from .canonicalize import TensorInfo
from .flops import FlopCounter
from .load import SequenceInput
from .ops import (BINARY_ELEMENTWISE, POSITIONAL_OPS, UNARY_ELEMENTWISE, WINDOW_OPS, attr, prod,
                  transposed_window_1d, window_1d)
from .plan import ConversionWarning, FlatState, MutState, NodePlan, Plan, SeqState
from .probe_sizing import ProbeSizing
from .support import Support

__all__ = ["analyze", "ConversionWarning", "FlatState", "MutState", "NodePlan", "Plan", "SeqState"]


def analyze(model: onnx.ModelProto, infos: dict[str, TensorInfo], seq: SequenceInput, *,
            start: int, end: int, substitutions: str, sensing: str, alpha: float,
            seed: int, tolerance: float = DEFAULT_TOLERANCE) -> Plan:
    """Choose a rule for each node of a canonical model and size every probe tensor.

    Emits a :class:`ConversionWarning` for each op that falls back to materialized mutants.
    """
    plan = Plan(model, infos, seq, start, end, substitutions, sensing, alpha, seed,
                states={}, nodes=[], outputs=[o.name for o in model.graph.output], tolerance=tolerance)
    _Analyzer(plan).run()
    return plan


class _Analyzer(ProbeSizing, FlopCounter):
    def __init__(self, plan: Plan):
        self.plan = plan
        self.graph = plan.model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.output_names = set(plan.outputs)

    # ---------------------------------------------------------------- helpers
    def shape(self, name: str) -> list[int | None] | None:
        info = self.plan.infos.get(name)
        return None if info is None else info.shape

    def const(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def seq_state(self, support: Support, seq_axis: int, dims) -> SeqState:
        return SeqState(support, seq_axis, tuple(int(d) for d in dims), support.slots(self.plan.subs))

    # ---------------------------------------------------------------- main walk
    def run(self) -> None:
        plan = self.plan
        seq = plan.seq
        dims = (seq.alphabet, seq.length) if seq.layout == "NCL" else (seq.length, seq.alphabet)
        inits = {t.name for t in self.graph.initializer}
        plan.side = {i.name for i in self.graph.input if i.name != seq.name and i.name not in inits}
        plan.states[seq.name] = self.seq_state(Support.for_input(seq.length, plan.start, plan.end),
                                               seq.seq_axis, dims)
        for node in self.graph.node:
            plan.nodes.append(self.plan_node(node))
        self.assign_probes()
        self.count_flops()
        for np_ in plan.nodes:
            if np_.rule == "fallback":
                warnings.warn(f"{np_.node.op_type} node {np_.node.name!r} is not accelerated: {np_.note}; "
                              "it runs exactly on materialized mutants (slow)", ConversionWarning,
                              stacklevel=3)

    def plan_node(self, node: onnx.NodeProto) -> NodePlan:
        states = self.plan.states
        dep = [n for n in node.input if n in states]
        if not dep:
            if any(n in self.plan.side for n in node.input):
                self.plan.side.update(o for o in node.output if o)
            return NodePlan(node, "reference")
        kinds = {type(states[n]) for n in dep}
        if kinds == {SeqState}:
            plan = self.try_probe_rule(node, dep)
            if plan is not None:
                return plan
        if kinds == {FlatState} and node.op_type in ("Gemm", "MatMul"):
            states[node.output[0]] = MutState()
            return NodePlan(node, "dense-exit")
        return self.per_mutant(node, dep)

    def per_mutant(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan:
        states = self.plan.states
        mat = [n for n in dep if isinstance(states[n], SeqState)]
        flat = [n for n in dep if isinstance(states[n], FlatState)]
        if flat:  # a flatten whose consumer is not a dense layer: it cannot stay deferred
            raise AssertionError("flatten planned as deferred but has a non-dense consumer")
        for out in node.output:
            if out:
                states[out] = MutState()
        if mat:
            reason = self.unsupported_reason(node)
            return NodePlan(node, "fallback", materialize=mat, note=reason)
        return NodePlan(node, "per-mutant")

    # ---------------------------------------------------------------- probe-form rules
    def try_probe_rule(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan | None:
        op = node.op_type
        if op in UNARY_ELEMENTWISE or op in BINARY_ELEMENTWISE or op == "BatchNormalization":
            return self.elementwise(node, dep)
        if op in WINDOW_OPS:
            return self.window(node, dep)
        if op in ("Flatten", "Reshape"):
            return self.flatten(node, dep)
        if op in POSITIONAL_OPS:
            return self.positional(node, dep)
        if op == "MatMul":
            return self.pointwise_matmul(node, dep)
        if op in ("GlobalAveragePool", "ReduceMean", "ReduceSum", "GlobalMaxPool", "ReduceMax",
                  "ReduceMin", "ReduceLogSumExp", "Softmax", "LogSoftmax"):
            return self.sequence_reduction(node, dep)
        return None

    def pointwise_matmul(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan | None:
        """``x @ W`` with a constant ``W`` over a channels-last tensor: a per-position dense layer."""
        st: SeqState = self.plan.states[node.input[0]]
        w = self.shape(node.input[1])
        if dep != [node.input[0]] or node.input[1] not in self.inits or w is None or len(w) != 2:
            return None
        if st.seq_axis == len(st.dims) or st.dims[-1] != w[0]:
            return None
        dims = st.dims[:-1] + (int(w[1]),)
        self.plan.states[node.output[0]] = self.seq_state(st.support, st.seq_axis, dims)
        return NodePlan(node, "elementwise", width=st.support.max_width)

    def sequence_reduction(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan | None:
        """Ops over the whole sequence axis. Sums and means exit to per-mutant tensors by
        summing each mutant's reach; the others (max, softmax over positions) need every
        position of every mutant, so their input is materialized (the "exit" rule, expected
        for profile heads, so no warning)."""
        st: SeqState = self.plan.states[node.input[0]]
        if dep != [node.input[0]] or len([o for o in node.output if o]) != 1:
            return None
        rank = len(st.dims) + 1
        unit = {ax for ax in range(1, rank) if st.dims[ax - 1] == 1}
        op = node.op_type
        if op.startswith("Global"):
            axes = set(range(2, rank))
        elif op in ("Softmax", "LogSoftmax"):
            default = -1 if self.opset() >= 13 else 1
            axis = attr(node, "axis", default) % rank
            if self.opset() < 13 and axis != rank - 1:
                return None
            axes = {axis}
        else:
            raw = attr(node, "axes")
            if raw is None and len(node.input) > 1 and node.input[1]:
                raw = self.const(node.input[1])
                if raw is None:
                    return None
            if raw is None:
                return None  # reduces every axis, batch included
            axes = {int(a) % rank for a in np.asarray(raw).ravel()}
        if st.seq_axis not in axes or 0 in axes or not axes <= unit | {st.seq_axis}:
            return None
        self.plan.states[node.output[0]] = MutState()
        if op in ("GlobalAveragePool", "ReduceMean", "ReduceSum"):
            return NodePlan(node, "reduce-exit", width=st.support.max_width)
        return NodePlan(node, "exit", materialize=[node.input[0]], width=st.support.max_width,
                        note="an op over all positions: each mutant's input is materialized")

    def opset(self) -> int:
        return next((o.version for o in self.plan.model.opset_import if o.domain in ("", "ai.onnx")), 1)

    def positional(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan | None:
        """Transpose/Squeeze/Unsqueeze/Slice/Pad/Concat: re-index positions and axes."""
        states = self.plan.states
        op = node.op_type
        if len([o for o in node.output if o]) != 1:
            return None
        ins = [states[n] for n in dep]
        layouts = [positional.Layout(st.dims, st.seq_axis) for st in ins]
        source = None
        if op == "Concat":
            data = [n for n in node.input if n]
            if data != dep:
                return None  # concatenating with a sequence-independent tensor: no batch to match
            lay = positional.concat(node, layouts)
            if lay is None:
                return None
            axis = attr(node, "axis", 1) % (len(lay.dims) + 1)
            if axis == lay.seq_axis:
                support = positional.concat_supports([st.support for st in ins])
            else:
                support = ins[0].support
                for st in ins[1:]:
                    support = support.union(st.support)
        else:
            if dep != [node.input[0]] or any(n and n not in self.inits for n in node.input[1:]):
                return None
            handler = {"Transpose": positional.transpose, "Unsqueeze": positional.unsqueeze,
                       "Squeeze": positional.squeeze, "Slice": positional.slice_positions,
                       "Pad": positional.pad_positions}[op]
            result = handler(node, layouts[0], self.const)
            if result is None:
                return None
            lay, source = result if isinstance(result, tuple) else (result, None)
            support = positional.reindex(ins[0].support, source)
        out_shape = self.shape(node.output[0])
        if out_shape is not None and list(out_shape[1:]) != list(lay.dims):
            return None  # our reading of the op disagrees with shape inference: do not guess
        states[node.output[0]] = self.seq_state(support, lay.seq_axis, lay.dims)
        return NodePlan(node, "positional", width=support.max_width)

    def unsupported_reason(self, node: onnx.NodeProto) -> str:
        op = node.op_type
        if op in WINDOW_OPS:
            return "only 1-D windows over the last (sequence) axis with constant weights are accelerated"
        if op in ("Flatten", "Reshape"):
            return "a flatten is accelerated only when all its consumers are dense layers (Gemm/MatMul)"
        if op in UNARY_ELEMENTWISE or op in BINARY_ELEMENTWISE:
            return "its inputs broadcast along the sequence or batch axis"
        return f"no delta rule for {op}"

    def elementwise(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan | None:
        states = self.plan.states
        out = node.output[0]
        out_shape = self.shape(out)
        if len([o for o in node.output if o]) != 1 or out_shape is None:
            return None
        if node.op_type == "BatchNormalization" and any(i not in self.inits for i in node.input[1:]):
            return None
        first: SeqState = states[dep[0]]
        support = first.support
        for name in dep:
            st: SeqState = states[name]
            if st.dims != first.dims or st.seq_axis != first.seq_axis:
                return None
            support = support.union(st.support)
        if list(out_shape[1:]) != list(first.dims):
            return None
        for name in node.input:
            if name and name not in dep:
                cshape = self.shape(name) or []
                if name in self.plan.side:
                    if len(cshape) != len(first.dims) + 1 or None in cshape[1:]:
                        return None
                    continue
                if name not in self.inits:
                    return None  # a sequence-independent tensor computed in-graph; keep it simple
                if len(cshape) > len(first.dims) + 1 or (len(cshape) == len(first.dims) + 1 and cshape[0] != 1):
                    return None
        states[out] = self.seq_state(support, first.seq_axis, first.dims)
        return NodePlan(node, "elementwise", width=support.max_width)

    def window(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan | None:
        """1-D Conv/pool over the last axis; also the 2-D form with a unit height (tf2onnx's
        Conv1D), whose kernel is ``(1, k)``."""
        states = self.plan.states
        x = node.input[0]
        if dep != [x] or len([o for o in node.output if o]) != 1:
            return None
        st: SeqState = states[x]
        out_shape = self.shape(node.output[0])
        rank = len(st.dims) + 1
        if out_shape is None or len(out_shape) != rank or any(d is None for d in out_shape[1:]):
            return None
        if st.seq_axis != rank - 1 or rank not in (3, 4) or (rank == 4 and (st.dims[1] != 1 or out_shape[2] != 1)):
            return None
        kernel = attr(node, "kernel_shape")
        if node.op_type in ("Conv", "ConvTranspose"):
            w = self.shape(node.input[1])
            if node.input[1] not in self.inits or w is None:
                return None
            kernel = list(w[2:])
        if not kernel or len(kernel) != rank - 2 or any(k != 1 for k in kernel[:-1]):
            return None
        if rank == 4 and node.op_type != "Conv" and self.height_padded(node):
            return None
        if node.op_type == "ConvTranspose":
            win = transposed_window_1d(node, st.dims[-1], out_shape[-1], int(kernel[-1]))
            if win is None:
                return None
            support = st.support.through_transposed_window(out_shape[-1], win.stride, win.pad_begin,
                                                           win.dilation, win.kernel)
        else:
            win = window_1d(node, st.dims[-1], out_shape[-1], int(kernel[-1]))
            if self.ceil_window_dropped(node, st.dims[-1], win):
                # a ceil_mode window starting past the input: ONNX Runtime's kernel drops it but
                # its shape inference keeps it, so no static-shaped rule can be emitted here
                return None
            support = st.support.through_window(out_shape[-1], win.stride, win.pad_begin, win.dilation, win.kernel)
        states[node.output[0]] = self.seq_state(support, rank - 1, out_shape[1:])
        sensing = self.plan.sensing if node.op_type == "Conv" and rank == 3 else "spike"
        impl = "conv"
        if node.op_type == "ConvTranspose":
            sensing = "spike"
        if node.op_type == "Conv" and sensing == "spike" and rank == 3 and \
                self.taps_pay_off(node, st.dims[0], out_shape[1], win):
            impl = "taps"
        return NodePlan(node, "window", sensing=sensing, conv_impl=impl, width=support.max_width)

    @staticmethod
    def ceil_window_dropped(node: onnx.NodeProto, length: int, win) -> bool:
        """A ceil_mode pool whose last window would start past the input: ONNX Runtime's kernel
        drops that window, its shape inference (and ONNX's) keeps it."""
        if node.op_type not in ("MaxPool", "AveragePool") or not attr(node, "ceil_mode", 0):
            return False
        pads = attr(node, "pads") or [0, 0]
        padded = length + int(pads[len(pads) // 2 - 1]) + int(pads[-1])
        span = (win.kernel - 1) * win.dilation + 1
        inferred = -(-(padded - span) // win.stride) + 1
        return (inferred - 1) * win.stride >= length + win.pad_begin

    @staticmethod
    def height_padded(node: onnx.NodeProto) -> bool:
        pads = attr(node, "pads") or [0, 0, 0, 0]
        return bool(pads[0] or pads[2])

    @staticmethod
    def taps_pay_off(node: onnx.NodeProto, c_in: int, c_out: int, win) -> bool:
        """A Conv with few output channels is faster as one MatMul per tap plus a shifted sum:
        its intermediate is k*C_out per position instead of im2col's k*C_in."""
        return attr(node, "group", 1) == 1 and win.kernel > 1 and 3 * c_out < c_in

    def flatten(self, node: onnx.NodeProto, dep: list[str]) -> NodePlan | None:
        """A flatten feeding only dense layers (the dense exit), or a reshape that only adds or
        drops unit axes (kept in probe form)."""
        states = self.plan.states
        x = node.input[0]
        st: SeqState = states[x]
        out = node.output[0]
        out_shape = self.shape(out)
        if dep != [x] or out_shape is None or None in out_shape[1:]:
            return None
        unit_only = self.unit_axes_reshape(st, out_shape[1:])
        if unit_only is not None:
            states[out] = self.seq_state(st.support, unit_only, out_shape[1:])
            return NodePlan(node, "positional", width=st.support.max_width)
        if len(out_shape) != 2 or out_shape[1] != prod(st.dims):
            return None
        if node.op_type == "Flatten" and attr(node, "axis", 1) != 1:
            return None
        users = self.consumers.get(out, [])
        if out in self.output_names or not users or not all(self.is_dense(u, out) for u in users):
            return None
        states[out] = FlatState(x)
        return NodePlan(node, "flatten", width=st.support.max_width)

    @staticmethod
    def unit_axes_reshape(st: SeqState, out_dims) -> int | None:
        """Sequence axis after a reshape that only inserts or removes size-1 axes, else None."""
        if st.dims[st.seq_axis - 1] == 1:
            return None
        kept_in = [(ax, d) for ax, d in enumerate(st.dims, start=1) if d != 1]
        kept_out = [(ax, d) for ax, d in enumerate(out_dims, start=1) if d != 1]
        if [d for _, d in kept_in] != [d for _, d in kept_out]:
            return None
        return kept_out[[ax for ax, _ in kept_in].index(st.seq_axis)][0]

    def is_dense(self, node: onnx.NodeProto, flat: str) -> bool:
        if not node.input or node.input[0] != flat or flat in node.input[1:]:
            return False
        if node.op_type == "Gemm":
            return attr(node, "transA", 0) == 0 and node.input[1] in self.inits
        if node.op_type == "MatMul":
            w = self.shape(node.input[1])
            return node.input[1] in self.inits and w is not None and len(w) == 2
        return False

    # ---------------------------------------------------------------- probe counts
