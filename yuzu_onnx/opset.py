"""Opset range: refuse models newer than this onnx/onnxruntime pair, upgrade older ones.

The emitter writes ops in their opset-13 form (``Unsqueeze`` and ``ReduceSum`` take their axes
as an input) into the model's own opset, so a model below :data:`MIN_OPSET` is first upgraded
with the ONNX version converter. A model above what both onnx and onnxruntime know could be
neither checked nor run, so it is refused with the supported range.
"""

from __future__ import annotations

import functools
import logging

import onnx
from onnx import helper, version_converter

from .errors import UnsupportedModelError

log = logging.getLogger(__name__)

#: Lowest default-domain opset the emitted nodes are valid in (axes as inputs: opset 13).
MIN_OPSET = 13

_DEFAULT_DOMAINS = ("", "ai.onnx")


def model_opset(model: onnx.ModelProto) -> int | None:
    """The model's default-domain (``ai.onnx``) opset version, ``None`` if it imports none."""
    return next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)


#: How many opsets past the installed onnx's newest :func:`onnxruntime_max_opset` probes: an
#: onnxruntime release can know opsets that the installed onnx does not know yet.
PROBE_AHEAD = 8


def probe_ir_version(opset: int) -> int:
    """An IR version for a default-domain ``opset`` model: the lowest one onnx allows for it, or
    for opsets newer than the installed onnx knows, the lowest one for the newest it knows."""
    known = min(opset, onnx.defs.onnx_opset_version())
    return helper.find_min_ir_version_for([helper.make_opsetid("", known)])


def _onnxruntime_loads(version: int) -> bool:
    """Whether the installed onnxruntime loads a one-node model of default-domain opset ``version``."""
    import onnxruntime as ort

    opset = helper.make_opsetid("", version)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "opset_probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, opset_imports=[opset])
    probe.ir_version = probe_ir_version(version)
    try:
        ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # "opset N is under development / not supported"
        return False
    return True


@functools.lru_cache(maxsize=None)
def onnxruntime_max_opset() -> int:
    """Newest default-domain opset the installed onnxruntime loads, probed once with a tiny model
    (onnxruntime does not publish the number).

    Probing starts at the installed onnx's newest opset: down from there when onnxruntime is
    older, up (at most :data:`PROBE_AHEAD` opsets) when it loads that one, since onnxruntime may
    be newer than onnx.
    """
    newest_known = onnx.defs.onnx_opset_version()
    if _onnxruntime_loads(newest_known):
        version = newest_known
        while version < newest_known + PROBE_AHEAD and _onnxruntime_loads(version + 1):
            version += 1
        return version
    return next((v for v in range(newest_known - 1, MIN_OPSET - 1, -1) if _onnxruntime_loads(v)), MIN_OPSET)


def max_opset() -> int:
    """Newest default-domain opset both onnx (checker, shape inference) and onnxruntime know."""
    return min(onnx.defs.onnx_opset_version(), onnxruntime_max_opset())


def supported_range() -> str:
    """The supported opsets in words, e.g. ``"13 to 26"``."""
    return f"{MIN_OPSET} to {max_opset()}"


def ensure_supported_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` at a default-domain opset the converter supports.

    Parameters
    ----------
    model : onnx.ModelProto
        A checked model; it is not modified.

    Returns
    -------
    onnx.ModelProto
        ``model`` itself when its opset is in range (or it imports no default domain), else
        a copy upgraded to :data:`MIN_OPSET` with ``onnx.version_converter``.

    Raises
    ------
    UnsupportedModelError
        When the opset is newer than :func:`max_opset`, or older than :data:`MIN_OPSET` and
        the version converter cannot upgrade it. The message names the opset found and the
        supported range.
    """
    found = model_opset(model)
    if found is None or MIN_OPSET <= found <= max_opset():
        return model
    if found > max_opset():
        raise UnsupportedModelError(
            f"the model uses ONNX opset {found}, newer than this installation supports (opsets "
            f"{supported_range()}: onnx {onnx.__version__} knows up to {onnx.defs.onnx_opset_version()}, "
            f"onnxruntime up to {onnxruntime_max_opset()}); re-export the model with an opset in that "
            "range or upgrade onnx and onnxruntime")
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # the converter raises RuntimeError, ValidationError, ... per op
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UnsupportedModelError(
            f"the model uses ONNX opset {found}, older than the supported opsets {supported_range()}, "
            f"and the ONNX version converter could not upgrade it to opset {MIN_OPSET} ({reason}); "
            f"re-export the model with opset >= {MIN_OPSET}") from exc
    log.info("upgraded the model from opset %d to opset %d", found, MIN_OPSET)
    return upgraded
