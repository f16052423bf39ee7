#!/bin/bash
# GPU checks for the `device` machine (see README, "GPU"). Stages:
#   check: exactness of every committed test model on ONNX Runtime's CUDA provider
#   bench: CUDA benchmark of the reference models (tools/benchmark.py --provider cuda)
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
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" | tee -a "$OUT/gpu.txt"
B="python3 -W ignore tools/benchmark.py --provider cuda"
for stage in "$@"; do case $stage in
  check) timeout 150 python3 -W ignore tools/cuda_check.py --json "$OUT/cuda_check.json" 2>&1 \
           | grep -v "return analyze" | tee "$OUT/cuda_check.log" ;;
  bench) timeout 300 $B --repeats 5 --models basset deepsea factorized_basset bpnet --batches 1 16 64 \
           --json "$OUT/bench_main.json" --markdown "$OUT/bench_main.md" 2>&1 | tee "$OUT/bench_main.log" | grep -v "^  " ;;
  bench2) timeout 90 $B --repeats 5 --models bpnet9 --batches 1 8 --json "$OUT/bench_bpnet9.json" \
           --markdown "$OUT/bench_bpnet9.md" 2>&1 | tail -4
          timeout 90 $B --repeats 5 --models chrombpnet --length 2114 --region 1000 --batches 1 4 \
           --json "$OUT/bench_chrom.json" --markdown "$OUT/bench_chrom.md" 2>&1 | tail -4 ;;
esac; done
