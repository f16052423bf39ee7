"""Pass 5, verify: compare a converted model with the naive oracle on random sequences."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from . import seqio
from .load import ModelLike
from .oracle import naive_ism
from .runtime import IsmMetadata, make_session, run_ism


@dataclass
class OutputCheck:
    """Agreement of one output's ``y_hat`` with the naive oracle."""

    output: str
    max_abs_error: float
    max_abs_delta: float
    pearson: float

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / self.max_abs_delta if self.max_abs_delta > 0 else self.max_abs_error


@dataclass
class VerifyReport:
    checks: list[OutputCheck]
    naive_seconds: float
    converted_seconds: float
    sequences: int


def verify(original: ModelLike, converted: onnx.ModelProto, sequences: int = 2, seed: int = 0,
           providers=None) -> VerifyReport:
    """Run both ISMs on the same random one-hot sequences and measure their agreement.

    Returns
    -------
    VerifyReport
        Per output: max |y_hat - y_hat_naive|, max |y_hat_naive - y0| (the scale of the
        deltas) and Pearson r of the deltas; plus the time of each ISM.
    """
    meta = IsmMetadata.from_props({p.key: p.value for p in converted.metadata_props}, "converted model")
    X = seqio.random_one_hot(sequences, meta.length, seed, alphabet=meta.alphabet, layout=meta.layout)
    original_session = make_session(original if isinstance(original, onnx.ModelProto) else str(original), providers)
    t0 = time.perf_counter()
    expected = naive_ism(original_session, X, start=meta.start, end=meta.end,
                         layout=meta.layout)
    t1 = time.perf_counter()
    got = run_ism(converted, X, providers=providers)
    t2 = time.perf_counter()
    checks = []
    for name, (y0, y_hat), (r0, r_hat) in zip(meta.outputs, got, expected):
        r0_b = np.expand_dims(r0, (1, 2))
        delta_ref = (r_hat - r0_b).ravel()
        delta_got = (y_hat - np.expand_dims(y0, (1, 2))).ravel()
        pearson = float(np.corrcoef(delta_got, delta_ref)[0, 1]) if delta_ref.std() > 0 else float("nan")
        checks.append(OutputCheck(name, float(np.abs(y_hat - r_hat).max()), float(np.abs(delta_ref).max()), pearson))
    return VerifyReport(checks, t1 - t0, t2 - t1, sequences)


def verify_table(report: VerifyReport) -> str:
    """Format a :class:`VerifyReport` for the terminal."""
    lines = [f"verified against naive ISM on {report.sequences} random sequences:"]
    for c in report.checks:
        lines.append(f"  {c.output}: max |error| {c.max_abs_error:.3g} (relative to max |delta| "
                     f"{c.max_abs_delta:.3g}: {c.relative_error:.2g}), delta Pearson r {c.pearson:.7f}")
    speed = report.naive_seconds / report.converted_seconds if report.converted_seconds > 0 else float("inf")
    lines.append(f"  time: naive {report.naive_seconds:.2f} s, converted {report.converted_seconds:.2f} s "
                 f"({speed:.1f}x, including session start-up)")
    return "\n".join(lines)
