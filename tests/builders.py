"""Builders shared by the tests: seeded one-hot inputs and small hand-built ONNX sequence models.

Every builder is deterministic given its seed (or generator): building the same model twice
gives the same bytes. Models default to opset :data:`OPSET` and IR version :data:`IR_VERSION`,
which every onnxruntime this project supports loads.

The pieces compose: :func:`weight` draws one weight, :func:`conv` returns a node and its
initializers, :func:`conv_pair` and :func:`dense_head` return ``(nodes, initializers)`` for a
part of a graph, :func:`onnx_model` assembles nodes and initializers into a model,
:func:`conv_relu_conv` is the smallest whole sequence model, and :class:`Net` builds larger
graphs with automatic names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx.seqio import random_one_hot

__all__ = [
    "IR_VERSION", "OPSET", "Net", "conv", "conv_pair", "conv_relu_conv", "dense_head", "initializers", "onnx_model",
    "random_one_hot", "tensor_info", "weight",
]

#: Default-domain opset of the hand-built models.
OPSET = 17
#: IR version of the hand-built models (onnxruntime 1.20 and later load it).
IR_VERSION = 10

Shape = Sequence[int | str | None] | None
Inits = Mapping[str, object] | Iterable[onnx.TensorProto]
Rng = np.random.Generator | int


# ----------------------------------------------------------------------------- assembly


def tensor_info(name: str, shape: Shape, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input or output: ``name`` with ``shape`` (``None``: unknown rank) and ``elem_type``."""
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))


def initializers(inits: Inits) -> list[onnx.TensorProto]:
    """Initializers from a ``{name: array-like}`` mapping, or ``TensorProto`` objects as they are."""
    if isinstance(inits, Mapping):
        return [numpy_helper.from_array(np.asarray(value), name) for name, value in inits.items()]
    return list(inits)


def _value_infos(spec, elem_type: int) -> list[onnx.ValueInfoProto]:
    """``{name: shape}``, or a sequence of value infos and names (of unknown shape)."""
    if isinstance(spec, Mapping):
        return [tensor_info(name, shape, elem_type) for name, shape in spec.items()]
    return [item if isinstance(item, onnx.ValueInfoProto) else tensor_info(item, None, elem_type) for item in spec]


def onnx_model(nodes: Iterable[onnx.NodeProto], inits: Inits,
               inputs: Shape | Mapping[str, Shape] | Sequence[onnx.ValueInfoProto],
               outputs: Sequence[str | onnx.ValueInfoProto] | Mapping[str, Shape] = ("y",), *,
               dtype: int = TensorProto.FLOAT, output_dtype: int = TensorProto.FLOAT, opset: int = OPSET,
               ir_version: int | None = IR_VERSION, extra_opsets: Sequence[onnx.OperatorSetIdProto] = (),
               functions: Sequence[onnx.FunctionProto] = (), name: str = "m", infer_shapes: bool = False,
               check: bool = False) -> onnx.ModelProto:
    """Assemble a model.

    Parameters
    ----------
    nodes : iterable of onnx.NodeProto
        The graph's nodes, in order.
    inits : mapping or iterable of onnx.TensorProto
        Initializers: ``{name: array-like}`` or ready ``TensorProto`` objects.
    inputs : shape, mapping or sequence of onnx.ValueInfoProto
        A shape (one input ``x``), ``{name: shape}``, or value infos. Mapping and shape inputs
        have element type ``dtype``.
    outputs : sequence of str or onnx.ValueInfoProto, or mapping, optional
        Output names (shape unknown) and value infos, or ``{name: shape}``; default ``("y",)``.
        Names and mapping outputs have element type ``output_dtype``.
    dtype, output_dtype : int, optional
        ``TensorProto`` element types of the inputs and outputs (float32).
    opset : int, optional
        Default-domain opset.
    ir_version : int or None, optional
        IR version; ``None`` keeps :func:`onnx.helper.make_model`'s (the installed onnx's newest).
    extra_opsets : sequence of onnx.OperatorSetIdProto, optional
        Further opset imports (custom domains).
    functions : sequence of onnx.FunctionProto, optional
        Model-local functions.
    name : str, optional
        Graph name.
    infer_shapes : bool, optional
        Run ONNX shape inference on the result (fills ``value_info`` and output shapes).
    check : bool, optional
        Run the full ONNX checker on the result.

    Returns
    -------
    onnx.ModelProto
    """
    if not isinstance(inputs, Mapping) and not any(isinstance(i, onnx.ValueInfoProto) for i in inputs or ()):
        inputs = {"x": inputs}  # a shape
    graph = helper.make_graph(list(nodes), name, _value_infos(inputs, dtype), _value_infos(outputs, output_dtype),
                              initializers(inits))
    extra = {} if ir_version is None else {"ir_version": ir_version}
    result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
                               functions=list(functions), **extra)
    if infer_shapes:
        result = onnx.shape_inference.infer_shapes(result)
    if check:
        onnx.checker.check_model(result, full_check=True)
    return result


# ----------------------------------------------------------------------------- weights and layers


def weight(rng: np.random.Generator, shape: int | Sequence[int], scale: float | None = None) -> np.ndarray:
    """A float32 weight: standard normal draws times ``scale``.

    Parameters
    ----------
    rng : numpy.random.Generator
        The generator to draw from (it advances).
    shape : int or sequence of int
        Weight shape; for a conv ``(c_out, c_in / group, k)``, for a matmul ``(n_in, n_out)``.
    scale : float, optional
        Standard deviation; default ``1 / sqrt(fan_in)`` with ``fan_in = prod(shape[1:])``
        (1 for a vector).

    Returns
    -------
    numpy.ndarray
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    value = rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(fan_in))
    return value.astype(np.float32)


def conv(name: str, x: str, y: str, weight_shape: Sequence[int], rng: np.random.Generator, *,
         scale: float | None = None, bias: float | None = 0.1, w: str | None = None, b: str | None = None,
         **attrs) -> tuple[onnx.NodeProto, dict[str, np.ndarray]]:
    """A ``Conv`` node with random weights.

    Parameters
    ----------
    name : str
        Node name.
    x, y : str
        Input and output tensor names.
    weight_shape : sequence of int
        ``(c_out, c_in / group, k)``.
    rng : numpy.random.Generator
        Draws the weight, then the bias (see :func:`weight`).
    scale : float, optional
        Standard deviation of the weight; default ``1 / sqrt(fan_in)``.
    bias : float or None, optional
        Standard deviation of the bias; ``None`` for no bias.
    w, b : str, optional
        Initializer names; default ``<name>_w`` and ``<name>_b``.
    **attrs
        Conv attributes (``pads``, ``strides``, ``dilations``, ``group``, ``auto_pad``, ...).

    Returns
    -------
    node : onnx.NodeProto
    inits : dict
        The weight (and bias) as float32 arrays, by name.
    """
    w = w or f"{name}_w"
    inits = {w: weight(rng, weight_shape, scale)}
    if bias is not None:
        b = b or f"{name}_b"
        inits[b] = weight(rng, weight_shape[0], bias)
    return helper.make_node("Conv", [x, *inits], [y], name=name, **attrs), inits


def conv_pair(src: str = "x", out: str = "y", *, rng: Rng = 0, c_in: int = 4, c1: int = 6, c2: int = 3,
              k1: int = 5, k2: int = 3, mid: str | Sequence[str | tuple[str, dict]] = "Relu",
              conv1: dict | None = None, conv2: dict | None = None,
              scales: tuple[float | None, float | None, float | None, float | None] = (None, 0.1, None, 0.1),
              ) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """Two convolutions with one-input ops between them:
    ``src -> Conv(c_in -> c1, k1) -> mid -> Conv(c1 -> c2, k2) -> out``.

    Parameters
    ----------
    src, out : str
        Names of the input and output tensors.
    rng : numpy.random.Generator or int
        Generator (or its seed) for the weights, drawn in the order ``w1, b1, w2, b2``.
    c_in, c1, c2 : int
        Channels of ``src``, of the first and of the second conv.
    k1, k2 : int
        Kernel widths.
    mid : str or sequence of str or (str, dict)
        The op(s) between the convs, each with one input, with attributes where a pair is given.
    conv1, conv2 : dict, optional
        Conv attributes; default ``pads=[k // 2, k // 2]`` ("same" for odd ``k``).
    scales : 4-tuple of float or None
        Standard deviations of ``w1, b1, w2, b2`` (``None``: ``1 / sqrt(fan_in)``).

    Returns
    -------
    nodes : list of onnx.NodeProto
        Named ``conv1``, then the mid ops (``relu1``, ...), then ``conv2``; the first conv
        writes ``c1``, the mid ops ``h1``, ``h2``, ...
    inits : dict
        ``w1, b1, w2, b2`` (float32 arrays; callers may change them before building).
    """
    rng = np.random.default_rng(rng)
    first, inits = conv("conv1", src, "c1", (c1, c_in, k1), rng, scale=scales[0], bias=scales[1], w="w1", b="b1",
                        **(dict(pads=[k1 // 2] * 2) if conv1 is None else conv1))
    nodes, h = [first], "c1"
    for i, op in enumerate([mid] if isinstance(mid, str) else mid):
        op_type, attrs = (op, {}) if isinstance(op, str) else op
        nodes.append(helper.make_node(op_type, [h], [f"h{i + 1}"], name=f"{op_type.lower()}{i + 1}", **attrs))
        h = f"h{i + 1}"
    second, inits2 = conv("conv2", h, out, (c2, c1, k2), rng, scale=scales[2], bias=scales[3], w="w2", b="b2",
                          **(dict(pads=[k2 // 2] * 2) if conv2 is None else conv2))
    return [*nodes, second], {**inits, **inits2}


def dense_head(src: str, out: str, n_in: int, n_out: int, rng: np.random.Generator, *,
               scale: float | None = None, flatten: str = "Reshape", weight_name: str = "wd",
               name: str = "dense") -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """A dense exit: flatten ``src`` to ``(N, n_in)``, then ``MatMul`` by an ``(n_in, n_out)`` weight.

    Parameters
    ----------
    src, out : str
        Input and output tensor names.
    n_in, n_out : int
        Features after flattening, and outputs.
    rng : numpy.random.Generator
        Generator for the weight.
    scale : float, optional
        Standard deviation of the weight; default ``1 / sqrt(n_in)``.
    flatten : {"Reshape", "Flatten"}
        ``Reshape`` to ``[0, -1]`` (PyTorch's ``view``) or ``Flatten(axis=1)``.
    weight_name, name : str
        Names of the weight and of the ``MatMul`` node.

    Returns
    -------
    nodes, inits
        The nodes (the ``MatMul`` last) and ``{weight_name: weight}`` (plus ``flat_shape``).
    """
    inits = {weight_name: weight(rng, (n_in, n_out), scale if scale is not None else 1 / np.sqrt(n_in))}
    if flatten == "Reshape":
        inits["flat_shape"] = np.array([0, -1], np.int64)
        first = helper.make_node("Reshape", [src, "flat_shape"], [f"{out}_flat"])
    else:
        first = helper.make_node("Flatten", [src], [f"{out}_flat"], axis=1)
    return [first, helper.make_node("MatMul", [f"{out}_flat", weight_name], [out], name=name)], inits


def conv_relu_conv(length: int | None = None, *, x_shape: Shape = None, src: str = "x",
                   pre: Sequence[onnx.NodeProto] = (), k1: int = 5, pads1: Sequence[int] | None = None,
                   seed: Rng = 0, dtype: int = TensorProto.FLOAT, opset: int = OPSET,
                   **conv1) -> onnx.ModelProto:
    """``x -> [pre nodes] -> Conv(4 -> 6, k1) -> Relu -> Conv(6 -> 3, k=3, pads 1) -> y``.

    Parameters
    ----------
    length : int, optional
        Sequence length of the input ``x`` of shape ``("N", 4, length)``.
    x_shape : shape, optional
        The input's shape instead (e.g. channels-last, with a ``Transpose`` in ``pre``).
    src : str
        The tensor the first conv reads (the output of ``pre``).
    pre : sequence of onnx.NodeProto
        Nodes from ``x`` to ``src`` (casts, transposes).
    k1 : int
        Kernel width of the first conv.
    pads1 : sequence of int, optional
        Its pads (default ``k1 // 2`` each side); ignored when ``conv1`` attributes are given.
    seed : int or numpy.random.Generator
        Weight seed (see :func:`conv_pair`).
    dtype : int
        Element type of ``x``.
    opset : int
        Default-domain opset.
    **conv1
        Attributes of the first conv (replacing the pads).

    Returns
    -------
    onnx.ModelProto
        Shape-inferred; nodes named ``conv1``, ``relu1``, ``conv2``.
    """
    attrs = conv1 or dict(pads=list(pads1) if pads1 is not None else [k1 // 2] * 2)
    nodes, inits = conv_pair(src, "y", rng=seed, k1=k1, conv1=attrs)
    shape = x_shape if x_shape is not None else ["N", 4, length]
    return onnx_model([*pre, *nodes], inits, shape, dtype=dtype, opset=opset, infer_shapes=True)


# ----------------------------------------------------------------------------- larger graphs


class Net:
    """Graph builder with random weights and automatic names (``c<i>`` for initializers,
    ``t<i>`` for tensors, ``<Op>_<i>`` for nodes).

    Parameters
    ----------
    seed : int
        Seed of :attr:`rng`, which draws every weight in call order.
    """

    def __init__(self, seed: int = 5):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def w(self, *shape: int, scale: float | None = None) -> str:
        """A random weight of ``shape`` (see :func:`weight`); returns its name."""
        return self.const(weight(self.rng, shape, scale))

    def const(self, value) -> str:
        """An initializer holding ``value`` (integers as int64); returns its name."""
        self.count += 1
        name = f"c{self.count}"
        arr = np.asarray(value)
        self.inits.append(numpy_helper.from_array(arr.astype(np.int64) if arr.dtype.kind == "i" else arr, name))
        return name

    def op(self, op_type: str, inputs: Iterable[str], **attrs) -> str:
        """A node of ``op_type`` on ``inputs``; returns its (single) output's name."""
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self.count}", **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int, **attrs) -> str:
        """A 1-D ``Conv`` with a random weight and bias (bias std 0.5)."""
        return self.op("Conv", [x, self.w(c_out, c_in // attrs.get("group", 1), k), self.w(c_out, scale=0.5)], **attrs)

    def model(self, inputs: dict[str, list], outputs: dict[str, str]) -> onnx.ModelProto:
        """The model with float ``inputs`` (``{name: shape}``) and ``outputs`` (``{name: tensor}``,
        each an ``Identity`` of the tensor, with its inferred shape)."""
        graph_inputs = [tensor_info(k, v) for k, v in inputs.items()]
        probe = onnx_model(self.nodes, self.inits, graph_inputs, [], name="net")
        shapes = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(probe).graph.value_info}
        graph_outputs = []
        for name, out in outputs.items():
            self.nodes.append(helper.make_node("Identity", [out], [name]))
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(shapes[out])
            vi.name = name
            graph_outputs.append(vi)
        return onnx_model(self.nodes, self.inits, graph_inputs, graph_outputs, name="net")
