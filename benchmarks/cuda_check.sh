#!/usr/bin/env bash
# Everything issue 6 asks of a CUDA machine, in one call (a lent GPU machine gives minutes, not hours):
#   1. the torch conformance cases with every tensor on the GPU (HF_OPTIM_TORCH_DEVICE=cuda);
#   2. the CUDA benchmark (benchmarks/cuda.py: 1B and 100M parameters) -> RESULTS_CUDA.md;
#   3. the torch package's tests on that machine's torch (a check of the supported torch range; on that machine
#      tests/test_cuda_graphs.py also captures real CUDA graphs and compares their replays with eager steps).
# Runs from a source checkout with the machine's own python3 and torch (no install): the packages come from
# PYTHONPATH. Writes logs and reports to $OUT (default out/cuda). Usage: bash benchmarks/cuda_check.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/cuda}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/packages/spec/src:$PWD/packages/torch/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

echo "== conformance on CUDA"
select=(conformance -k "torch:: and not torch-vs-tf")
HF_OPTIM_TORCH_DEVICE=cuda HF_OPTIM_CONFORMANCE_REPORT="$OUT/conformance_cuda.md" \
  timeout 90 python3 -m pytest -q -p no:cacheprovider "${select[@]}" >"$OUT/conformance.log" 2>&1
conformance=$?
tail -n 3 "$OUT/conformance.log"
if [ "$conformance" -ne 0 ]; then  # tell numeric failures from this torch's warnings (errors under our config)
  echo "== conformance again, warnings not errors"
  grep -E "^(FAILED|ERROR)" "$OUT/conformance.log" | head -n 20
  HF_OPTIM_TORCH_DEVICE=cuda timeout 90 python3 -m pytest -q -p no:cacheprovider -o filterwarnings= "${select[@]}" \
    >"$OUT/conformance_nowarn.log" 2>&1
  tail -n 3 "$OUT/conformance_nowarn.log"
fi

echo "== benchmark"
timeout 240 python3 benchmarks/cuda.py --out "$OUT/RESULTS_CUDA.md" 2>&1 | tee "$OUT/bench.log" | grep -v "^  "
bench=$?

echo "== torch package tests on this torch (CPU tensors)"
timeout 100 python3 -m pytest -q -p no:cacheprovider packages/torch/tests --ignore=packages/torch/tests/test_compile.py \
  >"$OUT/torch_tests.log" 2>&1
tests=$?
echo "== torch.compile tests on this torch"
timeout 90 python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=line packages/torch/tests/test_compile.py \
  >"$OUT/torch_compile_tests.log" 2>&1
grep -E "^(FAILED|ERROR|E  )|^/.*Error" "$OUT/torch_compile_tests.log" | head -n 12
tail -n 1 "$OUT/torch_compile_tests.log"
grep -E "^(FAILED|ERROR)" "$OUT/torch_tests.log" | head -n 20
tail -n 1 "$OUT/torch_tests.log"
[ -f "$OUT/RESULTS_CUDA.md" ] && sed -n '/^## Targets/,/^## torch/p' "$OUT/RESULTS_CUDA.md"
echo "exit codes: conformance $conformance, bench $bench, torch tests $tests"
[ "$conformance" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$tests" -eq 0 ]
