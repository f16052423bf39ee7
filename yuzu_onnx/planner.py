"""Choosing the form of the converted graph: whole-sequence probes, tiles, or brute force.

For one model and region there are several exact ways to compute ISM:

- *whole*: probe tensors over every position (one pass; best when the mutated region spans the
  sequence and receptive fields are short: Basset, DeepSEA);
- *tiled*: tiles of ``T`` mutated positions, each computed only over the positions its mutants
  reach, ``c`` tiles per Loop iteration (deep receptive fields, sub-regions; bounded memory);
- *brute force*: every mutant through the original graph, in chunks inside one Loop (when
  nothing else is predicted faster, e.g. after an early attention block).

Each candidate is emitted and priced by the time model (:mod:`yuzu_onnx.timing`, calibrated
on ONNX Runtime kernel times) and by the memory estimate (:mod:`yuzu_onnx.memory`); the fastest
whose activations fit the budget wins. Tile widths are pruned by FLOPs first (the plan's
interval arithmetic, no emit), so a model tiles cheaply or not at all. The chunk size ``c`` is
the largest whose predicted activations fit the budget; a brute-force chunk is also cut to keep
its largest tensor in the cache (:data:`CHUNK_CACHE_BYTES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from .errors import UnsupportedModelError
from .memory import MemoryEstimate, estimate_memory, format_size
from .plan import Plan
from .timing import predict_seconds

#: Default budget of activations per sequence (bytes): the issue's 1 GiB.
DEFAULT_BUDGET = 2**30
#: A tile width is tried when its plan's FLOPs are below this fraction of the whole form's.
TILE_FLOP_GAIN = 0.85
#: Tile width (in quanta) measured fastest on the deep models since their Convs run in ONNX
#: Runtime's NCHWc layout (emit/conv_layout.py), which runs narrow windows as fast as wide ones
#: (one profiled run each, T = 2 / 8 / 32: bpnet-lite BPNet 3.01 / 2.30 / 2.57 s, ChromBPNet-like
#: 2.72 / 2.09 / 2.44 s; gReLU DilatedConvModel, A/B of 7: T = 8 / 16 / 32 0.99 / 1.02 / 1.22 s),
#: and how much slower the time model may predict it than the best tile width for it to be
#: taken anyway.
PREFERRED_QUANTA = 8
TILE_SLACK = 0.15
#: Tile widths tried, in units of the model's tile quantum (total stride).
WIDTH_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
#: Tile tensors a chunk holds at once at its peak, in units of its largest (the tensor, its
#: extended input, a reprobed copy, the op's scratch).
TILE_TENSORS_LIVE = 4
#: Below this FLOP reduction (naive / plan) an accelerated form cannot repay its extra passes
#: (reprobing, halos, materializing): brute force in chunks is chosen instead. Measured: an
#: attention model whose stem only is accelerated (1.1x fewer FLOPs) ran tiled at 0.8-1.0x of
#: naive ISM, brute force in chunks at 0.85-1.1x.
MIN_FLOP_GAIN = 1.5
#: ... but only for jobs whose brute force is predicted to take at least this long (seconds).
MIN_SECONDS_FOR_BRUTE_FORCE = 0.05
#: Mutants per call of brute-force ISM in the prediction (the oracle's default batch).
NAIVE_BATCH = 256
#: Bytes of a brute-force chunk's largest tensor that keep it in the last-level cache: a chunk
#: whose per-mutant intermediates spill it runs memory-bound (the attention model, whose scores
#: are 1 MB per mutant, at 2 / 4 / 22 / 143 tiles of 3 mutants per chunk: 0.375 / 0.41 / 0.55 /
#: 0.60 s against naive ISM's 0.63 s; at 1 tile per chunk 0.46 s, the Loop's own cost per
#: iteration showing). Chunks are cut to this size where it is smaller than the memory budget's.
CHUNK_CACHE_BYTES = 8 * 2**20


@dataclass
class Candidate:
    """One priced way of converting the model."""

    form: str  # "whole", "tiled" or "brute force"
    model: onnx.ModelProto
    plan: Plan
    memory: MemoryEstimate
    seconds: float
    tile_width: int | None = None
    per_chunk: int | None = None

    @property
    def activations(self) -> int:
        return self.memory.resident(1)

    def describe(self) -> str:
        shape = ""
        if self.form != "whole":
            groups = self.plan.tiling.groups if self.plan.tiling is not None else ()
            per_chunk = max((g.per_chunk for g in groups), default=self.per_chunk)
            shape = f" T={self.tile_width}, {per_chunk} tiles/chunk"
            if len(groups) > 1:
                shape += f", {len(groups)} groups"
        return f"{self.form}{shape}: predicted {self.seconds:.3g} s, {format_size(self.activations)} per sequence"


@dataclass
class Choice:
    """The chosen candidate and what it was chosen over (for the plan table)."""

    chosen: Candidate
    considered: list[Candidate] = field(default_factory=list)
    brute_force_seconds: float = 0.0
    budget: int = DEFAULT_BUDGET
    notes: list[str] = field(default_factory=list)


Build = Callable[..., tuple[onnx.ModelProto, Plan]]


def choose(build: Build, *, budget: int = DEFAULT_BUDGET, provider: str = "cpu", forced: str | None = None,
           tile_width: int | None = None, per_chunk: int | None = None) -> Choice:
    """Price the candidate forms and return the fastest that fits ``budget``.

    Parameters
    ----------
    build : callable
        ``build(tile_width=None, tiles_per_chunk=1, brute_force=False, emit_graph=True,
        one_group=False)`` runs the analysis (and the emit pass when ``emit_graph``) for one
        form and returns ``(model, plan)`` (``model`` None without emit); ``one_group``: the
        tiles in one group, whatever the groups asked for (to size chunks).
    budget : int
        Activations per sequence the chosen form may use (bytes).
    provider : str
        Whose time model prices the candidates (``cpu``; CUDA uses CPU's until calibrated).
    forced : {"whole", "tiled", "brute-force"}, optional
        Only consider this form (``tile_width``/``per_chunk`` fix the tiles).
    """
    model, plan = build(emit_graph=forced in (None, "whole"))
    brute = predict_seconds(plan.model, provider, batch=NAIVE_BATCH) * math.ceil(plan.requested_mutants / NAIVE_BATCH)
    considered: list[Candidate] = []
    if forced in (None, "whole"):
        considered.append(_priced("whole", model, plan, provider))
    if forced == "brute-force":
        considered.append(_tiled(build, tile_width or 1, budget, provider, brute_force=True, per_chunk=per_chunk,
                                 strict=True))
    elif forced == "tiled" and tile_width is not None:
        considered.append(_tiled(build, tile_width, budget, provider, per_chunk=per_chunk, strict=True))
    elif forced in (None, "tiled") and plan.sensing == "spike":
        whole_fits = bool(considered) and considered[0].activations <= budget
        for width in _widths_worth_trying(build, plan, whole_fits, strict=forced == "tiled"):
            tiled = _tiled(build, width, budget, provider, per_chunk=per_chunk)
            if tiled is not None:
                considered.append(tiled)
        if forced == "tiled" and not considered:
            from .analyze import Analysis
            from .tiling import plan_tiling, tile_quantum
            _tiled(build, tile_quantum(Analysis(plan)), budget, provider, strict=True)  # raises the reason
    choice = Choice(considered[0], considered, brute, budget)
    fitting = [c for c in considered if c.activations <= budget]
    best = min(fitting, key=lambda c: c.seconds) if fitting else min(considered, key=lambda c: c.activations)
    if best.form == "tiled" and tile_width is None:
        # the time model ranks close tile widths less well than it predicts times: among tiles
        # predicted within TILE_SLACK of the best, take the width nearest PREFERRED_QUANTA
        # quanta, measured fastest on bpnet-lite, gReLU dilated and ChromBPNet
        close = [c for c in fitting if c.form == "tiled" and c.seconds <= (1 + TILE_SLACK) * best.seconds]
        quantum = _quantum(best.plan)
        best = min(close, key=lambda c: _off_preferred(c.tile_width, quantum))
    if not fitting:
        choice.notes.append(f"no form fits the budget of {format_size(budget)} per sequence; using the one that "
                            f"needs least ({format_size(best.activations)})")
    totals = best.plan.totals()
    gain = totals["naive"] / max(totals["converted"], 1)
    if brute < MIN_SECONDS_FOR_BRUTE_FORCE:
        gain = float("inf")  # a toy job: keep the accelerated form (its rules are what is tested)
    if forced is None and (best.seconds > brute or gain < MIN_FLOP_GAIN):
        brute_form = _tiled(build, 1, budget, provider, brute_force=True)
        if brute_form is not None and (brute_form.activations <= budget or not fitting) \
                and (brute_form.seconds < best.seconds or gain < MIN_FLOP_GAIN):
            considered.append(brute_form)
            why = (f"the accelerated forms cut FLOPs by only {gain:.2f}x" if gain < MIN_FLOP_GAIN else
                   "the time model predicts every accelerated form slower than brute force")
            choice.notes.append(f"{why}: mutants are materialized at the input and run in chunks (brute force)")
            best = brute_form
    choice.chosen = best
    return choice


def _off_preferred(width: int, quantum: int) -> float:
    """How far (in doublings) a tile width lies from :data:`PREFERRED_QUANTA` quanta."""
    return abs(math.log2(width / (PREFERRED_QUANTA * quantum)))


def _quantum(plan: Plan) -> int:
    from .analyze import Analysis
    from .tiling import tile_quantum
    return tile_quantum(Analysis(plan))


def _priced(form: str, model: onnx.ModelProto, plan: Plan, provider: str, **shape) -> Candidate:
    memory = plan.memory if plan.memory is not None else estimate_memory(model)
    return Candidate(form, model, plan, memory, predict_seconds(model, provider), **shape)


def _widths_worth_trying(build: Build, plan: Plan, whole_fits: bool, strict: bool = False) -> list[int]:
    """Tile widths whose plans cost clearly fewer FLOPs than the whole form (any width when
    the whole form does not fit the memory budget, or tiles are asked for), best three by FLOPs."""
    from .analyze import Analysis
    from .tiling import tile_quantum
    quantum = tile_quantum(Analysis(plan))
    base = plan.totals()["converted"]
    scored = []
    for step in WIDTH_STEPS:
        width = quantum * step
        if width >= plan.region and step > 1:
            break
        try:
            _, tiled = build(tile_width=width, emit_graph=False)
        except UnsupportedModelError:  # not tileable: the forced form reports the reason
            return []
        flops = tiled.totals()["converted"]
        if flops < TILE_FLOP_GAIN * base or not whole_fits or strict:
            scored.append((flops, width))
    if not scored:
        return []
    # the fewest FLOPs, and wider tiles within 25% of them: fewer, larger batches may run faster
    best = min(scored)[0]
    near = sorted(width for flops, width in scored if flops <= 1.25 * best)
    preferred = min(near, key=lambda w: _off_preferred(w, quantum))
    return sorted({near[0], near[len(near) // 2], preferred, near[-1]})


def _largest_tile_tensor(plan: Plan) -> int:
    """Bytes of one tile's largest probe tensor (or per-mutant tensor of a brute-force plan)."""
    itemsize = np.dtype(plan.seq.dtype).itemsize
    largest = max((st.probes * math.prod(st.dims) for g in plan.tiling.groups for st in g.states.values()), default=0)
    per_mutant = max((math.prod(info.shape[1:]) for info in plan.infos.values()
                      if info.shape and len(info.shape) > 1 and None not in info.shape[1:]), default=0)
    if not any(np_.spec.probe_form for np_ in plan.nodes):
        largest = per_mutant * plan.subs * plan.tiling.width
    return largest * itemsize


def _grown(build: Build, model, plan: Plan, per_chunk: int, budget: int, width: int, cap: int | None = None):
    """One step up from a chunk that fits: the one-tile estimate it started from counts every
    tile tensor as live at once, so the chunk found can sit well under ``budget``. Memory grows
    at most in proportion to the chunk, so ``per_chunk * budget / resident`` tiles (evenly
    spread) is tried and kept if it fits. For brute force only, where fewer Loop iterations is
    faster (attention at 112/143 tiles per chunk: 1.16/1.09 s); not for probe tiles, whose
    larger chunks spill the cache (BPNet-9 at 4/6 tiles per chunk: 4.67/5.11 s). Never past
    ``cap`` tiles (:func:`_cache_cap`)."""
    tiles, resident = plan.tiling.tiles, plan.memory.resident(1)
    if per_chunk >= tiles or resident <= 0:
        return model, plan, per_chunk
    target = min(tiles, per_chunk * budget // resident, tiles if cap is None else cap)
    chunks = math.ceil(tiles / max(target, 1))
    bigger = math.ceil(tiles / chunks)
    if bigger <= per_chunk or chunks >= math.ceil(tiles / per_chunk):
        return model, plan, per_chunk
    model2, plan2 = build(tile_width=width, tiles_per_chunk=bigger, brute_force=True)
    if plan2.memory.resident(1) > budget:
        return model, plan, per_chunk
    return model2, plan2, bigger


def _tiled(build: Build, width: int, budget: int, provider: str, brute_force: bool = False,
           per_chunk: int | None = None, strict: bool = False) -> Candidate | None:
    """The tiled (or brute-force) candidate of ``width`` with ``per_chunk`` tiles per chunk, or
    the largest chunk that fits ``budget``; None when the model cannot be tiled (``strict``:
    raise the reason)."""
    form = "brute force" if brute_force else "tiled"
    # sizing the chunk needs one tile's memory, not the groups' (a Loop of one-tile iterations
    # per group: slow to estimate and no different per tile); the chosen chunk is then built
    # with its groups
    sizing = {} if brute_force or per_chunk is not None else {"one_group": True}
    try:
        one, plan1 = build(tile_width=width, tiles_per_chunk=per_chunk or 1, brute_force=brute_force, **sizing)
    except UnsupportedModelError:
        if strict:
            raise
        return None
    tiles = plan1.tiling.tiles
    if tiles == 1 or per_chunk is not None:
        return _priced(form, one, plan1, provider, tile_width=width, per_chunk=plan1.tiling.per_chunk)
    # chunk size from the one-tile graph: what it needs beyond its largest tile tensors is
    # shared by every tile count; then checked on the emitted graph and shrunk until it fits
    fixed = max(plan1.memory.resident(1) - TILE_TENSORS_LIVE * _largest_tile_tensor(plan1), 0)
    per_tile = max(plan1.memory.resident(1) - fixed, 1)
    per_chunk = max(1, min(tiles, (budget - fixed) // per_tile))
    cap = tiles
    if brute_force:  # its per-mutant intermediates stay in the cache (one build, not a cut afterwards)
        cap = _cache_cap(_largest_tile_tensor(plan1))
        per_chunk = _cache_sized(tiles, per_chunk, cap)
    model, plan = one, plan1
    while per_chunk > 1:
        chunks = math.ceil(tiles / per_chunk)
        per_chunk = math.ceil(tiles / chunks)  # equal chunks: the fewest, evenly filled
        model, plan = build(tile_width=width, tiles_per_chunk=per_chunk, brute_force=brute_force)
        resident = plan.memory.resident(1)
        if resident <= budget:
            break
        # fewer tiles in proportion (the arena's doubling regions make memory not quite linear
        # in the chunk: bpnet-lite T=32 at 2/3/4 tiles: 550/842/1083 MiB)
        per_chunk = max(1, min(per_chunk - 1, per_chunk * budget // resident))
        model, plan = one, plan1
    if plan is plan1 and sizing:  # one tile per chunk after all: with its groups
        model, plan = build(tile_width=width, tiles_per_chunk=1, brute_force=brute_force)
    if brute_force:
        model, plan, per_chunk = _grown(build, model, plan, per_chunk, budget, width, cap)
    return _priced(form, model, plan, provider, tile_width=width, per_chunk=per_chunk)


def _cache_cap(per_tile: int) -> int:
    """The most tiles per brute-force chunk whose largest tensor (``per_tile`` bytes per tile)
    fits :data:`CHUNK_CACHE_BYTES`; at least one."""
    return max(1, CHUNK_CACHE_BYTES // max(per_tile, 1))


def _cache_sized(tiles: int, per_chunk: int, cap: int) -> int:
    """``per_chunk`` tiles per chunk, or where that is over ``cap`` (:func:`_cache_cap`) the
    fewest equal chunks of at most ``cap`` tiles."""
    return per_chunk if per_chunk <= cap else math.ceil(tiles / math.ceil(tiles / cap))
