"""Pass 3, analyze: propagate support intervals through the graph and choose a rule per node.

Representations of a sequence-dependent tensor ``t`` with logical shape ``(N, *dims)``:

- ``SeqState`` (delta, probe form): a tensor ``Z`` of shape ``(N, P, *dims)``. Probe ``p`` at
  sequence position ``j`` holds the delta (mutant minus reference) of the unique mutant ``m``
  with ``m mod P == p`` among those that reach ``j``, or zero. Unique because at most
  ``K <= P`` consecutive mutants reach any position. The reference ``R`` is the original
  tensor, computed by the untouched original graph.
- ``MutState`` (materialized): the tensor evaluated on every mutant, batch ``N * M``.
- ``FlatState``: a flattened ``SeqState`` awaiting its dense layer (the dense exit).

Rules (``NodePlan.rule``): ``reference`` (not sequence dependent), ``elementwise``,
``window`` (Conv/pool on probes), ``flatten`` + ``dense-exit``, ``per-mutant`` (run the original
node on materialized mutants; a ``fallback`` when its input had to be materialized).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from . import cost
from .canonicalize import TensorInfo
from .errors import UnsupportedModelError
from .load import SequenceInput
from . import positional
from .ops import (BINARY_ELEMENTWISE, POSITIONAL_OPS, LINEAR_WINDOW_OPS, UNARY_ELEMENTWISE, WINDOW_OPS, attr,
                  conv_flops, prod, transposed_window_1d, window_1d)
from .support import Support


class ConversionWarning(UserWarning):
    """An op is not accelerated and runs on materialized mutants (exact, but slow)."""


@dataclass
class SeqState:
    support: Support
    seq_axis: int
    dims: tuple[int, ...]  # logical shape without the batch axis
    slots: int  # K
    probes: int = 0  # P, assigned after supports are known


@dataclass
class MutState:
    pass


@dataclass
class FlatState:
    source: str  # the SeqState tensor that was flattened


@dataclass
class NodePlan:
    node: onnx.NodeProto
    rule: str
    probes: int = 0  # P of the sequence-dependent output (probe-form rules)
    sensing: str = "spike"
    conv_impl: str = "conv"  # "taps": per-tap MatMul then shifted sum (few output channels)
    materialize: list[str] = field(default_factory=list)
    naive_flops: int = 0
    converted_flops: int = 0
    floor_flops: int = 0
    width: int = 0  # support width (positions) of the output
    note: str = ""


@dataclass
class Plan:
    """Everything the emit pass needs, computed without running the model."""

    model: onnx.ModelProto
    infos: dict[str, TensorInfo]
    seq: SequenceInput
    start: int
    end: int
    substitutions: str  # "alt" or "all"
    sensing: str
    alpha: float
    seed: int
    states: dict[str, object]
    nodes: list[NodePlan]
    outputs: list[str]
    reference_flops: int = 0
    #: Tensors computed from the model's other (non-sequence) inputs: they carry the batch axis
    #: and are repeated over probes or mutants wherever they meet sequence-dependent tensors.
    side: set[str] = field(default_factory=set)

    @property
    def subs(self) -> int:
        """``S``: substitutions computed per position."""
        return self.seq.alphabet - 1 if self.substitutions == "alt" else self.seq.alphabet

    @property
    def region(self) -> int:
        return self.end - self.start

    @property
    def mutants(self) -> int:
        """``M``: mutants per sequence."""
        return self.subs * self.region

    def totals(self) -> dict[str, int]:
        """Summed FLOPs: naive ISM, converted graph (incl. the reference pass), floor."""
        naive = sum(n.naive_flops for n in self.nodes) + self.reference_flops
        conv = sum(n.converted_flops for n in self.nodes) + self.reference_flops
        floor = sum(n.floor_flops for n in self.nodes) + self.reference_flops
        return {"naive": naive, "converted": conv, "floor": floor}


def analyze(model: onnx.ModelProto, infos: dict[str, TensorInfo], seq: SequenceInput, *,
            start: int, end: int, substitutions: str, sensing: str, alpha: float,
            seed: int) -> Plan:
    """Choose a rule for each node of a canonical model and size every probe tensor.

    Emits a :class:`ConversionWarning` for each op that falls back to materialized mutants.
    """
    plan = Plan(model, infos, seq, start, end, substitutions, sensing, alpha, seed,
                states={}, nodes=[], outputs=[o.name for o in model.graph.output])
    _Analyzer(plan).run()
    return plan


class _Analyzer:
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
    def assign_probes(self) -> None:
        plan = self.plan
        states = plan.states
        states[plan.seq.name].probes = plan.subs
        for np_ in plan.nodes:
            node = np_.node
            out = node.output[0] if node.output else None
            st = states.get(out)
            if not isinstance(st, SeqState):
                continue
            p_in = max(states[n].probes for n in node.input if isinstance(states.get(n), SeqState))
            if np_.rule in ("elementwise", "positional"):
                st.probes = max(p_in, max(st.slots, 1))
            elif np_.sensing == "gaussian":
                need = max(math.ceil(plan.alpha * st.slots), self.segment_slots(self.segment(out)))
                st.probes = max(need, 1)
            elif p_in >= st.slots:
                st.probes = p_in
            else:
                st.probes = self.choose_probes(np_, p_in)
            np_.probes = st.probes

    def choose_probes(self, np_: NodePlan, p_in: int) -> int:
        """Probes for a widening op: enough for its whole cheap segment (no later reprobe), or
        just enough for itself and a reprobe later, whichever the time model prefers."""
        out = np_.node.output[0]
        seg = self.segment(out)
        options = set(cost.probe_candidates(p_in, self.segment_slots(seg)))
        options.update(cost.probe_candidates(p_in, self.plan.states[out].slots))
        return min(sorted(options), key=lambda p: self.segment_seconds(np_, p_in, p, seg))

    def segment_seconds(self, np_: NodePlan, p_in: int, probes: int, seg: list[str]) -> float:
        states = self.plan.states
        x = np_.node.input[0]
        seconds = cost.reprobe_seconds(p_in, probes, prod(states[x].dims))
        seconds += cost.conv_seconds(probes, self.node_flops(np_.node), self.conv_buffer(np_))
        current, prev = probes, seg[0]
        for i, name in enumerate(seg[1:], start=1):
            if states[name].slots > current:
                target = cost.round_probes(current, self.segment_slots(seg[i:]))
                seconds += cost.reprobe_seconds(current, target, prod(states[prev].dims))
                current = target
            seconds += cost.elementwise_seconds(current, prod(states[name].dims))
            prev = name
        return seconds

    def conv_buffer(self, np_: NodePlan) -> int:
        """Elements per probe of the buffer a Conv writes besides its output (im2col or taps)."""
        node = np_.node
        if node.op_type != "Conv":
            return 0
        x, w = self.plan.states[node.input[0]], self.shape(node.input[1])
        l_out = self.plan.states[node.output[0]].dims[-1]
        if np_.conv_impl == "taps":
            return 3 * int(w[0]) * int(w[2]) * x.dims[-1]
        return x.dims[0] * int(w[2]) * l_out

    def segment(self, name: str) -> list[str]:
        """``name`` and the chain of cheap ops (activations, pools) that follows it."""
        states = self.plan.states
        chain = [name]
        by_node = {id(n.node): n for n in self.plan.nodes}
        while True:
            users = self.consumers.get(name, [])
            if len(users) != 1 or name in self.output_names:
                return chain
            user = by_node[id(users[0])]
            if user.rule not in ("elementwise", "positional", "window") or user.node.op_type == "Conv":
                return chain
            if [n for n in user.node.input if n in states] != [name]:
                return chain
            name = user.node.output[0]
            chain.append(name)

    def segment_slots(self, seg: list[str]) -> int:
        return max(max(self.plan.states[n].slots for n in seg), 1)

    # ---------------------------------------------------------------- FLOPs
    def count_flops(self) -> None:
        plan = self.plan
        states = plan.states
        m = plan.mutants
        s = plan.subs
        for np_ in plan.nodes:
            node = np_.node
            per_seq = self.node_flops(node)
            if np_.rule == "reference":
                plan.reference_flops += per_seq
                continue
            plan.reference_flops += per_seq
            np_.naive_flops = m * per_seq
            if np_.rule in ("per-mutant", "fallback", "exit"):
                np_.converted_flops = np_.floor_flops = m * per_seq
            elif np_.rule == "window" and node.op_type == "Conv":
                out = states[node.output[0]]
                per_position = per_seq // max(out.dims[out.seq_axis - 1], 1)
                np_.floor_flops = int(s * out.support.widths.sum()) * per_position
                np_.converted_flops = out.probes * per_seq
                if np_.sensing == "gaussian":
                    cin = states[node.input[0]].dims
                    np_.converted_flops += 2 * out.probes ** 2 * prod(cin) + 2 * out.probes * out.slots * prod(out.dims)
            elif np_.rule == "reduce-exit":
                src = states[node.input[0]]
                np_.floor_flops = np_.converted_flops = int(s * src.support.widths.sum()) * prod(src.dims) // max(src.dims[src.seq_axis - 1], 1)
            elif np_.rule == "dense-exit":
                src = states[states[node.input[0]].source]
                per_position = per_seq // max(src.dims[src.seq_axis - 1], 1)
                np_.floor_flops = int(s * src.support.widths.sum()) * per_position
                np_.converted_flops = src.probes * per_seq

    def node_flops(self, node: onnx.NodeProto) -> int:
        op = node.op_type
        if op == "Conv":
            x, w, y = self.shape(node.input[0]), self.shape(node.input[1]), self.shape(node.output[0])
            if x is None or w is None or y is None or None in w or None in y[1:]:
                return 0
            return conv_flops(int(x[1]), int(w[0]), prod(y[2:]), prod(w[2:]), int(attr(node, "group", 1)))
        if op == "ConvTranspose":
            x, w = self.shape(node.input[0]), self.shape(node.input[1])
            if x is None or w is None or None in w or None in x[1:]:
                return 0
            return 2 * prod(x[1:]) * prod(w[1:])
        if op in ("Gemm", "MatMul"):
            a, y = self.shape(node.input[0]), self.shape(node.output[0])
            if a is None or y is None or None in a[1:] or None in y[1:]:
                return 0
            return 2 * prod(y[1:]) * int(a[-1] if op == "MatMul" or not attr(node, "transA", 0) else a[-2])
        return 0
