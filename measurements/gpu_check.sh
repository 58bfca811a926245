#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU (about 5-8 minutes on one H200):
#   1. the kernel table (measure_kernels) on cuda in float32 and float64 at n = 1e6 and 1e7;
#   2. the smoke suite with --device cuda, and the same suite on the CPU;
#   3. (and 4., the online-em-memory experiment of the paper suite, --quick) equality of the two runs: iteration-0 metrics within 1e-4 (relative; the CUDA device
#      computes in float32 by default) and final metrics within 1e-2 of max(1, |cpu value|),
#      with the same statuses (measurements/compare_devices.py).
# Usage: bash measurements/gpu_check.sh [OUT_DIR]   (run from the repository root)
set -euo pipefail
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for dtype in float32 float64; do
  for n in 1000000 10000000; do
    echo "== measure_kernels cuda $dtype n=$n"
    timeout 150 python -m measurements.measure_kernels --device cuda --dtype "$dtype" --n "$n" \
      --repeat 3 | tee "$out/kernels-$dtype-$n.md"
  done
done
echo "== smoke suite on cuda and cpu"
timeout 200 moebench run suites/smoke.yaml --device cuda --seeds 1 --out "$out/cuda"
timeout 200 moebench run suites/smoke.yaml --device cpu --seeds 1 --out "$out/cpu"
python -m measurements.compare_devices "$out/cpu/smoke" "$out/cuda/smoke" --rtol 1e-4 \
  --final-rtol 1e-2 | tee "$out/compare.txt"
echo "== online-em (issue 22) on cuda and cpu: the same code path, batches moved to the device"
timeout 200 moebench run suites/paper.yaml -e online-em-memory --quick --device cuda --out "$out/cuda-online"
timeout 200 moebench run suites/paper.yaml -e online-em-memory --quick --device cpu --out "$out/cpu-online"
python -m measurements.compare_devices "$out/cpu-online/paper" "$out/cuda-online/paper" --rtol 1e-4 \
  --final-rtol 1e-2 | tee "$out/compare-online.txt"
echo "results in $out"
