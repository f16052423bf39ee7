"""Benchmark exact ISM: naive ISM in ONNX Runtime against the converted yuzu-onnx graph.

For each model the script converts the ONNX file (timed), creates one ONNX Runtime session for
the original model (naive ISM, :func:`yuzu_onnx.oracle.naive_ism`) and one for the converted
model, with the same provider and session options, warms both up, and times ``--repeats`` runs
of each, round-robin (naive, converted, naive, ...) so that a machine whose load drifts slows
both alike. Medians are reported next to every individual run.

Naive ISM is timed on ``--naive-seqs`` sequences only and scaled linearly to the batch ``B``
(it is already batched over mutants, so its time is linear in sequences); the report says which
naive figures are measured and which are scaled. The converted graph runs all ``B`` sequences
in one call; on the CPU provider ``B`` is lowered (halved) up front when a calibration of the
peak memory per sequence says it would not fit, and on any allocation failure (the address
space is capped while the converted model runs, so that an oversized batch fails to allocate
instead of being killed by the OOM killer).

Examples
--------
Batch 1 on all four reference models (exported to ``models/generated/`` when missing)::

    python tools/benchmark.py --batches 1 --repeats 3

Batch 64 (or the largest that fits), naive measured on one sequence, with a profile::

    python tools/benchmark.py --models basset --batches 64 --naive-seqs 1 --profile

Any ONNX file, on the GPU::

    python tools/benchmark.py --model-file my_model.onnx --provider cuda --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from yuzu_onnx.providers import EXACT_CUDA_OPTIONS  # noqa: E402
from yuzu_onnx.convert import convert
from yuzu_onnx.load import find_sequence_input
from yuzu_onnx.oracle import naive_ism

if TYPE_CHECKING:
    from yuzu_onnx.analyze import Plan

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "models" / "generated"
DEFAULT_MODELS = ("basset", "deepsea", "factorized_basset", "bpnet")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# DESIGN targets: wall-clock speedup over naive ISM, CPU provider, batch 1, L = 1000.
TARGETS = {"basset": 12.0, "factorized_basset": 24.0, "deepsea": 7.0, "bpnet": 17.0}

# Mutants per naive ONNX Runtime call. Measured on Basset L=1000, CPU provider, 2 cores, one
# sequence (3000 mutants), quiet round: 32 -> 10.9 s, 64 -> 10.1 s, 128 -> 10.8 s, 256 -> 11.7 s.
# The differences are within the noise of a shared machine (a second round under load was
# inconclusive: 14.7-24 s for every size); 64 was fastest.
NAIVE_BATCH = 64

MEMORY_FRACTION = 0.8  # share of MemAvailable the converted run may use
# Margin on the memory per sequence calibrated at B=1,2: the CPU arena grows by powers of two and
# the memory pattern of later runs may need a second block (see warm_up_fitting).
MEMORY_SAFETY = 1.5
PROTOBUF_LIMIT = 2**31 - 2**26  # larger converted models go through a file with external data
# cuDNN answers NOT_SUPPORTED for tensors over 2^31 elements: too large a B, like an OOM
OOM_MARKERS = ("allocate", "out of memory", "bad_alloc", "bad allocation", "oom", "cudnn_status_not_supported")
TOP_NODES = 15


# --------------------------------------------------------------------------- records
@dataclass
class Machine:
    """Where the numbers were measured, and which converter measured them."""

    cpu: str
    cores: int
    threads: int | None  # intra_op_num_threads (None: ONNX Runtime's default)
    onnxruntime: str
    provider: str
    gpu: str | None
    python: str
    platform: str
    code: str  # git commit (+dirty) and a hash of yuzu_onnx/ sources, to compare runs


@dataclass
class BatchResult:
    """Raw timings (seconds) of one model at one batch size."""

    batch_requested: int
    batch: int  # B actually run by the converted model
    naive_seqs: int  # sequences the naive runs covered
    naive_runs: list[float]  # each run: naive ISM of ``naive_seqs`` sequences
    converted_runs: list[float]  # each run: the converted model on ``batch`` sequences
    max_abs_diff: float | None = None  # converted vs naive y_ism on the naive sequences
    peak_rss_gib: float | None = None  # this process's peak RSS during the converted runs (CPU)
    load_avg: tuple[float, float, float] | None = None  # after the runs

    @property
    def naive_per_seq(self) -> float:
        """Median naive seconds per sequence (measured)."""
        return statistics.median(self.naive_runs) / self.naive_seqs

    @property
    def converted_per_seq(self) -> float:
        """Median converted seconds per sequence at ``batch``."""
        return statistics.median(self.converted_runs) / self.batch

    @property
    def naive_scaled(self) -> bool:
        """Whether the naive time for ``batch`` sequences is extrapolated."""
        return self.naive_seqs != self.batch

    @property
    def speedup(self) -> float:
        """Naive over converted time per sequence (medians)."""
        return self.naive_per_seq / self.converted_per_seq

    @property
    def speedup_best(self) -> float:
        """The same from the fastest runs, which a busy machine disturbs least."""
        return (min(self.naive_runs) / self.naive_seqs) / (min(self.converted_runs) / self.batch)


@dataclass
class ModelResult:
    """Everything measured for one model."""

    name: str
    file: str
    length: int
    mutants: int
    flops: dict[str, int]  # per sequence: naive, converted, floor
    convert_s: float
    conversion_warnings: list[str]
    batches: list[BatchResult] = field(default_factory=list)
    memory_per_seq_mib: float | None = None  # calibrated at B=1,2 (CPU, when some B > 1)
    code: str = ""  # Machine.code of the run (rows of several --from-json files may differ)
    profile: dict | None = None

    @property
    def target(self) -> float | None:
        """The DESIGN speedup target (CPU, batch 1), if the model has one."""
        return TARGETS.get(self.name)


# --------------------------------------------------------------------------- models
def export_model(name: str, length: int, path: Path) -> None:
    """Export a reference model with ``tools/export_models.py`` (TorchScript, width 1, seed 0).

    Raises
    ------
    SystemExit
        If PyTorch (needed only for the export) is not installed.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit(f"{path.relative_to(ROOT)} is missing and exporting it needs PyTorch: "
                         "run `pip install -e .[export]` (or pass --model-file)") from None
    spec = importlib.util.spec_from_file_location("yuzu_export_models", ROOT / "tools" / "export_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if name not in module.zoo.MODELS:
        raise SystemExit(f"unknown model {name!r}; choose from {sorted(module.zoo.MODELS)} or pass --model-file")
    print(f"exporting {name} at L={length} to {path.relative_to(ROOT)} ...", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module.export(name, length, path, width=1.0, seed=0, exporter="torchscript")


def model_path(name: str, length: int) -> Path:
    """``models/generated/{name}_L{length}.onnx``, exported first if missing."""
    path = GENERATED / f"{name}_L{length}.onnx"
    if not path.is_file():
        export_model(name, length, path)
    return path


def session_source(model: onnx.ModelProto, stem: str) -> str | bytes:
    """Serialized bytes, or a file with external data when the model is over the protobuf limit."""
    if model.ByteSize() < PROTOBUF_LIMIT:
        return model.SerializeToString()
    path = GENERATED / f"{stem}.ism.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data")
    return str(path)


def random_one_hot(n: int, plan: Plan, seed: int = 0) -> np.ndarray:
    """``n`` random one-hot sequences in the model's input layout, float32."""
    seq = plan.seq
    idx = np.random.default_rng(seed).integers(0, seq.alphabet, (n, seq.length))
    X = np.eye(seq.alphabet, dtype=np.float32)[idx]  # (n, L, A)
    return np.ascontiguousarray(X.transpose(0, 2, 1) if seq.layout == "NCL" else X)


# --------------------------------------------------------------------------- sessions
def session_options(threads: int | None, profile_prefix: str | None = None) -> ort.SessionOptions:
    """The one set of options every timed session uses (plus profiling when asked)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def provider_list(provider: str) -> list:
    """ONNX Runtime providers for ``--provider``."""
    if provider == "cuda":
        # naive and converted both in full float32, bounded cuDNN workspace (yuzu_onnx/providers.py);
        # exhaustive algorithm search (ORT's default, done in the warm-up): HEURISTIC ignored the
        # workspace bound and asked for 90-680 GB on the H100
        return [("CUDAExecutionProvider", dict(EXACT_CUDA_OPTIONS)),
                "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(source: str | bytes, provider: str, threads: int | None,
                 profile_prefix: str | None = None) -> ort.InferenceSession:
    """Create a session and check that the requested provider really runs it.

    Raises
    ------
    SystemExit
        If CUDA was requested but ONNX Runtime fell back to another provider.
    """
    session = ort.InferenceSession(source, session_options(threads, profile_prefix),
                                   providers=provider_list(provider))
    got = session.get_providers()[0]
    if got != PROVIDERS[provider]:
        raise SystemExit(f"asked for {PROVIDERS[provider]} but ONNX Runtime runs on {got} (available: "
                         f"{ort.get_available_providers()}); check the CUDA/cuDNN install and that "
                         "onnxruntime-gpu (not onnxruntime) is installed")
    return session


# --------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    """First GPU's name and memory from nvidia-smi, if there is one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def code_version() -> str:
    """``<commit>[+dirty] src:<sha256 of yuzu_onnx/**/*.py, 12 hex>``."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "yuzu_onnx").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "yuzu_onnx"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        commit, dirty = "unknown", ""
    return f"{commit}{'+dirty' if dirty else ''} src:{digest.hexdigest()[:12]}"


def machine_info(provider: str, threads: int | None) -> Machine:
    """Describe the machine and the software measured."""
    return Machine(cpu=cpu_model(), cores=os.cpu_count() or 0, threads=threads,
                   onnxruntime=ort.__version__, provider=PROVIDERS[provider],
                   gpu=gpu_name() if provider == "cuda" else None,
                   python=platform.python_version(), platform=platform.platform(), code=code_version())


# --------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int:
    """A ``/proc/self/status`` field in KiB (e.g. ``VmHWM``, the peak RSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def mem_available() -> int:
    """Bytes the kernel says are available (MemAvailable)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_of(fn: Callable[[], object]) -> int:
    """Growth of this process's peak RSS (bytes) while ``fn`` runs."""
    reset_peak_rss()
    before = _status_kib("VmHWM")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


@contextlib.contextmanager
def memory_guard(enabled: bool = True) -> Iterator[None]:
    """Cap this process's address space so that an oversized batch fails to allocate.

    ONNX Runtime's CPU arena grows by powers of two, so peak memory is hard to predict; without
    a cap an oversized batch gets the process killed by the kernel's OOM killer. Inside the
    block, growth of the address space is limited to ``MEMORY_FRACTION`` of MemAvailable, less
    the mapped but not resident memory (which could become resident); ONNX Runtime then raises
    an allocation error instead. Not for CUDA, whose driver reserves huge address ranges.
    """
    if not enabled:
        yield
        return
    try:
        size, rss = _status_kib("VmSize") * 1024, _status_kib("VmRSS") * 1024
        growth = max(0, int(MEMORY_FRACTION * mem_available()) - (size - rss))
        old = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (size + growth, old[1]))
    except (OSError, KeyError, ValueError):
        yield  # no /proc or no permission: run unguarded
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def is_oom(exc: Exception) -> bool:
    """Whether an ONNX Runtime error is an allocation failure."""
    text = str(exc).lower()
    return any(marker in text for marker in OOM_MARKERS)


def memory_per_sequence(run: Callable[[int], object]) -> int | None:
    """Calibrate the converted model's peak memory per sequence from runs at B = 1 and B = 2.

    Returns
    -------
    int or None
        Bytes per additional sequence, or None where the peak RSS cannot be measured.
    """
    try:
        one = peak_rss_of(lambda: run(1))
        two = peak_rss_of(lambda: run(2))
    except (OSError, KeyError):
        return None
    # B=1 grows the peak by about one sequence (plus one-off allocations), B=2 by one more
    # (B=1's arena is reused); the larger of the two is the conservative slope.
    return max(one, two, 1)


def fit_batch(batch: int, per_seq: int | None) -> int:
    """Halve ``batch`` until its estimated memory fits in ``MEMORY_FRACTION`` of MemAvailable."""
    if per_seq is None:
        return batch
    budget = MEMORY_FRACTION * mem_available()
    while batch > 1 and batch * per_seq * MEMORY_SAFETY > budget:
        batch //= 2
    return batch


# --------------------------------------------------------------------------- timing
def time_runs(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def fmt_runs(runs: Sequence[float]) -> str:
    """``median X s (runs: a, b, c)``."""
    return f"median {statistics.median(runs):.3f} s (runs: {', '.join(f'{r:.3f}' for r in runs)})"


def static_batch(session: ort.InferenceSession) -> int | None:
    """The batch size baked into the session's first input, or None when it is dynamic."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def warm_up_naive(session: ort.InferenceSession, X: np.ndarray, naive_batch: int) -> None:
    """One call of the original model on a full naive mutant batch (or its static batch)."""
    name = session.get_inputs()[0].name
    session.run(None, {name: np.repeat(X[:1], static_batch(session) or naive_batch, axis=0)})


def ism_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """Original output name -> its ISM output name, from the converted model's metadata."""
    props = {p.key: p.value for p in model.metadata_props}
    if "yuzu_onnx.outputs" in props:
        return json.loads(props["yuzu_onnx.outputs"])
    names = {o.name for o in model.graph.output}
    return {n: f"{n}_ism" for n in names if f"{n}_ism" in names}


def max_abs_diff(naive: list[tuple[np.ndarray, np.ndarray]], naive_names: list[str],
                 converted: list[np.ndarray], converted_names: list[str],
                 pairs: dict[str, str]) -> float | None:
    """Largest |converted y_ism - naive y_hat| over the sequences both computed."""
    diffs = []
    for (_, y_hat), name in zip(naive, naive_names):
        if pairs.get(name) in converted_names:
            got = converted[converted_names.index(pairs[name])][:len(y_hat)]
            diffs.append(float(np.abs(got - y_hat).max()))
    return max(diffs) if diffs else None


class ConvertedRunner:
    """Runs the converted session on the first ``b`` of a fixed set of sequences."""

    def __init__(self, session: ort.InferenceSession, input_name: str, X: np.ndarray):
        self.session = session
        self.input_name = input_name
        self.X = X
        self.last: list[np.ndarray] = []

    def __call__(self, b: int) -> list[np.ndarray]:
        self.last = []  # free the previous outputs first
        self.last = self.session.run(None, {self.input_name: self.X[:b]})
        return self.last


def warm_up_fitting(runner: ConvertedRunner, batch: int) -> int:
    """Warm up at ``batch``, halving it on allocation failures; return the B that ran.

    B = 1 is warmed up once. A larger B is warmed up twice, because its memory only reaches the
    steady state on the second run: from then on ONNX Runtime allocates one planned block for
    the whole memory pattern, which the arena may have to add next to the first run's blocks.
    """
    while True:
        try:
            for _ in range(1 if batch == 1 else 2):
                runner(batch)
            return batch
        except Exception as exc:  # ONNX Runtime raises several unrelated types
            if not is_oom(exc) or batch == 1:
                raise
            runner.last = []
            print(f"  B={batch} does not fit ({str(exc).splitlines()[0][:120]}); trying B={batch // 2}",
                  flush=True)
            batch //= 2


# --------------------------------------------------------------------------- profiling
def profile_converted(source: str | bytes, provider: str, threads: int | None,
                      feed: dict[str, np.ndarray]) -> dict:
    """Profile one run of the converted model (after a warm-up run) by op type and node.

    Returns
    -------
    dict
        ``total_us`` (sum of node kernel times), ``by_op`` (op type -> {us, nodes}, largest
        first), ``top_nodes`` (the ``TOP_NODES`` slowest nodes with op, us and output shapes).
    """
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(source, provider, threads, profile_prefix=os.path.join(tmp, "ism"))
        session.run(None, feed)  # warm-up, excluded below
        session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    start = runs[-1]["ts"] if runs else 0
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
             and e["ts"] >= start]
    by_op: dict[str, dict] = defaultdict(lambda: {"us": 0, "nodes": 0})
    for e in nodes:
        op = e.get("args", {}).get("op_name", "?")
        by_op[op]["us"] += e["dur"]
        by_op[op]["nodes"] += 1
    top = sorted(nodes, key=lambda e: -e["dur"])[:TOP_NODES]
    return {
        "model_run_us": runs[-1]["dur"] if runs else None,
        "total_us": sum(e["dur"] for e in nodes),
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1]["us"])),
        "top_nodes": [{"node": e["name"][:-len("_kernel_time")], "op": e["args"].get("op_name"),
                       "us": e["dur"], "output_shapes": _shapes(e["args"].get("output_type_shape", []))}
                      for e in top],
    }


def _shapes(type_shapes: list[dict]) -> list[list[int]]:
    """``[{"float": [1, 2]}, ...]`` (ORT's profile format) -> ``[[1, 2], ...]``."""
    return [shape for entry in type_shapes for shape in entry.values()]


def print_profile(name: str, profile: dict, batch: int) -> None:
    """Per-op-type breakdown and the slowest nodes."""
    total = profile["total_us"] or 1
    print(f"\nprofile of converted {name} (B={batch}): kernel time {total / 1e6:.3f} s, "
          f"model_run {(profile['model_run_us'] or 0) / 1e6:.3f} s")
    print(f"  {'op type':<22}{'nodes':>6}{'seconds':>10}{'share':>8}")
    for op, row in profile["by_op"].items():
        print(f"  {op:<22}{row['nodes']:>6}{row['us'] / 1e6:>10.4f}{row['us'] / total:>8.1%}")
    print(f"  top {len(profile['top_nodes'])} nodes:")
    for row in profile["top_nodes"]:
        print(f"  {row['us'] / 1e6:>8.4f} s {row['us'] / total:>6.1%}  {row['op']:<20} {row['node'][:48]:<50}"
              f"{row['output_shapes']}")


# --------------------------------------------------------------------------- one model
def convert_timed(path: Path, start: int = 0, end: int | None = None) -> tuple[onnx.ModelProto, Plan, float, list[str]]:
    """Convert ``path`` (mutating ``start..end-1``); return the model, plan, seconds and warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        model, plan = convert(str(path), start=start, end=end, return_plan=True)
        seconds = time.perf_counter() - t0
    return model, plan, seconds, [str(w.message) for w in caught]


def print_plan(name: str, plan: Plan, seconds: float) -> None:
    """One line: mutants, conversion time and the plan's FLOPs per sequence."""
    flops = plan.totals()
    print(f"{name}: L={plan.seq.length}, {plan.mutants} mutants/seq, converted in {seconds:.2f} s; "
          f"TFLOP/seq naive {flops['naive'] / 1e12:.3f}, converted {flops['converted'] / 1e12:.4f}, "
          f"floor {flops['floor'] / 1e12:.4f} (naive/converted {flops['naive'] / flops['converted']:.1f}x, "
          f"naive/floor {flops['naive'] / flops['floor']:.1f}x)", flush=True)


class NaiveRunner:
    """Naive ISM of the first ``--naive-seqs`` sequences; keeps the last output."""

    def __init__(self, session: ort.InferenceSession, X: np.ndarray, plan: Plan, args: argparse.Namespace):
        self.session = session
        self.X = X[:args.naive_seqs]
        self.layout = plan.seq.layout
        self.region = (plan.start, plan.end)
        self.batch_size = args.naive_batch
        self.last: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self) -> None:
        self.last = naive_ism(self.session, self.X, start=self.region[0], end=self.region[1],
                              batch_size=self.batch_size, layout=self.layout)


def time_interleaved(fns: Sequence[Callable[[], object]], repeats: int) -> list[list[float]]:
    """Time ``fns`` round-robin, so that a load that drifts over time hits all of them alike."""
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, runs):
            out.extend(time_runs(fn, 1))
    return runs


def fit_converted(requested: int, runner: ConvertedRunner, per_seq: int | None) -> int:
    """Lower ``B`` to what the memory estimate allows, then warm up (halving on failures)."""
    batch = fit_batch(requested, per_seq)
    if batch != requested:
        print(f"  B={requested} needs ~{requested * per_seq * MEMORY_SAFETY / 2**30:.1f} GiB "
              f"({per_seq / 2**20:.0f} MiB/seq measured at B=1,2, x{MEMORY_SAFETY}), more than "
              f"{MEMORY_FRACTION:.0%} of MemAvailable; trying B={batch}", flush=True)
    return warm_up_fitting(runner, batch)


def peak_rss_gib() -> float | None:
    """This process's peak RSS since the last :func:`reset_peak_rss`, in GiB."""
    try:
        return _status_kib("VmHWM") / 2**20
    except (OSError, KeyError):
        return None


def region(args: argparse.Namespace, path: Path) -> tuple[int, int | None]:
    """Mutated positions: the central ``--region`` positions, or the whole sequence."""
    if args.region is None:
        return 0, None
    length = find_sequence_input(onnx.load(str(path), load_external_data=False)).length
    start = (length - args.region) // 2
    return start, start + args.region


def bench_model(name: str, path: Path, args: argparse.Namespace) -> ModelResult:
    """Convert, create both sessions once, and time naive ISM and the converted model per B.

    Naive ISM is timed once per model, round-robin with the converted runs of the first batch
    size; the other batch sizes reuse its timings.
    """
    start, end = region(args, path)
    model, plan, seconds, warns = convert_timed(path, start, end)
    print_plan(name, plan, seconds)
    for w in warns:
        print(f"  conversion warning: {w}")
    res = ModelResult(name, str(path), plan.seq.length, plan.mutants, plan.totals(), seconds, warns)
    pairs = ism_outputs(model)
    source = session_source(model, path.stem)
    del model
    naive = make_session(str(path), args.provider, args.threads)
    converted = make_session(source, args.provider, args.threads)
    X = random_one_hot(max(max(args.batches), args.naive_seqs), plan, seed=args.seed)
    runner = ConvertedRunner(converted, plan.seq.name, X)
    naive_runner = NaiveRunner(naive, X, plan, args)
    naive_names = [o.name for o in naive.get_outputs()]
    converted_names = [o.name for o in converted.get_outputs()]

    cpu = args.provider == "cpu"
    if static_batch(naive):
        print(f"  the original model has a static batch of {static_batch(naive)}: naive ISM runs that "
              "many mutants per call, not --naive-batch")
    warm_up_naive(naive, X, args.naive_batch)
    per_seq = memory_per_sequence(runner) if cpu and max(args.batches) > 1 else None
    res.memory_per_seq_mib = None if per_seq is None else per_seq / 2**20
    naive_runs: list[float] = []
    fixed = static_batch(converted)
    for requested in args.batches:
        if fixed is not None and requested != fixed:
            print(f"  the converted model has a static batch of {fixed}; running B={fixed}, not {requested}")
            requested = fixed
        try:
            reset_peak_rss()
        except OSError:
            pass
        with memory_guard(cpu):
            batch = fit_converted(requested, runner, per_seq)
            if not naive_runs:
                naive_runs, runs = time_interleaved([naive_runner, lambda: runner(batch)], args.repeats)
                print(f"  naive ISM, {args.naive_seqs} seq (measured): {fmt_runs(naive_runs)}", flush=True)
            else:
                runs = time_runs(lambda: runner(batch), args.repeats)
        print(f"  converted, B={batch}: {fmt_runs(runs)}", flush=True)
        diff = max_abs_diff(naive_runner.last, naive_names, runner.last, converted_names, pairs)
        res.batches.append(BatchResult(requested, batch, args.naive_seqs, naive_runs, runs, diff,
                                       peak_rss_gib(), os.getloadavg()))
    del runner, naive_runner, converted, naive  # free their arenas before the profiling session
    if args.profile:
        b = min(r.batch for r in res.batches)
        with memory_guard(cpu):
            res.profile = profile_converted(source, args.provider, args.threads, {plan.seq.name: X[:b]})
        print_profile(name, res.profile, b)
    return res


# --------------------------------------------------------------------------- report
COLUMNS = ("model", "L", "B", "naive s/seq", "naive s for B", "converted s/seq", "speedup (best runs)",
           "target (CPU, B=1)", "naive/converted FLOPs", "naive/floor FLOPs", "convert s", "naive GFLOP/s",
           "converted GFLOP/s", "max abs diff", "peak RSS GiB")


def table_row(r: ModelResult, b: BatchResult, cpu: bool) -> list[str]:
    """One table row, in ``COLUMNS`` order."""
    f = r.flops
    target = ""
    if r.target is not None:
        target = f"{r.target:g}x"
        if cpu and b.batch == 1:
            target += " met" if b.speedup >= r.target else " **missed**"
    asked = f" (asked {b.batch_requested})" if b.batch != b.batch_requested else ""
    basis = f"scaled from {b.naive_seqs}" if b.naive_scaled else "measured"
    return [
        r.name, str(r.length), f"{b.batch}{asked}",
        f"{b.naive_per_seq:.4g} (measured, {b.naive_seqs} seq)", f"{b.naive_per_seq * b.batch:.4g} ({basis})",
        f"{b.converted_per_seq:.4g}", f"{b.speedup:.1f}x ({b.speedup_best:.1f}x)", target,
        f"{f['naive'] / f['converted']:.1f}x", f"{f['naive'] / f['floor']:.1f}x", f"{r.convert_s:.2f}",
        f"{f['naive'] / b.naive_per_seq / 1e9:.3g}", f"{f['converted'] / b.converted_per_seq / 1e9:.3g}",
        "" if b.max_abs_diff is None else f"{b.max_abs_diff:.1e}",
        "" if b.peak_rss_gib is None else f"{b.peak_rss_gib:.1f}",
    ]


def markdown(machine: Machine, results: list[ModelResult], naive_batch: int) -> str:
    """The results table, with the machine it ran on."""
    cpu = machine.provider == PROVIDERS["cpu"]
    lines = [
        f"Machine: {machine.cpu}, {machine.cores} cores" + (f", GPU {machine.gpu}" if machine.gpu else "")
        + f"; onnxruntime {machine.onnxruntime}, {machine.provider}, "
        f"intra_op_num_threads={machine.threads or 'default'}; yuzu-onnx {machine.code}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(table_row(r, b, cpu)) + " |" for r in results for b in r.batches]
    lines += ["", "Times are medians of the runs listed in the JSON (speedup in brackets: from the fastest "
              "run of each, which a busy machine disturbs least); naive ISM is "
              f"`naive_ism(session, X, batch_size={naive_batch})` on the original model, converted is one "
              "`session.run` on B sequences. GFLOP/s = plan FLOPs (`Plan.totals()`) / time; max abs diff "
              "compares converted y_ism with naive ISM on the naive sequences."]
    if len({r.code for r in results}) > 1:
        lines += ["", "Rows come from different yuzu-onnx versions: "
                  + "; ".join(f"{r.name} B={b.batch}: {r.code}" for r in results for b in r.batches) + "."]
    return "\n".join(lines) + "\n"


def to_json(machine: Machine, args: argparse.Namespace, results: list[ModelResult]) -> dict:
    """All raw timings and derived figures."""
    out = []
    for r in results:
        d = asdict(r)
        for bd, b in zip(d["batches"], r.batches):
            bd.update(naive_per_seq=b.naive_per_seq, converted_per_seq=b.converted_per_seq,
                      naive_scaled=b.naive_scaled, speedup=b.speedup, speedup_best=b.speedup_best)
        d["target"] = r.target
        out.append(d)
    skip = ("json", "markdown", "from_json")
    return {"machine": asdict(machine), "args": {k: v for k, v in vars(args).items() if k not in skip},
            "results": out}


def from_json(paths: Sequence[Path]) -> tuple[Machine, list[ModelResult], int]:
    """Reload results written by ``--json``.

    Returns
    -------
    tuple
        The first file's machine, the results of all files, and the first file's naive batch.
    """
    machine, results, naive_batch = None, [], NAIVE_BATCH
    for path in paths:
        data = json.loads(Path(path).read_text())
        if machine is None:
            machine = Machine(**{"code": "unknown", **data["machine"]})
            naive_batch = data.get("args", {}).get("naive_batch", NAIVE_BATCH)
        for d in data["results"]:
            d = {k: v for k, v in d.items() if k != "target"}
            names = {f.name for f in fields(BatchResult)}
            batches = [BatchResult(**{k: v for k, v in b.items() if k in names}) for b in d.pop("batches")]
            d.setdefault("code", data["machine"].get("code", "unknown"))
            results.append(ModelResult(**d, batches=batches))
    return machine, results, naive_batch


# --------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME",
                        help=f"reference models (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--model-file", type=Path, action="append", default=[], metavar="PATH",
                        help="benchmark this ONNX file instead of the reference models (repeatable)")
    parser.add_argument("--length", type=int, default=1000, help="sequence length L (default 1000)")
    parser.add_argument("--region", type=int, default=None, metavar="W",
                        help="mutate only the central W positions (default: all; ChromBPNet: 1000 of 2114)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64], metavar="B",
                        help="sequences per converted run (default: 1 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default 3)")
    parser.add_argument("--naive-seqs", type=int, default=1,
                        help="sequences naive ISM is measured on, scaled to B (default 1)")
    parser.add_argument("--naive-batch", type=int, default=NAIVE_BATCH,
                        help=f"mutants per naive ONNX Runtime call (default {NAIVE_BATCH})")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="intra_op_num_threads (default: ORT's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sequences")
    parser.add_argument("--profile", action="store_true",
                        help="profile one converted run (smallest B) by op type and node")
    parser.add_argument("--json", type=Path, help="write all raw timings here")
    parser.add_argument("--markdown", type=Path, help="write the results table here")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: print (and --markdown) the table of earlier --json files")
    args = parser.parse_args(argv)
    for key in ("length", "repeats", "naive_seqs", "naive_batch"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if min(args.batches) < 1:
        parser.error("--batches must be >= 1")
    return args


def targets(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, path) of every model to benchmark."""
    if args.model_file:
        for path in args.model_file:
            if not path.is_file():
                raise SystemExit(f"model file not found: {path}")
        return [(p.stem, p) for p in args.model_file]
    return [(name, model_path(name, args.length)) for name in args.models]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    if args.from_json:
        table = markdown(*from_json(args.from_json))
        print(table)
        if args.markdown:
            args.markdown.write_text(table)
        return 0
    machine = machine_info(args.provider, args.threads)
    print(f"{machine.cpu}, {machine.cores} cores, onnxruntime {machine.onnxruntime}, {machine.provider}"
          + (f", {machine.gpu}" if machine.gpu else "") + f"; yuzu-onnx {machine.code}", flush=True)
    results = [bench_model(name, path, args) for name, path in targets(args)]
    for r in results:
        r.code = machine.code
    table = markdown(machine, results, args.naive_batch)
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(to_json(machine, args, results), indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
