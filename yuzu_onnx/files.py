"""Writing output files atomically: a temporary file next to the target, renamed on success."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import onnx

# Larger models must be written with their weights in a side file (protobuf's 2 GB limit).
_PROTO_LIMIT = 2 ** 31 - 2 ** 20


def temporary_path(path: Path, suffix: str = ".tmp") -> str:
    """Create an empty hidden temporary file next to ``path`` (same file system, so the final
    rename is atomic) and return its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


def publish(tmp: str, path: Path) -> None:
    """Give ``tmp`` the permissions of a normally created file and move it to ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files
    os.replace(tmp, path)


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` and move the result to ``path``; nothing is left behind on failure."""
    tmp = temporary_path(path)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` atomically: nothing is left at ``path`` if writing fails.

    A model over protobuf's 2 GB limit is written with its weights in one side file,
    ``<path name>.data`` next to it.
    """
    import onnx

    path = Path(path)
    if model.ByteSize() > _PROTO_LIMIT:
        write_atomic(path, lambda tmp: onnx.save_model(model, tmp, save_as_external_data=True,
                                                       all_tensors_to_one_file=True, location=f"{path.name}.data"))
    else:
        write_atomic(path, lambda tmp: onnx.save_model(model, tmp))
