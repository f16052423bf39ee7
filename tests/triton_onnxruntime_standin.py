"""A stand-in for Triton's ONNX Runtime backend, as a Python-based Triton backend.

Triton's own ONNX Runtime backend (``libtriton_onnxruntime.so``) ships only in NVIDIA's NGC
containers; no package registry carries it. ``tests/test_triton_server.py`` copies this file to
``BACKEND_DIR/onnxruntime/model.py``: a real Triton server that finds no
``libtriton_onnxruntime.so`` there runs it through its Python backend instead, for the models
whose config says ``platform: "onnxruntime_onnx"`` (Triton's "Python-based backends"). So the
repository written by ``yuzu-onnx triton`` loads unchanged: Triton's own config parsing and
normalization, its HTTP/gRPC front ends and its dynamic batcher are the real ones. This file
does what the real backend would: it checks the config against the model (names, data types,
dims, batch axis; a mismatch refuses the load), runs ``VERSION/model.onnx`` with ONNX Runtime
(Python, CPU), and returns the outputs in the config's dims (``reshape``).

This is test scaffolding, not part of yuzu-onnx: it runs inside Triton's Python backend stub.
"""

import json
import os
import sys

# The stub's embedded Python ignores PYTHONPATH; the test passes its interpreter's paths here.
sys.path[:0] = [p for p in os.environ.get("YUZU_STANDIN_SYS_PATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

#: ONNX Runtime type string -> Triton data type.
ORT_TO_TRITON = {
    "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64",
    "tensor(int8)": "TYPE_INT8", "tensor(int16)": "TYPE_INT16", "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64", "tensor(uint8)": "TYPE_UINT8", "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32", "tensor(uint64)": "TYPE_UINT64", "tensor(bool)": "TYPE_BOOL",
}


def _check(entries, values, batched, what):
    """Raise unless the config's inputs or outputs match the model's (as the real backend does)."""
    by_name = {v.name: v for v in values}
    if sorted(e["name"] for e in entries) != sorted(by_name):
        raise pb_utils.TritonModelException(
            f"config {what}s {sorted(e['name'] for e in entries)} != model {what}s {sorted(by_name)}")
    for e in entries:
        v = by_name[e["name"]]
        if ORT_TO_TRITON.get(v.type) != e["data_type"]:
            raise pb_utils.TritonModelException(f"{what} {v.name}: config {e['data_type']}, model {v.type}")
        model_dims = [d if isinstance(d, int) else -1 for d in v.shape]
        if batched:
            if not model_dims or model_dims[0] != -1:
                raise pb_utils.TritonModelException(f"{what} {v.name}: max_batch_size > 0 but the model's "
                                                    f"first dim is {model_dims[:1]}, not a batch dim")
            model_dims = model_dims[1:]
        dims = [int(d) for d in (e["reshape"].get("shape", []) if "reshape" in e else e["dims"])]
        if dims != model_dims:
            raise pb_utils.TritonModelException(f"{what} {v.name}: config dims {dims} != model dims {model_dims}")


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        filename = self.config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        _check(self.config["input"], self.session.get_inputs(), self.batched, "input")
        _check(self.config["output"], self.session.get_outputs(), self.batched, "output")
        self.inputs = [(e["name"], [int(d) for d in e["reshape"].get("shape", [])] if "reshape" in e else None)
                       for e in self.config["input"]]
        self.outputs = [(e["name"], [int(d) for d in e["dims"]]) for e in self.config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {}
            for name, reshape in self.inputs:
                # DLPack both ways: the stub's pybind11 numpy helpers predate NumPy 2's array layout
                x = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))
                if reshape is not None:
                    x = x.reshape(x.shape[:1] + tuple(reshape) if self.batched else reshape)
                feeds[name] = np.ascontiguousarray(x)
            results = self.session.run([n for n, _ in self.outputs], feeds)
            batch = [len(next(iter(feeds.values())))] if self.batched else []
            tensors = [pb_utils.Tensor.from_dlpack(n, np.ascontiguousarray(r).reshape(batch + dims if self.batched
                                                                                         else r.shape))
                       for (n, dims), r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
