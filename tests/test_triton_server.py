"""A real Triton Inference Server loads the repository from ``yuzu-onnx triton`` and serves it.

For each backend below, one ``tritonserver`` is started on a repository holding four converted
models (one and two outputs, a channels-last input without Triton batching, a uint8 one-hot
input with a per-sequence scalar output), queried with ``tritonclient`` over HTTP and gRPC (a
batched request per model, and concurrent single-sequence requests that Triton's dynamic
batcher may combine), and every answer is compared with :class:`yuzu_onnx.ISMSession` on the
CPU provider. A fifth model, whose config.pbtxt was edited to disagree with its ONNX file, must
be refused at load.

Two backends run the ``platform: "onnxruntime_onnx"`` models, each a parametrization:

- ``onnxruntime``: Triton's own ONNX Runtime backend (``libtriton_onnxruntime.so``), found under
  ``$YUZU_TRITON_BACKEND_DIR`` or the server's ``backends`` folder. No package registry ships it
  (NVIDIA's NGC containers do), so it is skipped unless one is provided; README ("Serve with
  Triton") says how it was built and verified.
- ``standin``: ``tests/triton_onnxruntime_standin.py`` installed as a Python-based backend named
  ``onnxruntime`` (run by the server's Python backend). The repository loads unchanged and the
  server (config parsing and normalization, HTTP/gRPC front ends, dynamic batcher) is real; the
  check of the config against the ONNX model and the execution (ONNX Runtime in Python) are the
  stand-in's (see that file).

The server binary: ``$YUZU_TRITONSERVER``, else ``.venv/pytriton/pytriton/tritonserver/bin/
tritonserver`` (under ``sys.prefix``), else ``tritonserver`` on ``PATH``, else
``/opt/tritonserver/bin/tritonserver``. The nvidia-pytriton wheel bundles a real Triton 2.51.0
server with its Python backend; ``.ci/run`` unpacks it into ``.venv/pytriton`` (without its
Python dependencies) when it can. Without a server every test is skipped, saying why.

Answers are compared to float32 rounding (|difference| <= 1e-5 x max(1, max |ISMSession's
output|)), since the server's ONNX Runtime may be another version than Python's; the largest
difference per output is printed (``pytest -s``). Measured: 0 (bit for bit) with both backends.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

import yuzu_onnx
from yuzu_onnx.cli import save_model
from yuzu_onnx.seqio import random_one_hot
from yuzu_onnx.triton import write_triton_repository

from conftest import MODELS_DIR
from test_triton_check import convert_quietly, scalar_uint8_model

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install -e '.[dev]')")
from tritonclient.utils import InferenceServerException  # noqa: E402

STANDIN = Path(__file__).with_name("triton_onnxruntime_standin.py")

#: Triton model name -> committed source model (None: ``test_triton_check.scalar_uint8_model``).
MODELS = {
    "toynet": MODELS_DIR / "toynet_L80_torchscript.onnx",
    "bpnet9": MODELS_DIR / "bpnet9_L64_torchscript.onnx",
    "keras_nlc": MODELS_DIR / "keras_conv1d_L48_tf2onnx.onnx",
    "scalar_uint8": None,
}
#: max_batch_size of each model's config (0: Triton does not batch; the batch axis stays in dims).
MAX_BATCH = {"toynet": 8, "bpnet9": 8, "keras_nlc": 0, "scalar_uint8": 4}
STARTUP_S = 120


# ----------------------------------------------------------------------------- finding the server


def find_server() -> Path | None:
    """The ``tritonserver`` binary, or None."""
    candidates = [os.environ.get("YUZU_TRITONSERVER"),
                  Path(sys.prefix) / "pytriton" / "pytriton" / "tritonserver" / "bin" / "tritonserver",  # .ci/run's
                  shutil.which("tritonserver"), "/opt/tritonserver/bin/tritonserver"]
    return next((Path(c) for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


def _pytriton_libs(server: Path) -> Path | None:
    """The nvidia-pytriton wheel's library folder, when ``server`` is that wheel's binary
    (``site-packages/pytriton/tritonserver/bin/tritonserver``)."""
    libs = server.resolve().parents[3] / "nvidia_pytriton.libs" if len(server.resolve().parents) > 3 else None
    return libs if libs is not None and libs.is_dir() else None


def onnxruntime_backend_dir(server: Path, work: Path) -> tuple[Path | None, str]:
    """A backend directory holding Triton's own ONNX Runtime backend, or None and why not."""
    for d in (os.environ.get("YUZU_TRITON_BACKEND_DIR"), server.parent.parent / "backends"):
        if d and (Path(d) / "onnxruntime" / "libtriton_onnxruntime.so").is_file():
            return Path(d), ""
    return None, (f"Triton's ONNX Runtime backend (onnxruntime/libtriton_onnxruntime.so) is neither under "
                  f"$YUZU_TRITON_BACKEND_DIR nor beside {server}: no package registry ships it (NGC "
                  "containers do); README 'Serve with Triton' shows how to build it")


def standin_backend_dir(server: Path, work: Path) -> tuple[Path | None, str]:
    """A backend directory with the server's Python backend and the stand-in as the
    Python-based backend ``onnxruntime``, or None and why not."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    root = server.parent.parent
    python_be = root / "backends" / "python"
    stub = next((p for p in (root / "python_backend_stubs" / version / "triton_python_backend_stub",
                             python_be / "triton_python_backend_stub") if p.is_file()), None)
    if not (python_be / "libtriton_python.so").is_file() or stub is None:
        return None, f"{server} has no Python backend with a stub for Python {version}"
    if shutil.which("ldd"):
        missing = [line.split()[0] for line in subprocess.run(["ldd", str(stub)], capture_output=True,
                                                              text=True).stdout.splitlines() if "not found" in line]
        if missing:
            return None, f"the Python backend stub for Python {version} needs {missing} (e.g. apt-get install libpython{version})"
    backends = work / "backends"
    (backends / "python").mkdir(parents=True)
    (backends / "onnxruntime").mkdir()
    # copies, not links: Triton refuses a backend library whose real path leaves its folder
    for src in (python_be / "libtriton_python.so", python_be / "triton_python_backend_utils.py", stub):
        shutil.copy2(src, backends / "python" / src.name)
    shutil.copy2(STANDIN, backends / "onnxruntime" / "model.py")
    return backends, ""


BACKENDS = {"onnxruntime": onnxruntime_backend_dir, "standin": standin_backend_dir}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _server_env(server: Path, work: Path) -> dict:
    """The server's environment. The nvidia-pytriton wheel's server carries its core library as
    ``libtritonserver-<hash>.so`` in ``nvidia_pytriton.libs``, while backends link
    ``libtritonserver.so``: a link under that name and that folder go on the library path. The
    stand-in reads this interpreter's import paths from ``YUZU_STANDIN_SYS_PATH``."""
    env = dict(os.environ)
    paths = [env.get("LD_LIBRARY_PATH")]
    libs = _pytriton_libs(server)
    core = sorted(libs.glob("libtritonserver-*.so")) if libs else []
    if core:
        (work / "lib").mkdir()
        (work / "lib" / "libtritonserver.so").symlink_to(core[0])
        paths = [str(work / "lib"), str(libs), *paths]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env["YUZU_STANDIN_SYS_PATH"] = os.pathsep.join([*sorted(site), *(p for p in sys.path if p and p not in site)])
    return env


@pytest.fixture(scope="module", params=list(BACKENDS))
def triton(request, tmp_path_factory):
    """Convert the models, write the repository, start the server with one backend; yields
    ``(http_url, grpc_url, {name: converted path}, server version)``."""
    server = find_server()
    if server is None:
        pytest.skip("no tritonserver binary ($YUZU_TRITONSERVER, .venv/pytriton, PATH, /opt/tritonserver/bin); "
                    "`bash .ci/run` unpacks the one in the nvidia-pytriton wheel (pip install --no-deps --target "
                    ".venv/pytriton nvidia-pytriton==0.7.0) where PyPI and the platform allow")
    work = tmp_path_factory.mktemp(f"triton_{request.param}")
    backend_dir, why = BACKENDS[request.param](server, work)
    if backend_dir is None:
        pytest.skip(why)
    repo = work / "repo"
    converted = {}
    for name, src in MODELS.items():
        path = work / f"{name}.ism.onnx"
        save_model(convert_quietly(src if src is not None else scalar_uint8_model()), path)
        write_triton_repository(path, repo, name=name, max_batch_size=MAX_BATCH[name])
        converted[name] = path
    # a copy of toynet whose config does not match its model (loaded by the test, expecting a refusal)
    write_triton_repository(converted["toynet"], repo, name="mismatch")
    config = repo / "mismatch" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 2, 80 ]", "dims: [ 2, 81 ]", 1))
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = work / "tritonserver.log"
    cmd = [str(server), f"--model-repository={repo}", f"--backend-directory={backend_dir}",
           f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
           "--strict-model-config=true", "--exit-timeout-secs=5", "--model-control-mode=explicit",
           *(f"--load-model={name}" for name in MODELS)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_server_env(server, work),
                                cwd=work)
    url = f"127.0.0.1:{http_port}"
    client = httpclient.InferenceServerClient(url)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"tritonserver exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"tritonserver not ready after {STARTUP_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.25)
        yield url, f"127.0.0.1:{grpc_port}", converted, client.get_server_metadata()["version"]
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- requests


_TRITON_DTYPE = {np.float32: "FP32", np.uint8: "UINT8"}


def _input(name: str, session: yuzu_onnx.ISMSession, n: int, seed: int) -> np.ndarray:
    dtype = np.uint8 if name == "scalar_uint8" else np.float32
    return random_one_hot(n, session.length, seed=seed, layout=session.layout, dtype=dtype)


def _expected(session: yuzu_onnx.ISMSession, X: np.ndarray) -> dict[str, np.ndarray]:
    """ISMSession's results by graph output name: each original output y and its y_ism."""
    ism_names = session.metadata.outputs  # original output name -> ISM output name
    expected = {}
    for y, (y0, y_hat) in zip(session.output_names, session.run(X), strict=True):
        expected[y], expected[ism_names[y]] = y0, y_hat
    return expected


def _infer(module, url: str, name: str, input_name: str, X: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """One inference request with ``tritonclient.http`` or ``tritonclient.grpc`` (``module``)."""
    client = module.InferenceServerClient(url)
    try:
        inp = module.InferInput(input_name, list(X.shape), _TRITON_DTYPE[X.dtype.type])
        inp.set_data_from_numpy(X)
        kwargs = {"binary_data": True} if module is httpclient else {}
        result = client.infer(name, [inp], outputs=[module.InferRequestedOutput(o, **kwargs) for o in outputs])
        return {o: result.as_numpy(o) for o in outputs}
    finally:
        client.close()


def _assert_close(got: np.ndarray, want: np.ndarray, what: str) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    tol = 1e-5 * max(1.0, float(np.max(np.abs(want))) if want.size else 0.0)
    assert diff <= tol, f"{what}: max |Triton - ISMSession| = {diff:.3g} > {tol:.3g}"
    return diff


@pytest.mark.parametrize("name", list(MODELS))
def test_triton_serves_the_converted_model(triton, name):
    url, _, converted, version = triton
    session = yuzu_onnx.ISMSession(converted[name], providers=["CPUExecutionProvider"])
    client = httpclient.InferenceServerClient(url)
    try:
        assert client.is_model_ready(name), client.get_model_repository_index()
        config = client.get_model_config(name)
    finally:
        client.close()
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == MAX_BATCH[name]
    outputs = [o.name for o in session.session.get_outputs()]
    assert [o["name"] for o in config["output"]] == outputs

    X = _input(name, session, 3, seed=11)  # one request holding three sequences
    want = _expected(session, X)
    got = _infer(httpclient, url, name, session.input_name, X, outputs)
    for o in config["output"]:
        if "reshape" in o and o["reshape"].get("shape", []) == []:
            # a per-sequence scalar: Triton's dims [1] (reshaped to [] for the model) come back as (N, 1)
            assert got[o["name"]].shape == (len(X), 1)
            got[o["name"]] = got[o["name"]].reshape(len(X))
    diffs = {o: _assert_close(got[o], want[o], f"{name}/{o} (HTTP, batch of 3)") for o in outputs}
    print(f"Triton {version}, {name}: max |Triton - ISMSession| per output {diffs}")


def test_triton_dynamic_batching_and_grpc(triton):
    """Concurrent single-sequence requests over gRPC and HTTP (which the dynamic batcher may
    combine) each get the answer for their own sequence."""
    grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient's gRPC client needs grpcio")
    url, grpc_url, converted, _ = triton
    name = "bpnet9"
    session = yuzu_onnx.ISMSession(converted[name], providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.session.get_outputs()]
    X = _input(name, session, 8, seed=12)
    want = _expected(session, X)
    jobs = [(grpcclient, grpc_url) if i % 2 else (httpclient, url) for i in range(len(X))]

    def one(i):
        module, address = jobs[i]
        return _infer(module, address, name, session.input_name, X[i:i + 1], outputs)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(one, range(len(X))))
    for i, got in enumerate(results):
        for o in outputs:
            _assert_close(got[o], want[o][i:i + 1], f"{name}/{o} (sequence {i}, {jobs[i][0].__name__})")


def test_triton_refuses_a_config_that_does_not_match_the_model(triton):
    """The backend checks config.pbtxt against the ONNX model: an output dim changed by hand
    (y: [2, 80] -> [2, 81]) makes the load fail, naming the tensor."""
    url = triton[0]
    client = httpclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException) as err:
            client.load_model("mismatch")
        assert not client.is_model_ready("mismatch")
    finally:
        client.close()
    message = str(err.value)
    assert "81" in message and ("tensor 'y'" in message or "output y" in message), message
    print(f"load refused: {message}")
