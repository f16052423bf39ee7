"""FLOP accounting of a plan: naive ISM, the converted graph, and the floor (a mixin)."""

from __future__ import annotations

import onnx

from .ops import attr, conv_flops, prod


class FlopCounter:
    """Counts 2 x multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul per sequence.

    Naive ISM runs every node once per mutant; the converted graph runs probe-form convs once
    per probe and exits once per position and probe; the floor is each mutant's windowed work.
    Expects ``self.plan`` and ``self.shape`` from the class it is mixed into.
    """

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
