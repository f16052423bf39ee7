"""Export a converted ISM model as a Triton Inference Server model repository entry.

:func:`write_triton_repository` writes ``REPO/NAME/config.pbtxt`` (ONNX Runtime backend) and
``REPO/NAME/1/model.onnx`` (plus the model's external data file, if any). The model directory
is built next to its destination and renamed into place, so a failure never leaves a
half-written model behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

import onnx
from onnx import TensorProto

from .errors import ModelLoadError, UnsupportedModelError
from .runtime import IsmMetadata

PathLike = Union[str, os.PathLike]

#: ONNX element type -> Triton data type.
TRITON_TYPES = {
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.BFLOAT16: "TYPE_BF16",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32",
    TensorProto.UINT64: "TYPE_UINT64",
    TensorProto.BOOL: "TYPE_BOOL",
    TensorProto.STRING: "TYPE_STRING",
}

INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")


def default_name(model_path: PathLike) -> str:
    """``toynet.ism.onnx`` -> ``toynet`` (the file stem without ``.onnx`` and ``.ism``)."""
    name = Path(model_path).name
    for suffix in (".onnx", ".ism"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_entry(value: onnx.ValueInfoProto, batched: bool, where: str) -> list[str]:
    """The config.pbtxt lines of one input or output."""
    tt = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise UnsupportedModelError(f"{where}: {value.name!r} is not a tensor; Triton's ONNX backend needs tensors")
    if tt.elem_type not in TRITON_TYPES:
        raise UnsupportedModelError(f"{where}: {value.name!r} has ONNX element type "
                                    f"{TensorProto.DataType.Name(tt.elem_type)}, which Triton does not support")
    if not tt.HasField("shape"):
        raise UnsupportedModelError(f"{where}: {value.name!r} has no static shape; Triton needs its dims")
    dims = []
    for axis, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif axis == 0:
            dims.append(-1)  # the batch dim
        else:
            sym = d.dim_param or "?"
            raise UnsupportedModelError(
                f"{where}: {value.name!r} has a symbolic dim {sym!r} at axis {axis}; Triton needs fixed "
                "non-batch dims (convert a model whose sequence length and output shapes are fixed)")
    if batched:
        if not dims:
            raise UnsupportedModelError(f"{where}: {value.name!r} is a scalar, so it has no batch dim; "
                                        "use max_batch_size=0")
        dims = dims[1:]
    lines = ["  {", f"    name: {_quote(value.name)}", f"    data_type: {TRITON_TYPES[tt.elem_type]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:  # Triton needs at least one dim: present a per-sequence scalar as [1]
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    lines.append("  }")
    return lines


def triton_config(model: onnx.ModelProto, name: str, max_batch_size: int = 8,
                  dynamic_batching: bool = True, instance_kind: str = "KIND_AUTO",
                  where: str = "model") -> str:
    """The text of a Triton ``config.pbtxt`` for ``model`` (ONNX Runtime backend)."""
    batched = max_batch_size > 0
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    lines = [f"name: {_quote(name)}", 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size}"]
    for section, values in (("input", inputs), ("output", list(model.graph.output))):
        lines.append(f"{section} [")
        entries = [_tensor_entry(v, batched, where) for v in values]
        for i, entry in enumerate(entries):
            if i < len(entries) - 1:
                entry[-1] += ","
            lines += entry
        lines.append("]")
    lines += ["instance_group [", "  {", "    count: 1", f"    kind: {instance_kind}", "  }", "]"]
    if dynamic_batching and batched:
        lines.append("dynamic_batching {}")
    return "\n".join(lines) + "\n"


def _external_files(model: onnx.ModelProto) -> list[str]:
    """Relative locations of the external data files the model's tensors refer to."""
    # Converted graphs keep weights in initializers (constants are folded into them on load).
    files = []
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc and loc not in files:
                files.append(loc)
    return files


def write_triton_repository(model_path: PathLike, repo_dir: PathLike, name: str | None = None,
                            max_batch_size: int = 8, dynamic_batching: bool = True,
                            instance_kind: str = "KIND_AUTO", overwrite: bool = False) -> Path:
    """Write a converted model into a Triton model repository.

    Parameters
    ----------
    model_path : str or os.PathLike
        A model written by ``yuzu-onnx convert`` (it must carry yuzu-onnx metadata).
    repo_dir : str or os.PathLike
        The Triton model repository (created if missing).
    name : str, optional
        Triton model name (default: the file stem without ``.onnx`` and ``.ism``).
    max_batch_size : int
        Triton's ``max_batch_size``; > 0 makes the first axis of every input and output the
        batch axis, left out of the dims. 0 disables Triton batching (full dims, batch -1).
    dynamic_batching : bool
        Write a ``dynamic_batching {}`` block (only when ``max_batch_size > 0``).
    instance_kind : {"KIND_AUTO", "KIND_CPU", "KIND_GPU"}
        ``kind`` of the instance group.
    overwrite : bool
        Replace an existing ``repo_dir/NAME`` (default: refuse).

    Returns
    -------
    Path
        The model directory ``repo_dir/NAME``.
    """
    model_path = Path(model_path)
    repo_dir = Path(repo_dir)
    if max_batch_size < 0:
        raise ValueError(f"max_batch_size must be >= 0, got {max_batch_size}")
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind must be one of {INSTANCE_KINDS}, got {instance_kind!r}")
    name = default_name(model_path) if name is None else name
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"invalid Triton model name {name!r} (must be a plain directory name)")
    if not model_path.is_file():
        raise ModelLoadError(f"{model_path}: no such model file")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{model_path}: cannot read as ONNX: {exc}") from exc
    IsmMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(model_path))
    config = triton_config(model, name, max_batch_size, dynamic_batching, instance_kind, str(model_path))
    external = _external_files(model)
    for loc in external:
        src = model_path.parent / loc
        if not src.is_file() or Path(loc).is_absolute() or ".." in Path(loc).parts:
            raise ModelLoadError(f"{model_path}: external data file {loc!r} is missing or outside the model's folder")

    dest = repo_dir / name
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists (pass overwrite=True / --force to replace it)")
    repo_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo_dir))
    old = None
    try:
        version = tmp / "1"
        version.mkdir()
        shutil.copyfile(model_path, version / "model.onnx")
        for loc in external:
            target = version / loc
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_path.parent / loc, target)
        (tmp / "config.pbtxt").write_text(config)
        umask = os.umask(0)
        os.umask(umask)
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            os.chmod(d, 0o777 & ~umask)  # mkdtemp makes an owner-only folder
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=repo_dir))
            os.replace(dest, old / name)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / name).exists() and not dest.exists():
            os.replace(old / name, dest)  # put the previous model back
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest
