"""Execution-provider lists that keep float32 arithmetic exact on GPUs.

ONNX Runtime's CUDA provider runs float32 Conv and MatMul in TF32 by default on Ampere and
later GPUs (10-bit mantissa). Naive ISM and the converted graph then round differently and
disagree by about 1e-3 of the effects (measured on an H100: 4-70x over the exactness bound on
every reference model, versus 0.03x with TF32 off), so every session this package creates asks
for full float32. Without TF32, cuDNN's heuristics for large float32 convolutions pick
algorithms asking for workspaces of 90-680 GB when ONNX Runtime allows "max workspace" (seen on
the H100 with the probe tensors of Basset and DeepSEA), so the workspace is kept bounded too.
"""
from __future__ import annotations

from collections.abc import Sequence

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: CUDA provider options of every session created by yuzu-onnx.
EXACT_CUDA_OPTIONS = {"use_tf32": "0", "cudnn_conv_use_max_workspace": "0"}

ProviderSpec = str | tuple[str, dict]

#: ``--provider`` / ``--providers`` choices of the CLI: CUDA falls back to the CPU
BY_NAME = {"cpu": [CPU], "cuda": [CUDA, CPU]}


def exact_providers(providers: Sequence[ProviderSpec] | None) -> list[ProviderSpec]:
    """Return ``providers`` (default: CPU only) with TF32 switched off for CUDA.

    Parameters
    ----------
    providers : sequence of str or (str, dict), optional
        ONNX Runtime provider names, or ``(name, options)`` pairs. Options given explicitly
        for CUDA are kept; ``use_tf32`` is added only where it is absent.

    Returns
    -------
    list
        A provider list for ``onnxruntime.InferenceSession``.
    """
    out: list[ProviderSpec] = []
    for spec in providers or [CPU]:
        name, options = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        if name == CUDA:
            out.append((name, {**EXACT_CUDA_OPTIONS, **options}))
        else:
            out.append(spec)
    return out
