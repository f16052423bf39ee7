"""``yuzu-onnx triton``: export a converted model as a Triton Inference Server model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..triton import INSTANCE_KINDS, write_triton_repository
from . import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``triton`` subcommand to the ``yuzu-onnx`` parser."""
    p = subparsers.add_parser(
        "triton", help="write a converted model into a Triton model repository",
        description="Write MODEL (a model produced by `yuzu-onnx convert`) into the Triton Inference "
                    "Server model repository REPO_DIR: REPO_DIR/NAME/config.pbtxt (ONNX Runtime "
                    "backend, inputs and outputs with their data types and dims, the batch axis left "
                    "out as Triton expects when --max-batch-size > 0) and REPO_DIR/NAME/1/model.onnx "
                    "(with its external data file, if any). The model folder is written atomically.")
    options.add_model_argument(p, help="the converted ISM model (e.g. model.ism.onnx)")
    p.add_argument("repo_dir", type=Path, metavar="REPO_DIR", help="the Triton model repository (created if missing)")
    p.add_argument("--name", help="Triton model name (default: the file name without .ism.onnx)")
    p.add_argument("--max-batch-size", type=int, default=8, metavar="N",
                   help="Triton max_batch_size; 0 disables Triton batching and keeps the batch axis "
                        "in the dims (default 8)")
    p.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                   help="do not enable Triton's dynamic batcher (enabled by default)")
    p.add_argument("--instance-kind", choices=INSTANCE_KINDS, default="KIND_AUTO",
                   help="where Triton runs the model instances (default KIND_AUTO)")
    p.add_argument("--force", action="store_true", help="replace an existing REPO_DIR/NAME")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``triton`` subcommand: write the model folder and list the files written."""
    dest = write_triton_repository(args.model, args.repo_dir, name=args.name,
                                   max_batch_size=args.max_batch_size,
                                   dynamic_batching=args.dynamic_batching,
                                   instance_kind=args.instance_kind, overwrite=args.force)
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        print(f"wrote {path}")
    return 0
