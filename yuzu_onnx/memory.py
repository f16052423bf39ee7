"""Memory of a converted graph, estimated from its tensor shapes, and batch sizes from a budget.

The estimate replays the graph in the order ONNX Runtime runs it, at batch 1 and batch 2: each node's outputs are
allocated when it runs and each tensor is freed after its last consumer, the way ONNX Runtime's
memory planner reuses buffers. The difference between the two batches is the memory of one
more sequence; weights and constants are counted apart. Nothing runs.
"""
from __future__ import annotations

import bisect
import ctypes
import json
from collections.abc import Mapping, Sequence
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import onnx
from onnx import shape_inference

from .errors import MemoryBudgetError
from .graph_walk import subgraphs
from .ops import attr

#: cuDNN refuses tensors of 2^31 elements or more (CUDNN_STATUS_NOT_SUPPORTED), and ONNX
#: Runtime's CUDA context is unusable afterwards (seen on an H100 with BPNet-9 at batch 8).
CUDA_MAX_TENSOR_ELEMENTS = 2**31 - 1

METADATA_KEY = "yuzu_onnx.memory"


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted memory of one run of a converted graph.

    Attributes
    ----------
    weights : int
        Bytes of initializers and constants (held once per session).
    fixed : int
        Bytes of activations that do not grow with the batch (shape tensors and the like).
    per_sequence : int
        Bytes of peak activations added by each sequence of the batch.
    largest_tensor : int
        Elements of the largest tensor at batch 1 (a batch multiplies it).
    unknown : int
        Tensors whose shape could not be inferred (counted as empty); 0 for converted graphs.
    """

    weights: int
    fixed: int
    per_sequence: int
    largest_tensor: int
    unknown: int = 0
    #: what the process holds (ONNX Runtime's arena, :class:`ArenaModel`): fixed (negative where
    #: the arena grows faster than the batch) and per sequence
    resident_fixed: int = 0
    resident_per_sequence: int = 0

    def resident(self, batch: int) -> int:
        """Activation bytes the process holds after a run on ``batch`` sequences (sessions as
        :func:`yuzu_onnx.runtime.make_session` makes them): the live tensors as ONNX Runtime's
        CPU arena lays them out (:class:`ArenaModel`; a Loop's body replayed iteration by
        iteration). Estimates made before this was modelled (metadata of older files) give the
        live-tensor peak."""
        if not self.resident_per_sequence and not self.resident_fixed:
            return self.activations(batch)
        return self.resident_fixed + batch * self.resident_per_sequence

    def activations(self, batch: int) -> int:
        """Peak activation bytes of a run on ``batch`` sequences."""
        return self.fixed + batch * self.per_sequence

    def total(self, batch: int) -> int:
        """Weights plus the resident activations of a run on ``batch`` sequences."""
        return self.weights + self.resident(batch)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MemoryEstimate":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


def _size(vi: onnx.ValueInfoProto) -> tuple[int, int] | None:
    """(elements, bytes) of a fully typed tensor, None when its shape or type is unknown."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape") or not tt.elem_type:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if any(d is None for d in dims):
        return None
    elements = int(math.prod(dims))
    return elements, elements * _itemsize(tt.elem_type)


def _itemsize(elem_type: int) -> int:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A light copy with every graph input's first (batch) axis fixed to ``batch``, shapes
    inferred. Large initializers become typed graph inputs so their data is never copied."""
    fixed = onnx.ModelProto()
    fixed.ir_version = model.ir_version
    fixed.opset_import.extend(model.opset_import)
    g = fixed.graph
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    for out in g.output:
        for d in out.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.ClearField("dim_param")
    for vi in g.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    g.value_info.extend(model.graph.value_info)  # shapes the emitter declared (a Loop's outputs)
    _fix_batch_param(g, batch)
    for t in model.graph.initializer:
        _add_for_inference(g, t)
    inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    _infer_loop_bodies(inferred)
    return inferred


def _add_for_inference(graph: onnx.GraphProto, t: onnx.TensorProto) -> None:
    """Give ``graph`` the constant ``t`` for shape inference: small ones as initializers (they
    may hold shapes or axes that inference must read), large ones as typed inputs (their data is
    never copied)."""
    if math.prod(t.dims) <= 64:
        graph.initializer.append(t)
    else:
        graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def static_shapes(graph: onnx.GraphProto, into: dict | None = None) -> dict[str, tuple[tuple[int, ...], int]]:
    """``name -> (dims, itemsize)`` of every tensor of an inferred graph (:func:`with_batch`)
    whose dims are all known, initializers and Loop bodies included."""
    into = {} if into is None else into
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and tt.elem_type and all(d.HasField("dim_value") for d in tt.shape.dim):
            into[vi.name] = (tuple(d.dim_value for d in tt.shape.dim), _itemsize(tt.elem_type))
    for t in graph.initializer:
        into[t.name] = (tuple(t.dims), _itemsize(t.data_type))
    for node in graph.node:
        for sub in subgraphs(node):
            static_shapes(sub, into)
    return into


def _infer_loop_bodies(model: onnx.ModelProto) -> None:
    """Shapes inside Loop bodies. ONNX's inference of a subgraph cannot read the values of
    outer-scope constants (axes, shapes), so each body is inferred as a model of its own whose
    inputs are the outer tensors it reads (typed as the outer inference found them)."""
    graph = model.graph
    known = {vi.name: vi for vi in list(graph.input) + list(graph.value_info) + list(graph.output)}
    small = {t.name: t for t in graph.initializer}
    for node in graph.node:
        for body in subgraphs(node):
            produced = {i.name for i in body.input} | {o for n in body.node for o in n.output}
            outer = sorted({n for inner in body.node for n in _node_inputs(inner) if n not in produced})
            standalone = onnx.ModelProto()
            standalone.ir_version = model.ir_version
            standalone.opset_import.extend(model.opset_import)
            sg = standalone.graph
            sg.node.extend(body.node)
            sg.input.extend(body.input)
            sg.input.extend(known[n] for n in outer if n in known and n not in small)
            sg.initializer.extend(small[n] for n in outer if n in small)
            for t in body.initializer:  # its own constants (a lifted Conv's weights, axes)
                _add_for_inference(sg, t)
            sg.output.extend(body.output)
            inferred = shape_inference.infer_shapes(standalone, data_prop=True)
            del body.value_info[:]
            body.value_info.extend(inferred.graph.value_info)


def _fix_batch_param(graph: onnx.GraphProto, batch: int) -> None:
    """Give the batch axis ``N`` declared in value infos (also in Loop bodies) the value ``batch``."""
    for vi in list(graph.value_info) + list(graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param == "N":
                d.ClearField("dim_param")
                d.dim_value = batch
    for node in graph.node:
        for sub in subgraphs(node):
            _fix_batch_param(sub, batch)


#: ops whose ONNX Runtime CPU kernel holds scratch buffers while it runs, in outputs' worth:
#: Where selects into two output-sized intermediates before combining them (measured: DeepSEA's
#: exit guard held 2 x 131 MB more than its tensors)
SCRATCH_OUTPUTS = {"Where": 2}
#: ops whose output is a view of their first input in ONNX Runtime (no new buffer)
ALIAS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
#: ops ONNX Runtime's CPU kernels run in place: the output takes over the first input's buffer
#: when that input is read by nobody later. Measured (peak RSS with the arena off, one 100 MiB
#: tensor): these activations run in place; Add, Sub, Mul, Div, Exp, Log, Neg, Abs, Sqrt and Erf
#: write a new buffer (counting them in place under-predicted gReLU's tiled dilated tower by 40%).
INPLACE_OPS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus", "HardSigmoid", "Clip"})


class ArenaModel:
    """ONNX Runtime's CPU BFC arena, as far as resident memory goes.

    Requests are rounded up to 256 bytes and served from the smallest free chunk that fits; a
    chunk is split only when it is at least twice the request (or the rest is 128 MiB or more),
    else it is handed out whole. With no chunk free, a region is added: the current region size
    (1 MiB at first), doubled until the request fits; a region that fitted without doubling
    doubles the size for the next one, one that had to grow leaves it (ONNX Runtime's
    ``kNextPowerOfTwo``: BPNet's regions were 1, 2, 4, 16, 16, 32, 64 and 128 MiB, as its
    log says). Freed chunks merge with free neighbours. Resident memory is what has been *touched*:
    the union of the requested bytes of every allocation (untouched region pages cost nothing).
    """

    ROUND = 256
    DEAD_BYTES = 128 * 2**20

    def __init__(self, initial: int = 2**20):
        self.region_bytes = initial
        self.free: list[list[int]] = []  # [region, offset, size] of free chunks
        self.used: dict[int, tuple[int, int, int]] = {}  # handle -> (region, offset, size)
        self.touched: list[list[tuple[int, int]]] = []  # per region: merged [start, end) intervals
        self.resident = 0
        self._next = 0

    def alloc(self, nbytes: int) -> int:
        """Allocate ``nbytes``; returns a handle for :meth:`free`."""
        want = -(-max(nbytes, 1) // self.ROUND) * self.ROUND
        fits = [c for c in self.free if c[2] >= want]
        if not fits:
            self._extend(want)
            fits = [c for c in self.free if c[2] >= want]
        chunk = min(fits, key=lambda c: (c[2], c[0], c[1]))
        self.free.remove(chunk)
        region, offset, size = chunk
        if size >= 2 * want or size - want >= self.DEAD_BYTES:
            self.free.append([region, offset + want, size - want])
            size = want
        self._touch(region, offset, offset + nbytes)
        self._next += 1
        self.used[self._next] = (region, offset, size)
        return self._next

    def free_chunk(self, handle: int) -> None:
        region, offset, size = self.used.pop(handle)
        for other in [c for c in self.free if c[0] == region]:  # merge with free neighbours
            if other[1] + other[2] == offset:
                self.free.remove(other)
                offset, size = other[1], other[2] + size
            elif offset + size == other[1]:
                self.free.remove(other)
                size += other[2]
        self.free.append([region, offset, size])

    def _extend(self, want: int) -> None:
        size, grew = self.region_bytes, False
        while size < want:
            size, grew = size * 2, True
        # a region that had to grow to fit the request keeps its size as the next one's
        self.region_bytes = size if grew else size * 2
        self.free.append([len(self.touched), 0, size])
        self.touched.append([])

    def _touch(self, region: int, start: int, end: int) -> None:
        """Add ``[start, end)`` to the region's touched intervals (sorted, disjoint, merged when
        they overlap or meet) and ``resident`` by the bytes it adds."""
        spans = self.touched[region]
        lo = bisect.bisect_left(spans, (start, start))
        if lo and spans[lo - 1][1] >= start:  # only the span before can reach into [start, ...)
            lo -= 1
        hi = lo
        while hi < len(spans) and spans[hi][0] <= end:
            hi += 1
        merged = spans[lo:hi]
        if merged:
            start, end = min(start, merged[0][0]), max(end, merged[-1][1])
        spans[lo:hi] = [(start, end)]
        self.resident += (end - start) - sum(b - a for a, b in merged)


def _replay(model: onnx.ModelProto, weights: set[str], arena: ArenaModel | None = None) -> tuple[int, int, int, int]:
    """(peak live activation bytes, largest tensor in elements, weight bytes, tensors of unknown
    shape) of one replay of the graph in ONNX Runtime's order (:func:`execution_order`);
    ``weights`` names the initializers.

    Tensors live in buffers: a view (Reshape, ...) shares its input's buffer, an in-place op
    reuses a dying input's buffer of the same size, and a buffer is freed when the last tensor
    in it has had its last reader (graph outputs live to the end). A Loop (a tiled plan's loop
    over chunks) holds its body's peak while it runs, plus the scan outputs it has gathered,
    which it concatenates at the end.
    """
    graph = model.graph
    sizes: dict[str, tuple[int, int]] = {}
    for t in graph.initializer:
        elements = int(math.prod(t.dims))
        sizes[t.name] = elements, elements * _itemsize(t.data_type)
    _collect_sizes(graph, sizes)
    constants = _constant_tensors(graph, weights)
    peak, largest, unknown = _replay_graph(graph, sizes, constants, {o.name for o in graph.output}, model, arena)[:3]
    # weights: the constants that non-constant nodes read (after folding, the rest is dropped)
    read = {name for node in graph.node if not all(o in constants for o in node.output if o)
            for name in _node_inputs(node) if name in constants}
    weights = sum(sizes.get(name, (0, 0))[1] for name in read)
    return peak, largest, weights, unknown


def _collect_sizes(graph: onnx.GraphProto, sizes: dict[str, tuple[int, int]]) -> None:
    """Sizes of every typed tensor of ``graph`` and of its subgraphs (Loop bodies)."""
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        size = _size(vi)
        if size is not None:
            sizes[vi.name] = size
    for node in graph.node:
        for sub in subgraphs(node):
            _collect_sizes(sub, sizes)


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, plus the outer-scope tensors its subgraphs read (kept alive while it runs)."""
    names = [n for n in node.input if n]
    for sub in subgraphs(node):
        produced = {i.name for i in sub.input} | {o for n in sub.node for o in n.output}
        names.extend(n for inner in sub.node for n in _node_inputs(inner) if n not in produced)
    return names


def execution_order(nodes: Sequence[onnx.NodeProto], folded: set[str] = frozenset()) -> list[onnx.NodeProto]:
    """The order ONNX Runtime runs ``nodes`` in by default (``ExecutionOrder::DEFAULT``): the
    post-order of a depth-first walk up the input edges, started from the nodes no other node
    reads (the last of them first), that enters a node's producers highest index first. Nodes
    whose outputs are all in ``folded`` (constant-folded at session creation) are left out.

    This is not the file's order: a tile body's reference halos (Expands of outer-scope
    tensors) run first, all of them, where the file has each before its reader. Replaying in
    file order under-predicted a tiled ChromBPNet by 24%.
    """
    kept = [n for n in nodes if not all(o in folded for o in n.output if o)]
    producer = {o: i for i, n in enumerate(kept) for o in n.output if o}
    sources = [sorted({producer[x] for x in _node_inputs(n) if x in producer}) for n in kept]
    read = {j for js in sources for j in js}
    stack = [(i, False) for i in range(len(kept)) if i not in read]
    entered: set[int] = set()
    order: list[onnx.NodeProto] = []
    while stack:
        i, done = stack.pop()
        if done:
            order.append(kept[i])
        elif i not in entered:
            entered.add(i)
            stack.append((i, True))
            stack.extend((j, False) for j in sources[i] if j not in entered)
    return order


def _schedule(graph: onnx.GraphProto, constants: set[str],
              model: onnx.ModelProto | None) -> tuple[dict[str, tuple[int, ...]], list[onnx.NodeProto],
                                                      list[list[str]], dict[str, int]]:
    """(the NCHWc Convs' weights, ONNX Runtime's node order, each node's inputs there (outer-scope
    reads of its subgraphs included), each tensor's last reader's index in it) of ``graph``: what
    every replay of it needs, computed once per Loop."""
    weights_2d = nchwc_weights(graph, constants, model)
    nodes = execution_order(graph.node, constants)
    inputs = [_node_inputs(node) for node in nodes]
    last_use: dict[str, int] = {}
    for i, names in enumerate(inputs):
        for name in names:
            last_use[name] = i
    return weights_2d, nodes, inputs, last_use


def _replay_graph(graph: onnx.GraphProto, sizes: dict[str, tuple[int, int]], constants: set[str],
                  keep: set[str], model: onnx.ModelProto | None = None,
                  arena: ArenaModel | None = None,
                  schedule: tuple | None = None) -> tuple[int, int, int, list[int]]:
    """(peak live bytes, largest tensor, unknown tensors, arena handles of the ``keep``
    tensors) of one pass over ``graph``'s nodes; tensors not produced in ``graph`` (outer scope,
    weights) are not counted. With ``arena`` every buffer is also allocated and freed in it
    (graph inputs excepted: the caller owns them); a Loop then runs its body every iteration.
    ``schedule``: :func:`_schedule` of ``graph``, where the caller replays it repeatedly."""
    weights_2d, nodes, inputs, last_use = schedule or _schedule(graph, constants, model)
    end = len(nodes)

    def nbytes(name: str) -> int:
        return sizes.get(name, (0, 0))[1]

    buffer_of: dict[str, int] = {}  # tensor -> buffer id
    buffer_bytes: dict[int, int] = {}
    buffer_until: dict[int, int] = {}  # buffer -> index of its last reader (end for outputs)
    handle_of: dict[int, int] = {}  # buffer -> arena handle

    def until(name: str) -> int:
        return end if name in keep else last_use.get(name, -1)

    live = peak = 0

    def count(nbytes_: int) -> None:
        nonlocal live, peak
        live += nbytes_
        peak = max(peak, live)

    def new_buffer(name: str, size: int | None = None, in_arena: bool = True) -> None:
        bid = len(buffer_until)  # ids are never reused (buffer_bytes shrinks as buffers die)
        buffer_of[name], buffer_bytes[bid], buffer_until[bid] = bid, nbytes(name) if size is None else size, until(name)
        count(buffer_bytes[bid])
        if arena is not None and in_arena:
            handle_of[bid] = arena.alloc(buffer_bytes[bid])

    def allocate(nbytes_: int) -> int | None:
        """A buffer no tensor names (a kernel's copy or scratch): its arena handle."""
        count(nbytes_)
        return arena.alloc(nbytes_) if arena is not None and nbytes_ else None

    def release_handle(handle: int | None, nbytes_: int) -> None:
        count(-nbytes_)
        if handle is not None:
            arena.free_chunk(handle)

    def release(names: Sequence[str], i: int) -> None:
        """Free the buffers of ``names`` whose last reader is node ``i`` or earlier."""
        for name in names:
            bid = buffer_of.get(name)
            if bid is not None and buffer_until[bid] <= i and bid in buffer_bytes:
                release_handle(handle_of.pop(bid, None), buffer_bytes.pop(bid))

    for vi in graph.input:
        if vi.name not in constants:
            new_buffer(vi.name, in_arena=False)
    largest = unknown = 0
    for i, node in enumerate(nodes):
        outputs = [o for o in node.output if o]
        if node.op_type == "Loop":
            body_peak, body_largest, body_unknown, scans, trips = _loop_body(node, sizes, constants, model)
            largest, unknown = max(largest, body_largest), unknown + body_unknown
            total = sum(scans)
            # while it runs: the body's peak and the slices gathered so far; at the end the
            # gathered slices and their concatenation
            peak = max(peak, live + body_peak + total, live + 2 * total)
            slices = []
            if arena is not None:
                slices = _replay_iterations(subgraphs(node)[0], trips, sizes, constants, model, arena)
            for name, size in zip(outputs, scans):
                new_buffer(name, size)
            for handle in slices:
                arena.free_chunk(handle)
        else:
            first = node.input[0] if node.input else ""
            shared = buffer_of.get(first)
            copy_out, reorder_out = None, 0
            copies_input, runs = conv_reorders(node, weights_2d)
            if runs:
                # a 2-D Conv with a constant weight runs in ONNX Runtime's NCHWc layout on x86
                # CPUs, as three nodes: ReorderInput copies the input into blocked channels (the
                # input dies there if the Conv was its last reader), the Conv writes a blocked
                # output (the copy dies after it), ReorderOutput copies that back (Basset with its
                # emitted Convs lifted held 142 MiB at batch 4 against 104 MiB predicted without
                # these copies); blocked copies hold whole blocks of channels (300 as 304)
                dims = weights_2d[node.input[1]]
                c_in, c_out = dims[1] * attr(node, "group", 1), dims[0]
                reorder_in = copies_input * nbytes(node.input[0]) * _blocked(c_in) // c_in
                reorder_out = runs * sum(nbytes(o) for o in outputs) * _blocked(c_out) // c_out
                copy_in = allocate(reorder_in)
                if reorder_in:
                    release(node.input[:1], i)  # ReorderInput read it last
                copy_out = allocate(reorder_out)
                release_handle(copy_in, reorder_in)
                if reorder_out:
                    release(node.input[:1], i)  # the blocked Conv read it last
            for name in outputs:
                if name not in sizes:
                    unknown += 1
                    continue
                largest = max(largest, sizes[name][0])
                # a Transpose ONNX Runtime folds into an NCHWc reorder still gets a buffer of its
                # own here: measured closer (DeepSEA 379 MiB predicted so, 506 as a view, 379
                # measured; Basenji 132 / 106 / 130)
                if shared is not None and node.op_type in ALIAS_OPS:
                    buffer_of[name] = shared
                    buffer_until[shared] = max(buffer_until[shared], until(name))
                elif (shared is not None and node.op_type in INPLACE_OPS and buffer_until[shared] == i
                      and buffer_bytes[shared] == nbytes(name)):
                    buffer_of[name] = shared
                    buffer_until[shared] = until(name)
                else:
                    new_buffer(name)
            release_handle(copy_out, reorder_out)
            scratch = SCRATCH_OUTPUTS.get(node.op_type, 0) * sum(nbytes(o) for o in outputs)
            release_handle(allocate(scratch), scratch)
        release(inputs[i] + outputs, i)  # buffers this node read last, or nobody reads
    kept = [handle_of[buffer_of[name]] for name in keep if name in buffer_of and buffer_of[name] in handle_of]
    return peak, largest, unknown, kept


def _four_d_constants(graph: onnx.GraphProto, constants: set[str]) -> dict[str, tuple[int, ...]]:
    """``graph``'s 4-D constants -> dims: its initializers, and those :func:`with_batch` made
    inputs."""
    found = {t.name: tuple(t.dims) for t in graph.initializer if len(t.dims) == 4}
    found.update({vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim) for vi in graph.input
                  if vi.name in constants and len(vi.type.tensor_type.shape.dim) == 4})
    return found


def nchwc_weights(graph: onnx.GraphProto, constants: set[str], model: onnx.ModelProto | None) -> dict[str, tuple[int, ...]]:
    """The 4-D constants a Conv of ``graph`` may read as its weight -> dims: the graph's own,
    and, for a Loop body, the main graph's."""
    weights = _four_d_constants(graph, constants)
    if model is not None and graph is not model.graph:
        weights.update(_four_d_constants(model.graph, constants))
    return weights


#: Perms of the Transposes ONNX Runtime folds into an NCHWc Conv's reorders: NHWC -> NCHW into
#: its ReorderInput, NCHW -> NHWC into its ReorderOutput (``channels_last=1``; see
#: :mod:`yuzu_onnx.emit.channels_last`, which writes them).
INTO_NCHWC_CONV = (0, 3, 1, 2)
OUT_OF_NCHWC_CONV = (0, 2, 3, 1)
#: Activations ONNX Runtime fuses into an NCHWc Conv (its ReorderOutput then follows them).
NCHWC_FUSED_ACTIVATIONS = frozenset({"Relu", "Sigmoid", "Tanh"})


#: Channels of MLAS's NCHWc blocks on AVX-512 (16; 8 on AVX2): the larger, so that what is
#: said to fold does on both (a Conv of 8 to 15 input channels copies its input on AVX2 only).
NCHWC_BLOCK = 16


def _blocked(channels: int) -> int:
    """``channels`` rounded up to whole NCHWc blocks."""
    return -(-channels // NCHWC_BLOCK) * NCHWC_BLOCK


def nchwc_reorders(conv: onnx.NodeProto, weight_dims: tuple[int, ...]) -> tuple[bool, bool]:
    """(ReorderInput, ReorderOutput): whether ONNX Runtime's NCHWc Conv for ``conv`` (4-D
    constant weight of ``weight_dims``) copies its input into blocked channels, and whether
    it runs in NCHWc at all (then its output is copied back).

    As ONNX Runtime 1.31's optimized graphs show (``tests/test_channels_last.py`` compares
    them): a group-1 Conv reads an input of fewer channels than a block as it is and runs
    blocked; with more, it runs blocked only when they come in fours (its input copy pads them
    to whole blocks: Basset's 300 as 304; 150 channels stay unblocked); its output channels
    are padded as needed. A depthwise Conv runs blocked when its channels come in fours;
    another grouped Conv only when each group's input and output channels fill whole blocks.
    """
    c_out, c_in = weight_dims[0], weight_dims[1]  # c_in per group
    group = attr(conv, "group", 1)
    if group == 1:
        if c_in < NCHWC_BLOCK:
            return False, True
        runs = c_in % 4 == 0
    elif c_in == 1 and c_out == group:  # depthwise
        runs = c_out % 4 == 0
    else:
        runs = c_in % NCHWC_BLOCK == 0 and (c_out // group) % NCHWC_BLOCK == 0
    return runs, runs


def conv_reorders(node: onnx.NodeProto | None, weights_2d: dict[str, tuple[int, ...]]) -> tuple[bool, bool]:
    """:func:`nchwc_reorders` of ``node`` if it is a Conv whose weight is one of
    ``weights_2d`` (4-D constant weights -> dims), else (False, False)."""
    if node is None or node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights_2d:
        return False, False
    return nchwc_reorders(node, weights_2d[node.input[1]])


def nchwc_producer(name: str, producer: dict[str, onnx.NodeProto], weights_2d: dict[str, tuple[int, ...]],
                   through: frozenset[str] = NCHWC_FUSED_ACTIVATIONS | {"MaxPool"}) -> onnx.NodeProto | None:
    """The NCHWc Conv whose output copy (ReorderOutput) writes ``name``, found through the ops
    ``through`` that ONNX Runtime runs on its blocked output (fused activations, MaxPools), or
    None."""
    made = producer.get(name)
    while made is not None and made.op_type in through:
        made = producer.get(made.input[0])
    return made if conv_reorders(made, weights_2d)[1] else None


def folded_transposes(graph: onnx.GraphProto, weights_2d: dict[str, tuple[int, ...]]) -> set[str]:
    """Outputs of ``graph``'s Transposes that ONNX Runtime folds into the reorders of NCHWc
    Convs (``weights_2d``: 4-D constant weights -> dims): no pass of their own (the reorder
    reads the Transpose's input, or writes its output, directly)."""
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded = set()
    for node in graph.node:
        if node.op_type != "Transpose":
            continue
        perm = tuple(attr(node, "perm", ()))
        if perm == INTO_NCHWC_CONV:
            users = readers.get(node.output[0], [])
            if users and all(u.input[0] == node.output[0] and conv_reorders(u, weights_2d)[0] for u in users):
                folded.add(node.output[0])
        elif perm == OUT_OF_NCHWC_CONV and nchwc_producer(node.input[0], producer, weights_2d) is not None:
            folded.add(node.output[0])
    return folded


#: Loop iterations the arena model always replays node by node (:func:`_replay_iterations`).
LOOP_REPLAYS = 16


def _replay_iterations(body: onnx.GraphProto, trips: int, sizes: dict[str, tuple[int, int]], constants: set[str],
                       model: onnx.ModelProto | None, arena: ArenaModel) -> list[int]:
    """Run a Loop body ``trips`` times in ``arena``; returns the handles of the gathered outputs.

    Each iteration allocates and frees the same tensors, so after :data:`LOOP_REPLAYS`
    iterations, once two in a row have touched no memory beyond their gathered outputs, the
    arena reuses the same chunks from then on: the remaining iterations only add their outputs
    (replaying each of hundreds of iterations node by node made converting gReLU's dilated model
    take 13 s instead of 0.7 s; stopping after the first two quiet iterations missed a late
    region, ChromBPNet-like 779 MiB against 869 MiB).
    """
    kept = [o.name for o in body.output[1:]]
    kept_bytes = sum(-(-max(sizes.get(name, (0, 0))[1], 1) // arena.ROUND) * arena.ROUND for name in kept)
    handles: list[int] = []
    steady = 0
    schedule = _schedule(body, constants, model)
    for done in range(trips):
        before = arena.resident
        handles += _replay_graph(body, sizes, constants, set(kept), model, arena, schedule)[3]
        steady = steady + 1 if arena.resident - before <= kept_bytes else 0
        if steady >= 2 and done + 1 >= LOOP_REPLAYS:
            handles += [arena.alloc(sizes.get(name, (0, 0))[1]) for _ in range(trips - done - 1) for name in kept]
            break
    return handles


def _loop_body(node: onnx.NodeProto, sizes: dict[str, tuple[int, int]], constants: set[str],
               model: onnx.ModelProto | None) -> tuple[int, int, int, list[int]]:
    """(body peak, largest, unknown, bytes of each scan output over all iterations) of a Loop
    whose trip count is a constant."""
    body = subgraphs(node)[0]
    trips = _constant_value(model, node.input[0]) if model is not None else None
    trips = int(np.asarray(trips).reshape(-1)[0]) if trips is not None else 1
    scan_outputs = [o.name for o in body.output[1:]]  # no loop-carried values in our Loops
    peak, largest, unknown, _ = _replay_graph(body, sizes, constants, set(scan_outputs))
    return peak, largest, unknown, [trips * sizes.get(name, (0, 0))[1] for name in scan_outputs], trips


def _constant_value(model: onnx.ModelProto, name: str):
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    return None


def _constant_tensors(graph: onnx.GraphProto, weights: set[str]) -> set[str]:
    """Initializers, Constant outputs, and outputs of nodes fed only by those: ONNX Runtime
    folds the latter into initializers when it creates the session."""
    constants = set(weights)
    for node in graph.node:
        if not subgraphs(node) and all(name in constants for name in node.input if name):
            constants.update(o for o in node.output if o)
    return constants


def estimate_memory(model: onnx.ModelProto) -> MemoryEstimate:
    """Estimate the memory of running ``model`` (a converted graph) from its tensor shapes.

    Parameters
    ----------
    model : onnx.ModelProto
        A graph whose inputs have a symbolic first (batch) axis.

    Returns
    -------
    MemoryEstimate
        Weights, fixed and per-sequence peak activation bytes, and the largest tensor.
    """
    names = {t.name for t in model.graph.initializer}
    one, two = with_batch(model, 1), with_batch(model, 2)
    peak1, largest1, weights, unknown = _replay(one, names)
    peak2, _, _, _ = _replay(two, names)
    per_sequence = max(peak2 - peak1, 0)
    # resident memory as ONNX Runtime's arena holds it, Loops replayed iteration by iteration
    # (tiled graphs, T=32: the live peak was 0.57-0.78x of measured RSS, the arena model 0.92-1.15x;
    # tools/memory_check.py)
    arenas = [ArenaModel(), ArenaModel()]
    _replay(one, names, arenas[0])
    _replay(two, names, arenas[1])
    # exact at batch 1 and 2: the fixed part may be negative where the arena grows faster than
    # the batch (its regions double; ChromBPNet-like in 16 groups: 503 MiB at batch 1, 1198 at 2,
    # measured 513 and 1034), and clamping it at 0 would say 695 MiB at batch 1
    resident_per_sequence = max(arenas[1].resident - arenas[0].resident, 0)
    resident_fixed = arenas[0].resident - resident_per_sequence
    return MemoryEstimate(weights=weights, fixed=max(peak1 - per_sequence, 0),
                          per_sequence=per_sequence, largest_tensor=largest1, unknown=unknown,
                          resident_fixed=resident_fixed, resident_per_sequence=resident_per_sequence)


def parse_size(text: str) -> int:
    """Parse a memory size such as ``"4G"``, ``"512MiB"``, ``"2.5GB"`` or ``"1000000"`` (bytes).

    Units are binary (K = 1024 bytes); ``B`` and ``iB`` suffixes are optional.

    Raises
    ------
    ValueError
        If the text is not a positive size.
    """
    s = text.strip().upper().replace("IB", "").rstrip("B")
    scale = 1
    for unit, factor in (("K", 2**10), ("M", 2**20), ("G", 2**30), ("T", 2**40)):
        if s.endswith(unit):
            s, scale = s[:-1], factor
            break
    try:
        value = float(s) * scale
    except ValueError:
        raise ValueError(f"not a memory size: {text!r} (examples: 8G, 512M, 2.5GiB)") from None
    if not value >= 1:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(value)


def format_size(n: int) -> str:
    """``n`` bytes as a short human-readable string (binary units)."""
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor:
            return f"{n / factor:.2f} {unit}"
    return f"{n} B"


def release_freed_memory() -> bool:
    """Make glibc serve blocks of 1 MiB and more with mmap and return them when freed.

    By default glibc raises its mmap threshold after the first large free, so tensors freed by
    one run stay in the heap and the process keeps up to ~2x the peak ONNX Runtime needs
    (Basset: 348 MiB resident for a 145 MiB plan). Process-wide; a no-op elsewhere than glibc.

    Returns
    -------
    bool
        Whether the setting was applied.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**20))
    except (OSError, AttributeError):
        return False


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def batch_for_budget(estimate: MemoryEstimate, budget: int | None, requested: int, cuda: bool = False,
                     where: str = "model") -> int:
    """The largest batch size ``<= requested`` whose estimated memory fits ``budget`` bytes
    (any size up to ``requested`` when ``budget`` is None).

    On CUDA the batch is also kept small enough that no tensor reaches 2^31 elements.

    Raises
    ------
    MemoryBudgetError
        If one sequence alone needs more than ``budget``; the message gives the number needed.
    """
    batch = requested
    if budget is not None:
        need_one = estimate.total(1)
        if need_one > budget:
            raise MemoryBudgetError(
                f"{where}: one sequence needs about {format_size(need_one)} (weights "
                f"{format_size(estimate.weights)} + activations {format_size(estimate.resident(1))}), "
                f"more than the memory budget of {format_size(budget)}; raise --max-memory / max_memory "
                f"to at least {format_size(need_one)}, or convert a shorter region (--start/--end)")
        # the same measure as the check above: total(b) is linear in b
        per_sequence = max(estimate.total(2) - estimate.total(1), 1)
        fits = 1 + (budget - need_one) // per_sequence
        batch = max(1, min(requested, int(fits)))
    if cuda:
        batch = min(batch, cuda_batch_limit(estimate))
    return batch


def cuda_batch_limit(estimate: MemoryEstimate) -> int:
    """Largest batch whose biggest tensor stays under cuDNN's 2^31-element limit (at least 1)."""
    return max(1, CUDA_MAX_TENSOR_ELEMENTS // max(estimate.largest_tensor, 1))


def stored_estimate(props: Mapping[str, str]) -> MemoryEstimate | None:
    """The estimate a converted model's metadata holds, None if absent or from another version."""
    try:
        return MemoryEstimate.from_json(props[METADATA_KEY])
    except (KeyError, TypeError, ValueError):
        return None


__all__ = ["MemoryEstimate", "estimate_memory", "batch_for_budget", "cuda_batch_limit", "parse_size",
           "format_size", "available_memory", "stored_estimate", "CUDA_MAX_TENSOR_ELEMENTS"]
