"""Check that every op of a graph has a CUDA kernel in ONNX Runtime.

The table ``data/ort_cuda_kernels.tsv`` holds the CUDAExecutionProvider rows of ONNX Runtime
1.25's operator kernel table (``docs/OperatorKernels.md``). ONNX Runtime picks a kernel for a node
by the *resolved* version of the node's op: the ``since_version`` of the newest schema of that op
that is not newer than the graph's opset for the op's domain. A kernel row covers a resolved
version when it lies in the row's range (``"13+"``: 13 and later; ``"[6, 12]"``: 6 to 12;
``"12"``: exactly 12). For example Conv at opset 17 resolves to Conv-11 and is covered by the row
``[11, 21]``; Flatten at opset 21 resolves to Flatten-21 and is covered by ``13+``.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx.defs
import onnx.shape_inference

from .graph_walk import subgraphs

__all__ = ["missing_cuda_kernels"]

DEFAULT_DOMAIN = "ai.onnx"

# A plain file path (not importlib.resources): works for regular, editable and namespace installs.
KERNEL_TABLE = Path(__file__).resolve().parent / "data" / "ort_cuda_kernels.tsv"

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: "tensor(float)",
    onnx.TensorProto.FLOAT16: "tensor(float16)",
    onnx.TensorProto.BFLOAT16: "tensor(bfloat16)",
    onnx.TensorProto.DOUBLE: "tensor(double)",
}

# Ops that ONNX Runtime removes or resolves while loading the graph; they never need a kernel.
_NO_KERNEL_NEEDED = {(DEFAULT_DOMAIN, "Constant")}


@dataclass(frozen=True)
class KernelRow:
    """One CUDA kernel registration.

    Attributes
    ----------
    domain : str
        Op domain, ``"ai.onnx"`` for the default domain.
    op : str
        Op type.
    first : int
        First op version the kernel covers.
    last : int or None
        Last op version it covers, ``None`` for open-ended (``"13+"``).
    types : dict of str to frozenset of str
        Type constraint name to allowed types, e.g. ``{"T": {"tensor(float)", ...}}``.
    """

    domain: str
    op: str
    first: int
    last: int | None
    types: dict[str, frozenset[str]]

    def covers(self, version: int) -> bool:
        """Whether this kernel serves op version ``version``."""
        return self.first <= version and (self.last is None or version <= self.last)


@dataclass(frozen=True)
class _Scope:
    """Where a node lives: the opsets in force and the element types known there."""

    opsets: dict[str, int]
    elem_types: dict[str, int]


def parse_since_version(text: str) -> tuple[int, int | None]:
    """Parse a ``since_version`` cell into an inclusive version range.

    Parameters
    ----------
    text : str
        ``"13+"``, ``"[6, 12]"`` or ``"12"``.

    Returns
    -------
    tuple of (int, int or None)
        ``(first, last)``; ``last`` is ``None`` for an open-ended range.
    """
    text = text.strip()
    if text.endswith("+"):
        return int(text[:-1]), None
    if text.startswith("[") and text.endswith("]"):
        first, last = (int(part) for part in text[1:-1].split(","))
        return first, last
    version = int(text)
    return version, version


def parse_types(text: str) -> dict[str, frozenset[str]]:
    """Parse a ``types`` cell such as ``"T = tensor(float), tensor(double) ; T1 = ..."``.

    Parameters
    ----------
    text : str
        The cell.

    Returns
    -------
    dict of str to frozenset of str
        Constraint name to the set of allowed types.
    """
    constraints: dict[str, frozenset[str]] = {}
    for part in text.split(";"):
        if "=" not in part:
            continue
        name, allowed = part.split("=", 1)
        constraints[name.strip()] = frozenset(t.strip() for t in allowed.split(",") if t.strip())
    return constraints


@functools.lru_cache(maxsize=1)
def cuda_kernel_table() -> dict[tuple[str, str], tuple[KernelRow, ...]]:
    """Load the bundled CUDA kernel table.

    Returns
    -------
    dict of (str, str) to tuple of KernelRow
        Rows grouped by ``(domain, op)``.
    """
    table: dict[tuple[str, str], list[KernelRow]] = {}
    text = KERNEL_TABLE.read_text(encoding="utf-8")
    for rec in csv.DictReader(text.splitlines(), delimiter="\t"):
        if rec["provider"] != "CUDAExecutionProvider":
            continue
        first, last = parse_since_version(rec["since_version"])
        row = KernelRow(rec["domain"], rec["op"], first, last, parse_types(rec["types"]))
        table.setdefault((row.domain, row.op), []).append(row)
    return {key: tuple(rows) for key, rows in table.items()}


def _normalise_domain(domain: str) -> str:
    """Map the empty default domain to ``"ai.onnx"``."""
    return DEFAULT_DOMAIN if domain in ("", DEFAULT_DOMAIN) else domain


@functools.lru_cache(maxsize=1)
def _ort_schemas() -> dict[tuple[str, str], tuple[tuple[int, str | None], ...]]:
    """ONNX Runtime's own op schemas (covers its contrib domains), if it exposes them.

    Returns
    -------
    dict of (str, str) to tuple of (int, str or None)
        ``(domain, op)`` to ``(since_version, first input's type string)`` per schema version;
        empty if onnxruntime is missing or does not expose its schemas.
    """
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as capi

        schemas = capi.get_all_operator_schema()
    except Exception:  # optional, private API
        return {}
    found: dict[tuple[str, str], list[tuple[int, str | None]]] = {}
    for schema in schemas:
        type_str = schema.inputs[0].typeStr if schema.inputs else None
        key = (_normalise_domain(schema.domain), schema.name)
        found.setdefault(key, []).append((int(schema.since_version), type_str))
    return {key: tuple(sorted(versions)) for key, versions in found.items()}


def resolve_op_version(domain: str, op: str, opset: int) -> tuple[int, str | None] | None:
    """Version an op resolves to at ``opset``, and its first input's type constraint name.

    Parameters
    ----------
    domain : str
        Op domain (``"ai.onnx"`` or ``""`` for the default one).
    op : str
        Op type.
    opset : int
        The graph's opset version for ``domain``.

    Returns
    -------
    tuple of (int, str or None) or None
        ``(since_version, type_str)`` of the newest schema not newer than ``opset``; ``None``
        when no schema is known (unknown op, or op introduced after ``opset``).
    """
    domain = _normalise_domain(domain)
    onnx_domain = "" if domain == DEFAULT_DOMAIN else domain
    try:
        schema = onnx.defs.get_schema(op, opset, onnx_domain)
    except onnx.defs.SchemaError:
        schema = None
    if schema is not None:
        type_str = schema.inputs[0].type_str if schema.inputs else None
        return schema.since_version, type_str
    candidates = [v for v in _ort_schemas().get((domain, op), ()) if v[0] <= opset]
    return max(candidates) if candidates else None


def _first_input_type(node: onnx.NodeProto, scope: _Scope) -> str | None:
    """ORT type string of the node's first input if it is a known floating-point tensor."""
    if not node.input or not node.input[0]:
        return None
    return _FLOAT_TYPES.get(scope.elem_types.get(node.input[0], 0))


def _check_node(node: onnx.NodeProto, scope: _Scope) -> str | None:
    """Return a problem description for one node, or ``None`` if a CUDA kernel serves it.

    Parameters
    ----------
    node : onnx.NodeProto
        The node.
    scope : _Scope
        Opsets and known element types where the node lives.

    Returns
    -------
    str or None
        ``"Op (domain, opset N): ..."`` or ``None``.
    """
    domain = _normalise_domain(node.domain)
    if (domain, node.op_type) in _NO_KERNEL_NEEDED:
        return None
    where = f"{node.op_type} ({domain}, opset {scope.opsets.get(domain, '?')})"
    if domain not in scope.opsets:
        return f"{where}: domain {domain!r} is not imported by the model"
    opset = scope.opsets[domain]
    rows = cuda_kernel_table().get((domain, node.op_type), ())
    if not rows:
        return f"{where}: no CUDA kernel"
    resolved = resolve_op_version(domain, node.op_type, opset)
    if resolved is None:
        # Unknown schema: fall back to the newest kernel row that starts at or before opset.
        starts = [row.first for row in rows if row.first <= opset]
        if not starts:
            return f"{where}: no CUDA kernel (op not defined at this opset)"
        resolved = (max(starts), None)
    version, type_str = resolved
    matching = [row for row in rows if row.covers(version)]
    if not matching:
        return f"{where}: no CUDA kernel for op version {version}"
    dtype = _first_input_type(node, scope)
    if dtype is None or type_str is None:
        return None
    constrained = [row for row in matching if type_str in row.types]
    if not constrained or any(dtype in row.types[type_str] for row in constrained):
        return None
    return f"{where}: no CUDA kernel for {dtype}"


def _graph_elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Element types of every value of ``graph`` whose type is recorded."""
    types: dict[str, int] = {}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for sparse in graph.sparse_initializer:
        types[sparse.values.name] = sparse.values.data_type
    return types


def _opsets(imports: Iterable[onnx.OperatorSetIdProto]) -> dict[str, int]:
    """Opset imports as ``{domain: version}`` with the default domain named ``"ai.onnx"``."""
    return {_normalise_domain(imp.domain): int(imp.version) for imp in imports}


def _walk(
    nodes: Iterable[onnx.NodeProto],
    scope: _Scope,
    functions: dict[tuple[str, str], onnx.FunctionProto],
    seen_functions: frozenset[tuple[str, str]] = frozenset(),
) -> Iterator[str]:
    """Yield problems for ``nodes``, descending into subgraphs and model-local functions.

    Parameters
    ----------
    nodes : iterable of onnx.NodeProto
        Nodes to check.
    scope : _Scope
        Opsets and element types in force.
    functions : dict
        Model-local functions by ``(domain, name)``; ONNX Runtime inlines their bodies.
    seen_functions : frozenset
        Functions being expanded, to stop recursion.
    """
    for node in nodes:
        key = (_normalise_domain(node.domain), node.op_type)
        if key in functions and key not in seen_functions:
            func = functions[key]
            inner = _Scope({**scope.opsets, **_opsets(func.opset_import)}, {})
            yield from _walk(func.node, inner, functions, seen_functions | {key})
            continue
        problem = _check_node(node, scope)
        if problem is not None:
            yield problem
        for graph in subgraphs(node):
            inner = _Scope(scope.opsets, {**scope.elem_types, **_graph_elem_types(graph)})
            yield from _walk(graph.node, inner, functions, seen_functions)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run ONNX shape inference; return the model unchanged if it fails."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort: types already recorded are still used
        return model


def missing_cuda_kernels(model: onnx.ModelProto) -> list[str]:
    """List the ops of a model that ONNX Runtime's CUDA provider has no kernel for.

    Parameters
    ----------
    model : onnx.ModelProto
        The model to check. Subgraphs (If/Loop/Scan) and model-local functions are checked too.

    Returns
    -------
    list of str
        One line per distinct problem, such as ``"Gelu (ai.onnx, opset 17): no CUDA kernel"``
        or ``"MatMul (ai.onnx, opset 17): no CUDA kernel for tensor(bfloat16)"``, in graph order;
        empty when every op has a CUDA kernel.

    Notes
    -----
    A node passes when a CUDA row exists for its ``(domain, op)`` whose version range contains
    the op version the node resolves to at the graph's opset, and, when the node's first input
    is a floating-point tensor of known type (after ONNX shape inference), that type is allowed
    by the row's constraint for the first input. Integer and boolean inputs are not type-checked:
    ONNX Runtime places such shape computations on the CPU deliberately. ``Constant`` nodes are
    skipped because ONNX Runtime folds them into initializers.
    """
    inferred = _infer(model)
    graph = inferred.graph
    scope = _Scope(_opsets(inferred.opset_import), _graph_elem_types(graph))
    functions = {(_normalise_domain(f.domain), f.name): f for f in inferred.functions}
    problems: list[str] = []
    for problem in _walk(graph.node, scope, functions):
        if problem not in problems:
            problems.append(problem)
    return problems
