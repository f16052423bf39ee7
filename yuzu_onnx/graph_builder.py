"""A small append-only builder for ONNX nodes and constants with unique names."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers for the emitted ISM graph.

    Names get a common prefix and a counter, so emitted tensors never collide with the
    original model's names (which are reserved up front).

    Parameters
    ----------
    reserved : iterable of str
        Names already used by the original graph.
    float_dtype : np.dtype
        Floating dtype of the model's activations; float constants are cast to it.
    """

    def __init__(self, reserved: Sequence[str], float_dtype: np.dtype = np.dtype(np.float32)):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.float_dtype = np.dtype(float_dtype)
        self._used = set(reserved)
        self._counter = 0
        self._const_cache: dict[tuple, str] = {}

    @contextlib.contextmanager
    def into(self, nodes: list[onnx.NodeProto]) -> Iterator[list[onnx.NodeProto]]:
        """Append nodes to ``nodes`` (a subgraph's body) instead of the main graph while in the
        block. Initializers still go to the main graph, which a subgraph can read."""
        outer, self.nodes = self.nodes, nodes
        try:
            yield nodes
        finally:
            self.nodes = outer

    def fresh(self, hint: str) -> str:
        """Return a new unique tensor name built from ``hint``."""
        while True:
            self._counter += 1
            name = f"yz/{hint}_{self._counter}"
            if name not in self._used:
                self._used.add(name)
                return name

    def reserve(self, name: str) -> str:
        """Claim an exact name (for graph outputs); it must not be taken yet."""
        if name in self._used:
            raise ValueError(f"tensor name {name!r} is already used in the graph")
        self._used.add(name)
        return name

    def const(self, value: Any, hint: str = "c", dtype: Any = None) -> str:
        """Add a constant initializer and return its name.

        Float arrays are stored in the model's float dtype unless ``dtype`` says otherwise;
        small constants with identical content are shared.
        """
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(self.float_dtype)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)  # ONNX shape/axes inputs must be int64
        key = None
        if arr.size <= 16:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._const_cache:
                return self._const_cache[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        if key is not None:
            self._const_cache[key] = name
        return name

    def ints(self, values: Sequence[int], hint: str = "i") -> str:
        """Constant int64 1-D tensor (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), dtype=np.int64), hint, dtype=np.int64)

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None,
           outputs: Sequence[str] | None = None, n_out: int = 1, **attrs: Any) -> str:
        """Append a node; returns its (first) output name."""
        if outputs is None:
            outputs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        node = helper.make_node(op_type, list(inputs), list(outputs),
                                name=self.fresh(f"node_{op_type}"), **attrs)
        self.nodes.append(node)
        return outputs[0]

    def clone(self, node: onnx.NodeProto, inputs: Sequence[str], outputs: Sequence[str], hint: str) -> None:
        """Append a copy of an original node (same op, attributes) wired to new tensors."""
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = self.fresh(f"node_{hint}_{node.op_type}")
        del copy.input[:]
        copy.input.extend(inputs)
        del copy.output[:]
        copy.output.extend(outputs)
        self.nodes.append(copy)

    # Shorthands for the ops the rules use most.
    def reshape(self, x: str, shape: Sequence[int], hint: str = "reshape") -> str:
        return self.op("Reshape", [x, self.ints(shape)], hint)

    def transpose(self, x: str, perm: Sequence[int], hint: str = "transpose") -> str:
        if list(perm) == list(range(len(perm))):
            return x
        return self.op("Transpose", [x], hint, perm=list(perm))

    def unsqueeze(self, x: str, axes: Sequence[int], hint: str = "unsqueeze") -> str:
        return self.op("Unsqueeze", [x, self.ints(axes)], hint)

    def gather(self, x: str, indices: np.ndarray | str, axis: int, hint: str = "gather") -> str:
        if not isinstance(indices, str):
            # int32 tables halve the file; Gather takes int32 indices on CPU and CUDA alike
            small = indices.size == 0 or int(np.abs(indices).max()) < 2 ** 31
            indices = self.const(indices, "idx", dtype=np.int32 if small else np.int64)
        return self.op("Gather", [x, indices], hint, axis=axis)
