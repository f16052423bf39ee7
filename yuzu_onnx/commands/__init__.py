"""The ``yuzu-onnx`` subcommands, one module each (``add_parser(subparsers)`` and ``run(args)``).

:mod:`yuzu_onnx.cli` registers them; :mod:`.options` holds the option groups they share. No
module here imports :mod:`yuzu_onnx.cli`.
"""
