"""The Ray engine: the batches of an ``ism`` job run by ISMSession actors on a Ray cluster.

The job's batches (:func:`yuzu_onnx.jobs.batch_bounds`) become the rows of a Ray Dataset; Ray
Data's ``map_batches`` hands them, one at a time, to a pool of :class:`ISMActor` actors (one per
GPU of the cluster, or one per CPU slot when it has no GPU), each holding an
:class:`~yuzu_onnx.session.ISMSession`. An actor reads its batch from the source (loci are read
from the genome by the actor itself), runs :func:`yuzu_onnx.jobs.run_batch`, the function the
single process runs, and returns the arrays with their record indices. The driver iterates over
the results as they complete (Ray Data streams them) and writes them where they belong, so that
the output files are those of the single process.

Every node must import yuzu-onnx and read MODEL and, for loci, the genome at the same absolute
path (a shared file system or copies); FASTA/.npy sequences travel through Ray's object store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np

from .errors import InputValidationError, YuzuError
from .jobs import batch_bounds, run_batch
from .products import Request

__all__ = ["ISMActor", "iter_ray", "import_ray"]

#: Column of the batch number in the Ray Dataset, and of the record index in the results.
_BATCH, _INDEX = "batch", "index"
#: Columns of a batch that failed on the user's input: the error's class name and message. Ray
#: Data replaces an exception raised in an actor by its own (UserCodeException, without the
#: original), so user errors travel as data and are raised again by the driver.
_ERROR_TYPE, _ERROR = "error_type", "error"


def import_ray():
    """``ray`` and ``ray.data``, or an error saying how to install them."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise InputValidationError("--engine ray needs Ray: pip install 'yuzu-onnx[ray]'") from exc
    return ray


def _column(key: str) -> str:
    """Result key -> Ray column name (output names may hold any character; '/' is kept)."""
    return f"r:{key}"


class ISMActor:
    """A Ray Data callable class: one ISMSession, fed batch numbers, returning result rows.

    Parameters
    ----------
    model : str
        Path of the converted model (readable on the actor's node).
    source : ArraySource, LociSource or ray.ObjectRef
        The job's records (an object reference is fetched once, in the constructor).
    request : yuzu_onnx.products.Request
        What to compute.
    total, batch_size : int
        Records of the job and per batch: batch ``b`` is records ``b * batch_size ..``.
    providers : list of str
        ONNX Runtime providers of the session.
    max_memory : int, optional
        Memory budget of the session.
    """

    def __init__(self, model: str, source, request: Request, total: int, batch_size: int,
                 providers: list[str], max_memory: int | None = None):
        import ray

        from .session import ISMSession

        self.source = ray.get(source) if isinstance(source, ray.ObjectRef) else source
        self.request = request
        self.bounds = batch_bounds(total, batch_size)
        self.session = ISMSession(model, providers=providers, batch_size=batch_size, max_memory=max_memory)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for b in np.asarray(batch[_BATCH]).tolist():
            lo, hi = self.bounds[int(b)]
            try:
                arrays = run_batch(self.session, self.source, self.request, lo, hi)
            except YuzuError as exc:
                return {_INDEX: np.array([lo]), _ERROR_TYPE: np.array([type(exc).__name__]),
                        _ERROR: np.array([str(exc)])}
            parts.append({_INDEX: np.arange(lo, hi, dtype=np.int64),
                          **{_column(k): v for k, v in arrays.items()}})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _raise_user_error(out: dict[str, np.ndarray]) -> None:
    """Raise the user error an actor returned (as :class:`ISMActor` returns it), as its own class."""
    name, message = str(out[_ERROR_TYPE][0]), str(out[_ERROR][0])
    known = {cls.__name__: cls for cls in (YuzuError, *YuzuError.__subclasses__())}
    raise known.get(name, YuzuError)(message)


def _runs(index: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """``(i, j, lo)``: positions ``i..j-1`` of ``index`` hold the consecutive records ``lo..``."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    edges = [0, *breaks.tolist(), len(index)]
    for i, j in zip(edges[:-1], edges[1:]):
        yield i, j, int(index[i])


def iter_ray(model, source, request: Request, batch_size: int, *, max_memory: int | None = None,
             address: str | None = None, workers: int | None = None, gpus: bool | None = None
             ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Run the job on a Ray cluster: yield ``(rows, arrays)`` as batches complete (any order).

    Parameters
    ----------
    model : str or os.PathLike
        The converted model (same path on every node).
    source : ArraySource or LociSource
        The job's records.
    request : yuzu_onnx.products.Request
        What to compute.
    batch_size : int
        Records per batch (as in the single process, so that the numbers are the same).
    max_memory : int, optional
        Memory budget of each actor's session.
    address : str, optional
        The cluster to join (``ray.init(address=...)``: ``"auto"``, ``"ray://host:10001"``);
        default: the cluster this process is already connected to, else a new local one.
    workers : int, optional
        Actors in the pool; default one per GPU of the cluster, or one per CPU without GPUs.
    gpus : bool, optional
        Run the actors on GPUs (CUDA provider, one GPU each) or on CPU slots; default: GPUs
        when the cluster has any.

    Yields
    ------
    tuple of (slice, dict)
        Consecutive records and their arrays (the keys of :func:`yuzu_onnx.products.compute`).

    Raises
    ------
    YuzuError
        The error an actor met in the user's input (same class and message as in the single
        process).
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    elif address is not None:
        raise InputValidationError("this process is already connected to a Ray cluster; --ray-address "
                                   "cannot choose another")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own progress line
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no execution notes; errors come back as exceptions
    resources = ray.cluster_resources()
    cluster_gpus = int(resources.get("GPU", 0))
    if gpus and not cluster_gpus:
        raise InputValidationError("--providers cuda with --engine ray: the Ray cluster has no GPU")
    if cluster_gpus and gpus is not False:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        per_actor, slots = {"num_gpus": 1}, cluster_gpus
    else:
        providers = ["CPUExecutionProvider"]
        per_actor, slots = {"num_cpus": 1}, int(resources.get("CPU", 1))
    size = workers or max(1, slots)
    bounds = batch_bounds(len(source), batch_size)
    dataset = ray.data.from_items([{_BATCH: b} for b in range(len(bounds))])
    results = dataset.map_batches(
        ISMActor, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(size, len(bounds))),
        fn_constructor_kwargs=dict(model=os.path.abspath(model), source=ray.put(source), request=request,
                                   total=len(source), batch_size=batch_size, providers=providers,
                                   max_memory=max_memory),
        **per_actor)
    prefix = _column("")
    for out in results.iter_batches(batch_size=None, batch_format="numpy"):
        if _ERROR in out:
            _raise_user_error(out)
        index = np.asarray(out[_INDEX])
        arrays = {k[len(prefix):]: np.asarray(v) for k, v in out.items() if k.startswith(prefix)}
        for i, j, lo in _runs(index):
            yield slice(lo, lo + j - i), {k: v[i:j] for k, v in arrays.items()}
