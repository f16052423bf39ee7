"""The converter: load -> canonicalize -> analyze -> emit -> check, with the form of the graph
(whole-sequence probes, tiles, brute force) chosen by :mod:`yuzu_onnx.planner`."""

from __future__ import annotations

from typing import Sequence

import onnx

from .analyze import Plan, analyze, warn_fallbacks
from .canonicalize import canonicalize
from .emit import emit
from .errors import InternalError
from .load import ModelLike, find_sequence_input, load_model
from .memory import METADATA_KEY as MEMORY_METADATA_KEY
from .memory import estimate_memory, parse_size
from .planner import DEFAULT_BUDGET, choose
from .sensing import DEFAULT_TOLERANCE

SENSING = ("structured", "gaussian")
SUBSTITUTIONS = ("alt", "all")
FORMS = ("auto", "whole", "tiled", "brute-force")
DEFAULT_ALPHA = 1.5


def _check_options(sensing: str, substitutions: str, alpha: float, tolerance: float) -> None:
    if sensing not in SENSING:
        raise ValueError(f"sensing must be one of {SENSING}, got {sensing!r}")
    if substitutions not in SUBSTITUTIONS:
        raise ValueError(f"substitutions must be one of {SUBSTITUTIONS}, got {substitutions!r}")
    if not alpha >= 1.0:
        raise ValueError(f"alpha must be >= 1 (probes per unknown), got {alpha}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")


def _prepare(model: ModelLike, start: int, end: int | None, input_name: str | None, layout: str | None,
             outputs: Sequence[str] | None, length: int | None):
    """Load and canonicalize once; returns the canonical model, its tensor infos, the sequence
    input and the region's end."""
    proto = load_model(model)
    seq = find_sequence_input(proto, input_name, layout, length)
    end = seq.length if end is None else end
    if not 0 <= start < end <= seq.length:
        raise ValueError(f"region start={start}, end={end} is not inside the sequence of length {seq.length} "
                         "(need 0 <= start < end <= length)")
    canonical, infos = canonicalize(proto, seq, outputs)
    return canonical, infos, seq, end


def plan_conversion(model: ModelLike, *, start: int = 0, end: int | None = None,
                    sensing: str = "structured", alpha: float = DEFAULT_ALPHA, seed: int = 0,
                    substitutions: str = "alt", input_name: str | None = None,
                    layout: str | None = None, outputs: Sequence[str] | None = None,
                    length: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
                    tile_width: int | None = None, tiles_per_chunk: int = 1, tile_groups: int | None = None,
                    trim: bool = True) -> Plan:
    """Run the load, canonicalize and analyze passes (whole-sequence form, or the tiled one with
    ``tile_width``); see :func:`convert` for parameters. ``trim=False`` keeps positions whose
    mutations reach no output in the plan (:mod:`yuzu_onnx.trim`)."""
    _check_options(sensing, substitutions, alpha, tolerance)
    canonical, infos, seq, end = _prepare(model, start, end, input_name, layout, outputs, length)
    return analyze(canonical, infos, seq, start=start, end=end, substitutions=substitutions,
                   sensing="spike" if sensing == "structured" else "gaussian", alpha=alpha, seed=seed,
                   tolerance=tolerance, tile_width=tile_width, tiles_per_chunk=tiles_per_chunk,
                   tile_groups=tile_groups, trim=trim)


def convert(model: ModelLike, *, start: int = 0, end: int | None = None,
            sensing: str = "structured", alpha: float = DEFAULT_ALPHA, seed: int = 0,
            substitutions: str = "alt", input_name: str | None = None,
            layout: str | None = None, outputs: Sequence[str] | None = None,
            length: int | None = None, tolerance: float = DEFAULT_TOLERANCE, form: str = "auto",
            max_memory: int | str | None = None, provider: str = "cpu", tile_width: int | None = None,
            tiles_per_chunk: int | None = None, tile_groups: int | None = None, return_plan: bool = False):
    """Convert a sequence model into one ONNX graph that computes exact ISM.

    Parameters
    ----------
    model : str, os.PathLike or onnx.ModelProto
        The original model.
    start, end : int
        Mutated region ``start..end-1`` (default: the whole sequence).
    sensing : {"structured", "gaussian"}
        ``structured`` (default): spike probes, exact. ``gaussian``: the paper's Gaussian probes
        (circulant), ``P = ceil(alpha * K)``, decoded by least squares; approximate in float32.
    alpha : float
        Probes per unknown for ``gaussian`` sensing (at least; see ``tolerance``).
    tolerance : float
        ``gaussian`` sensing: bound on each conv's predicted float32 decoding error relative to
        its deltas (condition number of the decoder x rounding; the plan table shows both).
        Convs whose prediction exceeds it get more probes; if 1.25^5 times more do not
        suffice, the conversion is refused. Default 1e-4.
    seed : int
        Seed of the Gaussian designs (same seed, same bytes).
    substitutions : {"alt", "all"}
        ``alt``: the A-1 substitutions of each position's reference character (one-hot inputs
        only). ``all``: every character at every position (any input, e.g. N columns).
    input_name, layout : str, optional
        Override the detected sequence input and its layout (``"NCL"`` or ``"NLC"``).
        Other inputs pass through unchanged (fed as in the original model).
    outputs : sequence of str, optional
        Convert only these outputs; branches only the others need are pruned.
    length : int, optional
        Sequence length, for a model whose input length is symbolic or unknown (exported with a
        dynamic length): the converted graph takes sequences of exactly this length. Refused
        when the model fixes a different length.
    form : {"auto", "whole", "tiled", "brute-force"}
        How the graph computes ISM (:mod:`yuzu_onnx.planner`): ``whole``: probes over the
        whole sequence in one pass; ``tiled``: tiles of ``tile_width`` mutated positions, each
        computed only where its mutants reach, ``tiles_per_chunk`` per Loop iteration;
        ``brute-force``: every mutant through the original graph, in chunks. ``auto``
        (default) prices the candidates with the calibrated time model and takes the fastest
        whose activations fit ``max_memory``. Every form is exact.
    max_memory : int or str, optional
        Activations per sequence the graph may use: bytes or a size such as ``"1G"`` (default
        1 GiB). ``auto`` and ``tiled`` size their chunks to it.
    provider : {"cpu", "cuda"}
        Whose time model ranks the forms (CUDA uses the CPU model until calibrated on a GPU).
    tile_width, tiles_per_chunk : int, optional
        Fix the tiles (``form="tiled"`` is implied); ``tiles_per_chunk`` defaults to the most
        that fit ``max_memory``.
    tile_groups : int, optional
        Tiled plans: split the tiles into this many groups of consecutive tiles (one Loop each),
        each computing only window positions that lie inside the sequence for some tile of the
        group (:func:`yuzu_onnx.tiling.plan_tiling`). Default: 16 groups where that cuts the
        plan's FLOPs by 3% or more (32 where that cuts them by another 3%), else one.
    return_plan : bool
        Also return the :class:`~yuzu_onnx.analyze.Plan` (for the plan table).

    Returns
    -------
    onnx.ModelProto or (onnx.ModelProto, Plan)
        The converted model. For each original output ``y`` it returns ``y`` and ``y_ism``
        of shape ``(N, A, end - start, *y.shape[1:])``; ``y_ism[n, a, i]`` is the output for
        sequence ``n`` with position ``start + i`` set to character ``a``.
    """
    _check_options(sensing, substitutions, alpha, tolerance)
    if tile_groups is not None and tile_groups < 1:
        raise ValueError(f"tile_groups must be at least 1, got {tile_groups}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    budget = DEFAULT_BUDGET if max_memory is None else (parse_size(max_memory) if isinstance(max_memory, str)
                                                         else int(max_memory))
    canonical, infos, seq, end = _prepare(model, start, end, input_name, layout, outputs, length)
    sensing_mode = "spike" if sensing == "structured" else "gaussian"

    def build(tile_width: int | None = None, tiles_per_chunk: int = 1, brute_force: bool = False,
              emit_graph: bool = True, one_group: bool = False) -> tuple[onnx.ModelProto | None, Plan]:
        groups = 1 if one_group else tile_groups
        plan = analyze(canonical, infos, seq, start=start, end=end, substitutions=substitutions,
                       sensing=sensing_mode, alpha=alpha, seed=seed, tolerance=tolerance, tile_width=tile_width,
                       tiles_per_chunk=tiles_per_chunk, tile_groups=groups, brute_force=brute_force,
                       warn=False)
        if not emit_graph:
            return None, plan
        converted = emit(plan)
        plan.memory = estimate_memory(converted)
        return converted, plan

    if form == "brute-force":
        choice = choose(build, budget=budget, provider=provider, forced=form, tile_width=tile_width,
                        per_chunk=tiles_per_chunk)
    elif tile_width is not None or form == "tiled":
        choice = choose(build, budget=budget, provider=provider, forced="tiled", tile_width=tile_width,
                        per_chunk=tiles_per_chunk)
    elif form == "auto":
        choice = choose(build, budget=budget, provider=provider)
    else:
        choice = choose(build, budget=budget, provider=provider, forced=form)
    converted, plan = choice.chosen.model, choice.chosen.plan
    plan.choice = choice
    # the rules' fallbacks, also when brute force was chosen (they are why it was)
    warn_fallbacks(next((c.plan for c in choice.considered if c.form != "brute force"), plan), stacklevel=2)
    # stored so that ISMSession sizes batches without re-deriving shapes
    converted.metadata_props.add(key=MEMORY_METADATA_KEY, value=plan.memory.to_json())
    try:
        onnx.checker.check_model(converted)
    except Exception as exc:  # a bug in a rule, never the user's fault
        raise InternalError(f"the converted graph fails the ONNX checker: {exc}") from exc
    _check_loads(converted)
    return (converted, plan) if return_plan else converted


def _check_loads(converted: onnx.ModelProto) -> None:
    """Never hand out a graph ONNX Runtime cannot load (its type and shape inference is stricter
    than onnx's, inside Loop bodies above all): a session on the CPU provider, unoptimized
    (0.01-0.14 s on the committed models)."""
    import onnxruntime as ort

    if converted.ByteSize() > 2**31 - 2**26:
        return  # written with external data; ONNX Runtime checks it when the file is loaded
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a bug in a rule: the emitted graph must always load
        raise InternalError(f"ONNX Runtime cannot load the converted graph: {exc}") from exc
