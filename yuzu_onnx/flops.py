"""FLOP accounting of a plan: naive ISM, the converted graph, and the floor (a mixin)."""

from __future__ import annotations

import onnx

from .ops import attr, conv_flops, prod


class FlopCounter:
    """Counts 2 x multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul per sequence.

    Naive ISM runs every node once per mutant; the converted graph and the floor (each mutant's
    windowed work) are each rule's own FLOP model (:attr:`yuzu_onnx.rules.base.Rule.flops`).
    Expects ``self.plan`` and ``self.shape`` from the class it is mixed into.
    """

    def count_flops(self) -> None:
        plan = self.plan
        for np_ in plan.nodes:
            per_seq = self.node_flops(np_.node)
            plan.reference_flops += per_seq  # the original graph computes y0 and R once
            if np_.spec.form == "reference":
                continue
            np_.naive_flops = plan.requested_mutants * per_seq
            np_.converted_flops, np_.floor_flops = np_.spec.flops(self, np_, per_seq)

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
