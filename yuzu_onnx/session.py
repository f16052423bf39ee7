"""A reusable ONNX Runtime session on a converted ISM model, with validation and batching."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .errors import InputValidationError, ModelLoadError, YuzuError
from .memory import MemoryEstimate, batch_for_budget, estimate_memory, format_size, stored_estimate
from .runtime import ConvertedLike, IsmMetadata, check_finite, check_one_hot, coerce_input, make_session

__all__ = ["ISMSession"]

logger = logging.getLogger("yuzu_onnx")

DEFAULT_BATCH_SIZE = 8

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    # integer one-hot inputs (the model casts them to float itself)
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}

Results = list[tuple[np.ndarray, np.ndarray]]


def _default_providers() -> list[str]:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _positive_int(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


class ISMSession:
    """Run a model produced by :func:`yuzu_onnx.convert` on many sequences.

    Parameters
    ----------
    path_or_model : str, os.PathLike or onnx.ModelProto
        A converted model (it carries ``yuzu_onnx.*`` metadata).
    providers : sequence of str, optional
        ONNX Runtime execution providers. By default CUDA (with CPU fallback) when this
        onnxruntime build offers it, else CPU. The provider that really runs is
        :attr:`provider`.
    batch_size : int, optional
        Sequences per ONNX Runtime call (default 8). Memory per call grows linearly with it.
    max_memory : int, optional
        Memory budget in bytes for running the model: weights plus the peak of one ONNX Runtime
        call, as predicted from the graph's tensor shapes (:mod:`yuzu_onnx.memory`; the plan
        table prints it). The batch size is the largest ``<= batch_size`` that fits (if
        ``batch_size`` is not given, as many sequences as fit). Sessions keep ONNX Runtime's
        arena without its memory pattern (:func:`yuzu_onnx.runtime.make_session`), fast and
        close to the prediction, budget or not.

    Raises
    ------
    ModelLoadError
        If the model is missing, cannot be loaded by ONNX Runtime, or was not converted.
    MemoryBudgetError
        If one sequence alone needs more than ``max_memory`` (the message gives the amount
        needed); raised before anything runs.

    Notes
    -----
    On CUDA the batch is always kept small enough that no tensor reaches 2^31 elements: cuDNN
    refuses such tensors and ONNX Runtime's CUDA context is unusable afterwards.
    """

    def __init__(self, path_or_model: ConvertedLike, providers: Sequence[str] | None = None,
                 batch_size: int | None = None, max_memory: int | None = None):
        self._batch_size = _positive_int(batch_size, "batch_size")
        self._max_memory = _positive_int(max_memory, "max_memory")
        if isinstance(path_or_model, onnx.ModelProto):
            where = "model"
        elif isinstance(path_or_model, (str, os.PathLike)):
            where = os.fspath(path_or_model)
            if not os.path.isfile(where):
                raise ModelLoadError(f"model file not found: {where}")
        else:
            raise ModelLoadError("path_or_model must be a path or an onnx.ModelProto, "
                                 f"not {type(path_or_model).__name__}")
        requested = list(providers) if providers is not None else _default_providers()
        try:
            self._session = make_session(path_or_model, requested)
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            raise ModelLoadError(f"{where}: onnxruntime could not load the model: {exc}") from exc
        self._meta = IsmMetadata.from_props(dict(self._session.get_modelmeta().custom_metadata_map), where)
        self._memory = self._memory_estimate(path_or_model, dict(self._session.get_modelmeta().custom_metadata_map))
        active = self._session.get_providers()
        self._provider = active[0] if active else "CPUExecutionProvider"
        logger.info("ISMSession: running %s on %s (requested %s)", where, self._provider, ", ".join(requested))
        if requested and self._provider != requested[0]:
            logger.warning("ISMSession: %s was requested but %s runs the model", requested[0], self._provider)

        names = [o.name for o in self._session.get_outputs()]
        missing = [n for pair in self._meta.outputs.items() for n in pair if n not in names]
        if missing:
            raise ModelLoadError(f"{where}: converted model lacks the outputs {missing} named in its metadata")
        self._fetch = [n for pair in self._meta.outputs.items() for n in pair]  # y0, y_hat, y0, y_hat, ...
        inputs = {i.name: i for i in self._session.get_inputs()}
        if self._meta.input not in inputs:
            raise ModelLoadError(f"{where}: converted model has no input {self._meta.input!r}")
        self._dtype = np.dtype(_ORT_TO_NUMPY.get(inputs[self._meta.input].type, np.float32))
        self._effective_batch = self._choose_batch(where)
        others = sorted(set(inputs) - {self._meta.input})
        if others:
            logger.warning("ISMSession: the model has further inputs %s, which ISMSession does not feed", others)

    @staticmethod
    def _memory_estimate(path_or_model: ConvertedLike, props: dict[str, str]) -> MemoryEstimate:
        """The estimate stored at conversion; computed from the graph for older files."""
        stored = stored_estimate(props)
        if stored is not None:
            return stored
        model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(
            os.fspath(path_or_model), load_external_data=False)
        return estimate_memory(model)

    def _choose_batch(self, where: str) -> int:
        """Sequences per ONNX Runtime call: requested, budget and CUDA limits applied."""
        requested = self._batch_size or (DEFAULT_BATCH_SIZE if self._max_memory is None else 2**31)
        batch = batch_for_budget(self._memory, self._max_memory, requested,
                                 cuda=self._provider == "CUDAExecutionProvider", where=where)
        logger.info("ISMSession: batch size %d (%s of activations for one sequence predicted)", batch,
                    format_size(self._memory.resident(1)))
        return batch

    # ------------------------------------------------------------------ properties

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying ONNX Runtime session."""
        return self._session

    @property
    def metadata(self) -> IsmMetadata:
        """The converted model's metadata."""
        return self._meta

    @property
    def provider(self) -> str:
        """The execution provider that really runs the model, e.g. ``"CPUExecutionProvider"``."""
        return self._provider

    @property
    def providers(self) -> list[str]:
        """All providers of the session, in priority order."""
        return list(self._session.get_providers())

    @property
    def batch_size(self) -> int:
        """Sequences per ONNX Runtime call, after the memory budget and CUDA limits."""
        return self._effective_batch

    @property
    def memory(self) -> MemoryEstimate:
        """Predicted memory of the model (weights, peak activations per sequence)."""
        return self._memory

    @property
    def max_memory(self) -> int | None:
        return self._max_memory

    @property
    def input_name(self) -> str:
        return self._meta.input

    @property
    def layout(self) -> str:
        """``"NCL"`` (N, A, L) or ``"NLC"`` (N, L, A)."""
        return self._meta.layout

    @property
    def alphabet(self) -> int:
        return self._meta.alphabet

    @property
    def length(self) -> int:
        return self._meta.length

    @property
    def start(self) -> int:
        return self._meta.start

    @property
    def end(self) -> int:
        return self._meta.end

    @property
    def substitutions(self) -> str:
        return self._meta.substitutions

    @property
    def output_names(self) -> list[str]:
        """Names of the original model's outputs, in the order of :meth:`run`'s results."""
        return list(self._meta.outputs)

    @property
    def input_shape(self) -> tuple[str, int, int]:
        """Expected input shape, ``("N", A, L)`` or ``("N", L, A)``."""
        a, length = self._meta.alphabet, self._meta.length
        return ("N", a, length) if self._meta.layout == "NCL" else ("N", length, a)

    def __repr__(self) -> str:
        return (f"ISMSession(input={self.input_name!r}, shape={self.input_shape}, layout={self.layout}, "
                f"region=[{self.start}, {self.end}), substitutions={self.substitutions!r}, "
                f"provider={self.provider!r})")

    # ------------------------------------------------------------------ running

    def validate(self, X) -> np.ndarray:
        """Check ``X`` against the model and return it as a contiguous array of the input dtype.

        Raises
        ------
        InputValidationError
            If ``X`` is not 3-D, has the wrong shape for the model's layout, holds NaN or
            infinity, has a dtype the model input cannot take without changing values (see
            :func:`yuzu_onnx.runtime.coerce_input`), or (``substitutions="alt"``) has a column in
            the mutated region that is not exactly one-hot. An empty batch (``N = 0``) is valid.
        """
        X = np.asarray(X)
        _, d1, d2 = self.input_shape
        expected = f"(N, {d1}, {d2}) ({self.layout} layout: " + (
            "N sequences x A characters x L positions)" if self.layout == "NCL"
            else "N sequences x L positions x A characters)")
        if X.ndim != 3:
            raise InputValidationError(f"input must be 3-D, got {X.ndim}-D shape {X.shape}; "
                                       f"the model expects {expected}")
        if tuple(X.shape[1:]) != (d1, d2):
            if self.layout == "NCL":
                got_a, got_l = X.shape[1], X.shape[2]
            else:
                got_l, got_a = X.shape[1], X.shape[2]
            problems = []
            if got_a != self.alphabet:
                problems.append(f"alphabet size {got_a} != {self.alphabet}")
            if got_l != self.length:
                problems.append(f"length {got_l} != {self.length}")
            hint = ""
            if tuple(X.shape[1:]) == (d2, d1):
                hint = "; the axes look swapped: transpose the input to the model's layout"
            raise InputValidationError(f"input has shape {X.shape} ({', '.join(problems)}); "
                                       f"the model expects {expected}{hint}")
        check_finite(X, 1 if self.layout == "NCL" else 2)  # NaN/inf: refused in both substitution modes
        X = coerce_input(X, self._dtype, expected)
        if self.substitutions == "alt":
            check_one_hot(X, 1 if self.layout == "NCL" else 2, self.start, self.end)
        return X

    def _run_batch(self, Xb: np.ndarray) -> Results:
        out = self._session.run(self._fetch, {self.input_name: Xb})
        return [(out[k], out[k + 1]) for k in range(0, len(out), 2)]

    def iter_batches(self, X) -> Iterator[tuple[slice, Results]]:
        """Validate ``X`` and yield ``(slice, [(y0, y_hat), ...])`` one batch at a time.

        The slice selects the batch's sequences in ``X``; the pairs follow
        :attr:`output_names`. Every sequence appears in exactly one batch, in order. Only the
        outputs of the current batch are held, so a caller that writes them out (e.g. to disk)
        needs memory for one batch only.
        """
        return self._iter(self.validate(X))

    def _iter(self, X: np.ndarray) -> Iterator[tuple[slice, Results]]:
        n = X.shape[0]
        batch = self.batch_size
        lo = 0
        if n == 0:  # an empty batch yields no batches (ONNX Runtime is not called)
            return
        while lo < n:
            hi = min(n, lo + batch)
            yield slice(lo, hi), self._run_batch(X[lo:hi])
            lo = hi

    def _empty_results(self) -> Results:
        """``(y0, y_hat)`` with zero sequences, shaped from the graph's static ISM outputs
        (``y_ism`` is ``(N, A, end - start, *out)``, so ``y0`` is ``(N, *out)``)."""
        outputs = {o.name: o for o in self._session.get_outputs()}
        results = []
        for name, ism in self._meta.outputs.items():
            dims = outputs[ism].shape[1:]
            if not all(isinstance(d, int) for d in dims):
                raise YuzuError(f"output {ism!r} has shape {outputs[ism].shape}; its non-batch dims must be static")
            y0_type = _ORT_TO_NUMPY.get(outputs[name].type, np.float32)
            ism_type = _ORT_TO_NUMPY.get(outputs[ism].type, np.float32)
            results.append((np.empty((0, *dims[2:]), y0_type), np.empty((0, *dims), ism_type)))
        return results

    def run(self, X) -> Results:
        """Run ISM on ``X`` and return ``(y0, y_hat)`` per original output.

        Parameters
        ----------
        X : array_like
            Sequences in the model's layout, ``(N, A, L)`` or ``(N, L, A)``, floating point (or
            integer, for a model whose input is an integer one-hot). ``N = 0`` gives empty
            arrays of the shapes below without running ONNX Runtime.

        Returns
        -------
        list of (numpy.ndarray, numpy.ndarray)
            In :attr:`output_names` order: ``y0`` of shape ``(N, *out)`` and ``y_hat`` of shape
            ``(N, A, end - start, *out)``. The result arrays are allocated once, from the shapes
            of the first batch, and filled batch by batch.
        """
        X = self.validate(X)
        n = X.shape[0]
        if n == 0:
            return self._empty_results()
        results: list[tuple[np.ndarray, np.ndarray]] | None = None
        for sl, pairs in self._iter(X):
            if results is None:
                results = [(np.empty((n,) + y0.shape[1:], y0.dtype), np.empty((n,) + yh.shape[1:], yh.dtype))
                           for y0, yh in pairs]
            for name, (r0, rh), (y0, yh) in zip(self.output_names, results, pairs):
                if y0.shape[1:] != r0.shape[1:] or yh.shape[1:] != rh.shape[1:]:
                    raise YuzuError(
                        f"output {name!r} changed shape between batches ({r0.shape[1:]}, {rh.shape[1:]} vs "
                        f"{y0.shape[1:]}, {yh.shape[1:]})")
                r0[sl] = y0
                rh[sl] = yh
        assert results is not None
        return results
