#!/usr/bin/env bash
# Every GPU figure issue 5 and issue 8 ask for, in one device call (about 15-25 min of device time).
#
# Here, before the call (the device's python3 has torch but not optuna, torch-pruning or pytest):
#   mkdir -p .whl/pylib .data/MNIST/raw .data/FashionMNIST/raw && cp ../shared/gpu-wheels/*.whl .whl/
#   cp -r .venv/lib/python3.11/site-packages/{_pytest,pytest,pluggy,iniconfig,packaging} .whl/pylib/
#   cp ../shared/data/MNIST/raw/*.gz .data/MNIST/raw/ && cp ../shared/data/FashionMNIST/raw/*.gz .data/FashionMNIST/raw/
# Then run this script on the device with carry [".whl", ".data"]; JSON lands in $OUT (or ./gpu_out).
set -euo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
export PYTHONPATH=$PWD/.site:$PWD/.whl/pylib:$PWD:${PYTHONPATH:-}
export GPED_DATA_ROOT=$PWD/.data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" || true

# GPU correctness first (CUDA graph step vs eager, models and distillation on the GPU).
python3 -m pytest -q -m cuda tests/test_core.py tests/test_cuda_graph.py > "$OUT/cuda_tests.txt" 2>&1 || true

B="python3 benchmarks/bench_distill.py --device cuda --iterations 20000 --repeats 3"
$B --chains 1,4,16 --lockstep 1,8 --json-out "$OUT/mlp.json" > /dev/null
$B --chains 1,4,16 --cuda-graph --no-naive --json-out "$OUT/mlp_graph.json" > /dev/null
$B --chains 1,16 --cuda-graph --tf32 --no-naive --json-out "$OUT/mlp_graph_tf32.json" > /dev/null
$B --arch cnn --chains 1,4 --json-out "$OUT/cnn.json" > /dev/null
$B --arch cnn --chains 1 --cuda-graph --no-naive --json-out "$OUT/cnn_graph.json" > /dev/null
python3 benchmarks/scaling.py --device cuda --iterations 20000 --markdown > "$OUT/scaling.txt"

# A >= 50-trial MNIST MLP study in batch mode: trials/hour, teacher vs trials, the front.
python3 benchmarks/bench_search.py studies/mnist_mlp.yaml --n-trials 50 --batch 8 \
  --set teacher.iterations=100000 > "$OUT/mnist_search.json"
