#!/bin/bash
# GPU checks for the `device` machine (see README, "GPU"). Stages:
#   check: exactness of every committed test model on ONNX Runtime's CUDA provider
#   bench: CUDA benchmark of the reference models (tools/benchmark.py --provider cuda)
#   bench2: BPNet-9 and ChromBPNet-like; session: ISMSession's batch cap on CUDA (BPNet-9)
# Expects .ort/ (git-ignored, carried): ort.tar.xz = onnxruntime-gpu 1.31.1 (cp312, CUDA 13)
# unpacked, and the onnx_graphsurgeon wheel. Results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/site
if [ ! -d /tmp/site/onnxruntime ]; then
  tar xJf .ort/ort.tar.xz -C /tmp/site || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .ort/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
SP=$(python3 -c "import site; print(site.getsitepackages()[0])")
export LD_LIBRARY_PATH=$(find "$SP/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u | tr '\n' ':')${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee -a "$OUT/bench.log"
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" | tee -a "$OUT/bench.log"
B="python3 -W ignore tools/benchmark.py --provider cuda --repeats 5"
bench() {  # one process per model: a CUDA failure in one cannot take the others down
  local name=$1; shift
  timeout 150 $B --json "$OUT/bench_$name.json" "$@" 2>&1 | grep -v "^\x1b" >> "$OUT/bench.log"
  grep "^| $name" "$OUT/bench.log" | tail -3
}
for stage in "$@"; do case $stage in
  check) timeout 150 python3 -W ignore tools/cuda_check.py ${ONLY:+--only $ONLY} 2>&1 \
           | grep -v "return analyze\|^.\[1;31m" | tee "$OUT/cuda_check.log" ;;
  bench) for m in basset deepsea factorized_basset bpnet; do bench $m --models $m --batches 1 16 64; done ;;
  session) timeout 200 python3 -W ignore tools/cuda_session_check.py 2>&1 | grep -v "^.\[" | tee "$OUT/session.log" ;;
  bench2) bench bpnet9 --models bpnet9 --batches 1 8
          bench chrombpnet --models chrombpnet --length 2114 --region 1000 --batches 1 4 ;;
esac; done
