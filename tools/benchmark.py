"""Benchmark exact ISM: the converted yuzu-onnx graph against naive ISM in ONNX Runtime and a peer.

For each model the script converts the ONNX file (timed), creates one ONNX Runtime session for
the original model (naive ISM, :func:`yuzu_onnx.oracle.naive_ism`, at each of ``--naive-batches``
mutants per call; the fastest is the naive figure) and one for the converted model, with the
same provider and session options, warms both up, and times ``--repeats`` runs of each,
round-robin (naive at each batch size, converted, peers, naive, ...) so that a machine whose load
drifts slows all alike. Medians are reported next to every individual run. Each timed converted
run follows ``--settle-runs`` untimed ones (default 1): the steady state of ISM over many
sequences. Its first run after the naive runs is 25-40% slower on 0.1-0.2 s jobs (their memory
traffic evicts its working set), which naive ISM and the peers, each making many calls per run,
absorb in their first call.

Peers (``--peers``, needs the ``bench`` extra): tangermeme's ``saturation_mutagenesis`` on the
PyTorch model the ONNX file was exported from, ``fast=True`` (fastISM windowing over a
``torch.export`` capture; tangermeme itself falls back to ``fast=False`` when the job would take
under 30 s or the capture fails, and the report says which path ran) and ``fast=False``, on the
same sequences and region as naive ISM, all substitutions (``raw_outputs=True``). Their ``y_hat``
is compared with the converted graph's ``y_ism`` (max abs diff). PyTorch models exist for the
zoo models (``models/zoo.py``) and the ecosystem models (``models/ecosystem.py``: bpnet-lite
``BPNet``/``ChromBPNet``, gReLU ``ConvModel``/``DilatedConvModel``/``BorzoiModel``, exported by
``tools/export_ecosystem.py`` into ``models/generated/`` when missing); not for ``--model-file``.

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

The ecosystem models (bpnet-lite's and ChromBPNet's central 1000 of 2114 positions mutated),
with tangermeme as the peer::

    python tools/benchmark.py --models bpnet_lite chrombpnet_lite grelu_conv grelu_dilated grelu_borzoi \
        --batches 1 --repeats 3

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
from yuzu_onnx.seqio import random_one_hot

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
# Mutants per naive call tried by default; the fastest (median) is reported as naive ISM.
NAIVE_BATCHES = (64, 256, 1024)
# Peers: name -> tangermeme's `fast` argument.
PEERS = {"tangermeme_fast": True, "tangermeme": False}
PEER_BATCH = 32  # tangermeme's own default batch_size
# Exporter tried first for an ecosystem model, and the one used where its file does not run in
# ONNX Runtime (TorchScript writes dilated "same" convs as auto_pad=SAME_UPPER, which ORT refuses).
ECOSYSTEM_EXPORTERS = ("torchscript", "dynamo_batch", "dynamo")

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
    peak_rss_gib: float | None = None  # this process's peak RSS during the timed runs (CPU)
    load_avg: tuple[float, float, float] | None = None  # after the runs
    naive_batch: int | None = None  # mutants per call of naive_runs (the fastest of naive_by_batch)
    naive_by_batch: dict[str, list[float]] = field(default_factory=dict)  # runs per mutants per call
    peer_runs: dict[str, list[float]] = field(default_factory=dict)  # peer -> runs on naive_seqs seqs
    peer_notes: dict[str, str] = field(default_factory=dict)  # peer -> the path it took, warnings
    peer_max_abs_diff: dict[str, float] = field(default_factory=dict)  # |peer y_hat - converted y_ism|
    predicted_gib: float | None = None  # the plan's memory (weights + activations) for `batch` seqs
    rss_growth_gib: float | None = None  # peak RSS growth of the first converted run at `batch` (CPU)

    def peer_per_seq(self, peer: str) -> float | None:
        """Median seconds per sequence of a peer (measured on ``naive_seqs`` sequences)."""
        runs = self.peer_runs.get(peer)
        return statistics.median(runs) / self.naive_seqs if runs else None

    def peer_ratio(self, peer: str) -> float | None:
        """Peer over converted time per sequence (medians): > 1 means the converted graph is faster."""
        t = self.peer_per_seq(peer)
        return None if t is None else t / self.converted_per_seq

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
    region: list[int] | None = None  # [start, end) of the mutated positions
    exporter: str | None = None  # how an ecosystem / zoo model was exported
    peer_setup: dict | None = None  # how the peers were called (torch threads, batch size, ...)

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


def _load_tool(name: str, file: str):
    """Import a sibling script of ``tools/`` by path (once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ecosystem_tool():
    """``tools/export_ecosystem.py`` (needs PyTorch; its models need the ``bench`` extra)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("the ecosystem models need PyTorch, bpnet-lite and gReLU: "
                         "pip install -e .[bench] and pip install --no-deps bpnet-lite==1.1.0") from None
    return _load_tool("yuzu_export_ecosystem", "export_ecosystem.py")


def ecosystem_names() -> list[str]:
    """Names of the ecosystem models (``models/ecosystem.py``), without importing PyTorch."""
    text = (ROOT / "models" / "ecosystem.py").read_text()
    return [line.split('name="', 1)[1].split('"', 1)[0] for line in text.splitlines()
            if line.strip().startswith('name="')]


def runs_in_onnxruntime(path: Path) -> str | None:
    """None if ONNX Runtime runs ``path`` on one random sequence, else its error message."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
        seq = find_sequence_input(proto)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        session.run(None, {seq.name: random_one_hot(1, seq.length, 0, alphabet=seq.alphabet, layout=seq.layout)})
    except Exception as exc:  # ONNX Runtime raises several unrelated types
        return " ".join(str(exc).split())
    return None


def ecosystem_path(name: str, exporter: str | None) -> tuple[Path, str]:
    """The full-size export of an ecosystem model (exported when missing) and its exporter.

    With ``exporter=None`` the first of ``ECOSYSTEM_EXPORTERS`` whose file runs in ONNX Runtime
    is used, saying why an earlier one was skipped.
    """
    tool = ecosystem_tool()
    for candidate in ([exporter] if exporter else ECOSYSTEM_EXPORTERS):
        try:
            path = tool.full_path(name, candidate)
        except tool.ExportCheckError as exc:  # written, but ONNX Runtime cannot run it (checked below)
            if exporter:
                raise
            print(f"  {name} ({candidate}): its export fails its check ({' '.join(str(exc).split())[:200]})",
                  flush=True)
            path = tool.full_path(name, candidate, export_missing=False)
            if not path.is_file():
                continue
        problem = runs_in_onnxruntime(path)
        if problem is None or exporter:
            return path, candidate
        print(f"  {path.name}: ONNX Runtime cannot run it ({problem[:200]}); trying the next exporter",
              flush=True)
    raise SystemExit(f"no export of {name} runs in ONNX Runtime")


def torch_model(name: str, length: int):
    """The PyTorch model a benchmarked file was exported from (same seed), or None."""
    if name in ecosystem_names():
        model, cfg = ecosystem_tool().eco.build(name, "full", ecosystem_tool().SEED)
        return model if cfg.length == length else None
    zoo = _load_tool("yuzu_export_models", "export_models.py").zoo
    if name in zoo.MODELS:
        return zoo.build(name, length, 1.0, 0)
    return None


# --------------------------------------------------------------------------- peers
def tangermeme_module():
    """``tangermeme.saturation_mutagenesis`` (the module), or a reason it cannot be used."""
    try:
        import torch  # noqa: F401
        return importlib.import_module("tangermeme.saturation_mutagenesis")
    except ImportError as exc:
        return f"tangermeme is not installed ({exc}); pip install -e .[bench]"


class TangermemeRunner:
    """tangermeme's ``saturation_mutagenesis`` on the PyTorch model: the peer.

    Called exactly as a user would (``raw_outputs=True`` to get every substitution, the region
    as ``start``/``end``, ``batch_size``, ``device``), on the naive sequences. With
    ``fast=True`` tangermeme decides itself whether the fast path runs; ``self.path`` records
    what it did (from its ``_fast_path`` helper, wrapped for the call, and its warnings).
    ``force_fast`` sets its 30-second threshold (``_FAST_MIN_SECONDS``) to 0 for the call.
    """

    def __init__(self, module, model, X: np.ndarray, start: int, end: int, fast: bool,
                 batch_size: int, device: str, force_fast: bool = False):
        import torch

        self.module = module
        self.model = model
        self.X = torch.from_numpy(np.ascontiguousarray(X))
        self.start, self.end = start, end
        self.fast = fast
        self.batch_size = batch_size
        self.device = device
        self.force_fast = force_fast
        self.last: list[np.ndarray] = []
        self.path = ""

    def __call__(self) -> None:
        self.last = []
        used: list[bool] = []
        original = getattr(self.module, "_fast_path", None)
        threshold = getattr(self.module, "_FAST_MIN_SECONDS", None)

        def recording(*a, **k):
            out = original(*a, **k)
            used.append(out[0] is not None)
            return out

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if original is not None:
                    self.module._fast_path = recording
                if self.force_fast and threshold is not None:
                    self.module._FAST_MIN_SECONDS = 0.0
                result = self.module.saturation_mutagenesis(
                    self.model, self.X, start=self.start, end=self.end, batch_size=self.batch_size,
                    raw_outputs=True, fast=self.fast, device=self.device)
            finally:
                if original is not None:
                    self.module._fast_path = original
                if threshold is not None:
                    self.module._FAST_MIN_SECONDS = threshold
        y_hat = result[1]
        self.last = [t.float().numpy() for t in (y_hat if isinstance(y_hat, (list, tuple)) else [y_hat])]
        notes = [" ".join(str(w.message).split()) for w in caught if "fast=False because" in str(w.message)]
        if not self.fast:
            self.path = "fast=False"
        elif used and used[0]:
            self.path = "fast path"
        elif notes:
            self.path = "fell back to fast=False: " + notes[0]
        elif original is None:
            self.path = "fast=True (path not observable)"
        else:
            self.path = "fell back to fast=False: the job is under tangermeme's 30 s threshold"


def make_peers(name: str, plan: Plan, X: np.ndarray, args: argparse.Namespace) -> tuple[dict, dict]:
    """The peer runners of a model (possibly none) and how they are set up."""
    if not args.peers:
        return {}, {}
    if plan.seq.layout != "NCL":
        print(f"  peers skipped: {name} takes {plan.seq.layout} input (the PyTorch models are NCL)")
        return {}, {}
    module = tangermeme_module()
    if isinstance(module, str):
        print(f"  peers skipped: {module}")
        return {}, {}
    model = torch_model(name, plan.seq.length)
    if model is None:
        print(f"  peers skipped: no PyTorch model for {name} (only zoo and ecosystem models have one)")
        return {}, {}
    import torch

    device = "cuda" if args.provider == "cuda" else "cpu"
    runners = {peer: TangermemeRunner(module, model, X[:args.naive_seqs], plan.requested_start, plan.requested_end, PEERS[peer],
                                      args.peer_batch, device, args.peer_force_fast)
               for peer in args.peers}
    version = getattr(sys.modules.get("tangermeme"), "__version__", None) or _dist_version("tangermeme")
    setup = {"tangermeme": version, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
             "batch_size": args.peer_batch, "device": device, "force_fast": args.peer_force_fast,
             "call": f"saturation_mutagenesis(model, X, start=S, end=E, batch_size={args.peer_batch}, "
                     f"raw_outputs=True, fast=..., device={device!r})"}
    with torch.no_grad():  # load the kernels once, as ONNX Runtime's sessions are warmed up
        model(torch.from_numpy(X[:1]))
    return runners, setup


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def peer_diffs(peer: TangermemeRunner, converted: list[np.ndarray], converted_names: list[str],
               naive_names: list[str], pairs: dict[str, str]) -> float | None:
    """Largest |peer y_hat - converted y_ism| over the outputs both computed (same layout)."""
    diffs = []
    for y_hat, name in zip(peer.last, naive_names):
        if pairs.get(name) in converted_names:
            got = converted[converted_names.index(pairs[name])][:len(y_hat)]
            if got.shape != y_hat.shape:
                raise RuntimeError(f"tangermeme's y_hat for {name} has shape {y_hat.shape}, "
                                   f"the converted graph's {got.shape}")
            diffs.append(float(np.abs(got - y_hat).max()))
    return max(diffs) if diffs else None


def session_source(model: onnx.ModelProto, stem: str) -> str | bytes:
    """Serialized bytes, or a file with external data when the model is over the protobuf limit."""
    if model.ByteSize() < PROTOBUF_LIMIT:
        return model.SerializeToString()
    path = GENERATED / f"{stem}.ism.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data")
    return str(path)


# --------------------------------------------------------------------------- sessions
def session_options(threads: int | None, profile_prefix: str | None = None) -> ort.SessionOptions:
    """The one set of options every timed session uses (plus profiling when asked): those
    ISMSession uses (:func:`yuzu_onnx.runtime.make_session`: the CPU arena without its memory
    pattern), for the original model too."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_mem_pattern = False
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
    print(f"{name}: L={plan.seq.length}, {plan.requested_mutants} mutants/seq, converted in {seconds:.2f} s; "
          f"TFLOP/seq naive {flops['naive'] / 1e12:.3f}, converted {flops['converted'] / 1e12:.4f}, "
          f"floor {flops['floor'] / 1e12:.4f} (naive/converted {flops['naive'] / flops['converted']:.1f}x, "
          f"naive/floor {flops['naive'] / flops['floor']:.1f}x)", flush=True)


class NaiveRunner:
    """Naive ISM of the first ``--naive-seqs`` sequences; keeps the last output."""

    def __init__(self, session: ort.InferenceSession, X: np.ndarray, plan: Plan, args: argparse.Namespace,
                 batch_size: int):
        self.session = session
        self.X = X[:args.naive_seqs]
        self.layout = plan.seq.layout
        self.region = (plan.requested_start, plan.requested_end)
        self.batch_size = batch_size
        self.last: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self) -> None:
        self.last = naive_ism(self.session, self.X, start=self.region[0], end=self.region[1],
                              batch_size=self.batch_size, layout=self.layout)


def time_interleaved(fns: Sequence[Callable[[], object]], repeats: int,
                     settle: Sequence[int] | None = None) -> list[list[float]]:
    """Time ``fns`` round-robin, so that a load that drifts over time hits all of them alike;
    ``settle[i]`` untimed calls of ``fns[i]`` come right before each of its timed ones."""
    runs: list[list[float]] = [[] for _ in fns]
    settle = settle or [0] * len(fns)
    for _ in range(repeats):
        for fn, out, untimed in zip(fns, runs, settle):
            for _ in range(untimed):
                fn()
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


def region(args: argparse.Namespace, path: Path, default: int | None = None) -> tuple[int, int | None]:
    """Mutated positions: the central ``--region`` (else ``default``) positions, or the whole sequence."""
    width = args.region if args.region is not None else default
    if width is None:
        return 0, None
    length = find_sequence_input(onnx.load(str(path), load_external_data=False)).length
    start = (length - width) // 2
    return start, start + width


def default_region(name: str) -> int | None:
    """An ecosystem model's default region (bpnet-lite: the central 1000 of 2114), else None."""
    if name in ecosystem_names():
        return ecosystem_tool().eco.SPECS[name].full.region
    return None


def current_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    try:
        return _status_kib("VmRSS") * 1024
    except (OSError, KeyError):
        return 0


def bench_model(name: str, path: Path, args: argparse.Namespace, exporter: str | None = None) -> ModelResult:
    """Convert, create both sessions once, and time naive ISM, the peers and the converted model per B.

    Naive ISM (at each of ``--naive-batches`` mutants per call) and the peers are timed once per
    model, round-robin with the converted runs of the first batch size; the other batch sizes
    reuse their timings. The converted model is warmed up (and its memory measured) before the
    other sessions run, so that the peak RSS growth of its first run is its own.
    """
    start, end = region(args, path, default_region(name))
    model, plan, seconds, warns = convert_timed(path, start, end)
    print_plan(name, plan, seconds)
    for w in warns:
        print(f"  conversion warning: {w}")
    res = ModelResult(name, str(path), plan.seq.length, plan.requested_mutants, plan.totals(), seconds, warns,
                      region=[plan.requested_start, plan.requested_end], exporter=exporter)
    memory = getattr(plan, "memory", None)
    pairs = ism_outputs(model)
    source = session_source(model, path.stem)
    del model
    naive = make_session(str(path), args.provider, args.threads)
    converted = make_session(source, args.provider, args.threads)
    X = random_one_hot(max(max(args.batches), args.naive_seqs), plan.seq.length, args.seed,
                       alphabet=plan.seq.alphabet, layout=plan.seq.layout)
    runner = ConvertedRunner(converted, plan.seq.name, X)
    naive_names = [o.name for o in naive.get_outputs()]
    converted_names = [o.name for o in converted.get_outputs()]

    cpu = args.provider == "cpu"
    fixed_naive = static_batch(naive)
    naive_batches = [fixed_naive] if fixed_naive else list(dict.fromkeys(args.naive_batches))
    if fixed_naive:
        print(f"  the original model has a static batch of {fixed_naive}: naive ISM runs that "
              "many mutants per call, not --naive-batches")
    naive_runners = {b: NaiveRunner(naive, X, plan, args, b) for b in naive_batches}
    per_seq = memory_per_sequence(runner) if cpu and max(args.batches) > 1 else None
    res.memory_per_seq_mib = None if per_seq is None else per_seq / 2**20
    naive_runs: list[float] = []
    peers: dict[str, TangermemeRunner] = {}
    peer_runs: dict[str, list[float]] = {}
    naive_by: dict[int, list[float]] = {}
    best_naive = naive_batches[0]
    fixed = static_batch(converted)
    for requested in args.batches:
        if fixed is not None and requested != fixed:
            print(f"  the converted model has a static batch of {fixed}; running B={fixed}, not {requested}")
            requested = fixed
        with memory_guard(cpu):
            rss0 = current_rss()
            try:
                reset_peak_rss()
            except OSError:
                pass
            batch = fit_converted(requested, runner, per_seq)
            growth = None if not cpu or peak_rss_gib() is None else max(0.0, peak_rss_gib() - rss0 / 2**30)
            if not naive_runs:
                for b in naive_batches:
                    warm_up_naive(naive, X, b)
                peers, res.peer_setup = make_peers(name, plan, X, args)
                try:
                    reset_peak_rss()
                except OSError:
                    pass
                fns = [*naive_runners.values(), lambda: runner(batch), *peers.values()]
                settle = [0] * len(naive_runners) + [args.settle_runs] + [0] * len(peers)
                runs = time_interleaved(fns, args.repeats, settle)
                naive_by = dict(zip(naive_batches, runs[:len(naive_batches)]))
                converted_runs = runs[len(naive_batches)]
                peer_runs = dict(zip(peers, runs[len(naive_batches) + 1:]))
                best_naive = min(naive_by, key=lambda b: statistics.median(naive_by[b]))
                naive_runs = naive_by[best_naive]
                for b, r in naive_by.items():
                    print(f"  naive ISM, {b} mutants/call, {args.naive_seqs} seq (measured): {fmt_runs(r)}"
                          + ("  <- fastest" if b == best_naive and len(naive_by) > 1 else ""), flush=True)
                for peer, r in peer_runs.items():
                    print(f"  {peer} ({peers[peer].path}), {args.naive_seqs} seq: {fmt_runs(r)}", flush=True)
            else:
                converted_runs = time_runs(lambda: runner(batch), args.repeats)
        print(f"  converted, B={batch}: {fmt_runs(converted_runs)}", flush=True)
        diff = max_abs_diff(naive_runners[best_naive].last, naive_names, runner.last, converted_names, pairs)
        result = BatchResult(requested, batch, args.naive_seqs, naive_runs, converted_runs, diff,
                             peak_rss_gib(), os.getloadavg(), naive_batch=best_naive,
                             naive_by_batch={str(b): r for b, r in naive_by.items()},
                             peer_runs=peer_runs, peer_notes={p: r.path for p, r in peers.items()},
                             predicted_gib=None if memory is None else memory.total(batch) / 2**30,
                             rss_growth_gib=growth)
        for peer, r in peers.items():
            d = peer_diffs(r, runner.last, converted_names, naive_names, pairs)
            if d is not None:
                result.peer_max_abs_diff[peer] = d
                print(f"  max |{peer} y_hat - converted y_ism| = {d:.2e}")
        res.batches.append(result)
    del runner, naive_runners, converted, naive, peers  # free their arenas before the profiling session
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
# The peer table: one row per model and batch size.
PEER_COLUMNS = ("model", "region", "B", "converted s/seq", "naive ORT s/seq (mutants/call)",
                "tangermeme fast=True s/seq", "tangermeme fast=False s/seq", "naive / converted",
                "tangermeme fast / converted", "tangermeme / converted", "converted / floor FLOPs",
                "naive / floor FLOPs", "|tangermeme - ours|", "predicted GiB", "RSS growth GiB", "peak RSS GiB")


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


def _opt(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def peer_row(r: ModelResult, b: BatchResult) -> list[str]:
    """One row of the peer table, in ``PEER_COLUMNS`` order."""
    f = r.flops
    region = "" if not r.region else f"{r.region[0]}..{r.region[1] - 1}"
    fast = b.peer_per_seq("tangermeme_fast")
    path = b.peer_notes.get("tangermeme_fast", "")
    fast_text = "" if fast is None else f"{fast:.4g}" + ("" if path == "fast path" else " (fast=False ran)")
    diffs = list(b.peer_max_abs_diff.values())
    return [
        r.name + (f" ({r.exporter})" if r.exporter else ""), region, str(b.batch), f"{b.converted_per_seq:.4g}",
        f"{b.naive_per_seq:.4g} ({b.naive_batch or ''})", fast_text,
        _opt(b.peer_per_seq("tangermeme"), ".4g"), f"{b.speedup:.2f}x",
        _opt(b.peer_ratio("tangermeme_fast"), ".2f") + ("x" if fast is not None else ""),
        _opt(b.peer_ratio("tangermeme"), ".2f") + ("x" if "tangermeme" in b.peer_runs else ""),
        f"{f['converted'] / f['floor']:.2f}", f"{f['naive'] / f['floor']:.1f}x",
        _opt(max(diffs) if diffs else None, ".1e"), _opt(b.predicted_gib, ".2f"),
        _opt(b.rss_growth_gib, ".2f"), _opt(b.peak_rss_gib, ".1f"),
    ]


def markdown(machine: Machine, results: list[ModelResult], naive_batch: int | Sequence[int]) -> str:
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
    batches = "/".join(map(str, naive_batch)) if isinstance(naive_batch, (list, tuple)) else naive_batch
    lines += ["", "Times are medians of the runs listed in the JSON (speedup in brackets: from the fastest "
              "run of each, which a busy machine disturbs least); naive ISM is "
              f"`naive_ism(session, X, batch_size=b)` on the original model, the fastest of b = {batches} "
              "mutants per call, converted is one "
              "`session.run` on B sequences (after `--settle-runs` untimed ones, see the JSON's args). GFLOP/s = plan FLOPs (`Plan.totals()`) / time; max abs diff "
              "compares converted y_ism with naive ISM on the naive sequences."]
    with_peers = [(r, b) for r in results for b in r.batches if b.peer_runs or b.naive_by_batch]
    if with_peers:
        setup = next((r.peer_setup for r, _ in with_peers if r.peer_setup), None)
        lines += ["", "| " + " | ".join(PEER_COLUMNS) + " |", "|" + "---|" * len(PEER_COLUMNS)]
        lines += ["| " + " | ".join(peer_row(r, b)) + " |" for r, b in with_peers]
        lines += ["", "Peers: tangermeme's `saturation_mutagenesis` on the PyTorch model the ONNX file was "
                  "exported from, same sequences and region (S..E-1), all substitutions"
                  + (f" (tangermeme {setup['tangermeme']}, torch {setup['torch']}, "
                     f"{setup['torch_threads']} threads, `{setup['call']}`)" if setup else "")
                  + "; '(fast=False ran)': tangermeme's fast=True fell back (see the JSON's peer_notes). "
                  "Ratios > 1: the converted graph is faster. |tangermeme - ours|: max abs difference of "
                  "y_hat and y_ism. predicted: the plan's weights + activations for B sequences; RSS growth: "
                  "peak RSS growth of the first converted run (ONNX Runtime's default arena); peak RSS: the "
                  "whole process during the timed runs (naive sessions and PyTorch included)."]
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
    skip = ("json", "markdown", "from_json", "naive_batch")
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
            saved = data.get("args", {})
            naive_batch = saved.get("naive_batches") or saved.get("naive_batch") or NAIVE_BATCH
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
                        help=f"reference models (default: {' '.join(DEFAULT_MODELS)}) or ecosystem models "
                             f"({' '.join(ecosystem_names())}; full size, tools/export_ecosystem.py)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo", "dynamo_batch"), default=None,
                        help="export of the ecosystem models (default: the first of "
                             f"{', '.join(ECOSYSTEM_EXPORTERS)} that ONNX Runtime runs)")
    parser.add_argument("--model-file", type=Path, action="append", default=[], metavar="PATH",
                        help="benchmark this ONNX file instead of the reference models (repeatable)")
    parser.add_argument("--length", type=int, default=1000, help="sequence length L (default 1000)")
    parser.add_argument("--region", type=int, default=None, metavar="W",
                        help="mutate only the central W positions (default: all; the bpnet-lite models: "
                             "their central 1000 of 2114)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64], metavar="B",
                        help="sequences per converted run (default: 1 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default 3)")
    parser.add_argument("--settle-runs", type=int, default=1, metavar="K",
                        help="untimed runs of the converted model right before each timed one, as in ISM over "
                             "many sequences (default 1; 0: time its first run after the naive and peer runs, "
                             "whose memory traffic slows a 0.1-0.2 s run by 25-40%%). Naive ISM and the peers "
                             "are not settled: each of their runs makes many calls, the first absorbs it")
    parser.add_argument("--naive-seqs", type=int, default=1,
                        help="sequences naive ISM is measured on, scaled to B (default 1)")
    parser.add_argument("--naive-batches", nargs="+", type=int, default=list(NAIVE_BATCHES), metavar="M",
                        help="mutants per naive ONNX Runtime call; each is timed and the fastest reported "
                             f"(default: {' '.join(map(str, NAIVE_BATCHES))})")
    parser.add_argument("--naive-batch", type=int, default=None, metavar="M",
                        help="one naive batch size (same as --naive-batches M)")
    parser.add_argument("--peers", nargs="*", choices=sorted(PEERS), default=list(PEERS), metavar="PEER",
                        help=f"peers to time ({', '.join(PEERS)}; default: both; none without arguments)")
    parser.add_argument("--peer-batch", type=int, default=PEER_BATCH,
                        help=f"tangermeme's batch_size (default {PEER_BATCH}, its own default)")
    parser.add_argument("--peer-force-fast", action="store_true",
                        help="let tangermeme's fast=True try its fast path even for jobs it estimates "
                             "under 30 s (it skips the capture for those by default)")
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
    if args.naive_batch is not None:
        args.naive_batches = [args.naive_batch]
    for key in ("length", "repeats", "naive_seqs", "peer_batch"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.settle_runs < 0:
        parser.error("--settle-runs must be >= 0")
    if min(args.naive_batches) < 1:
        parser.error("--naive-batches must be >= 1")
    if min(args.batches) < 1:
        parser.error("--batches must be >= 1")
    return args


def targets(args: argparse.Namespace) -> list[tuple[str, Path, str | None]]:
    """(name, path, exporter) of every model to benchmark."""
    if args.model_file:
        for path in args.model_file:
            if not path.is_file():
                raise SystemExit(f"model file not found: {path}")
        return [(p.stem, p, None) for p in args.model_file]
    eco = set(ecosystem_names())
    out = []
    for name in args.models:
        if name in eco:
            out.append((name, *ecosystem_path(name, args.exporter)))
        else:
            out.append((name, model_path(name, args.length), "torchscript"))
    return out


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
    results, failed = [], []
    for name, path, exporter in targets(args):
        try:
            results.append(bench_model(name, path, args, exporter))
        except Exception as exc:  # a model the converter (or a session) cannot handle: report, go on
            message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            print(f"{name}: FAILED: {message}", flush=True)
            failed.append({"model": name, "file": str(path), "exporter": exporter, "error": message})
    for r in results:
        r.code = machine.code
    table = markdown(machine, results, args.naive_batches)
    if failed:
        table += "\nNot measured: " + "; ".join(f"{f['model']} ({f['error'][:300]})" for f in failed) + "\n"
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        data = to_json(machine, args, results)
        data["failed"] = failed
        args.json.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
