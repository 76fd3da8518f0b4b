#!/usr/bin/env bash
# The ONE prepared GPU run (issue: CUDA end to end). On a lent GPU machine, after `npm install`
# and ../shared/device/pack.sh here:
#   device run, carry [".devpack"], timeout_s 540:
#   bash .devpack/run.sh bash scripts/gpu-check.sh
# It builds nothing there. Everything goes under $OUT (logs, jest JSON, bench JSON, NCCL smoke); keep it < 5 min.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
summary="$out/summary.txt"; : > "$summary"
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; } > "$out/gpu.txt" 2>&1
node dist/cli.js info --json > "$out/info.json" 2>&1
# 1. every jest suite; the CUDA cases run instead of skipping
timeout 200 node node_modules/.bin/jest --runInBand --json --outputFile="$out/jest.json" > "$out/jest.log" 2>&1
echo "jest rc=$?" >> "$summary"
grep -E "^jest: " "$out/jest.log" >> "$summary"
# 2. the native CUDA cases again with a synchronize after every launch (MIXPREC_CUDA_SYNC=1)
MIXPREC_CUDA_SYNC=1 timeout 60 node node_modules/.bin/jest --runInBand -t '\[cuda\]' test/nn_ops.test.ts test/gemm.test.ts test/attention_native.test.ts \
  > "$out/jest-sync.log" 2>&1
echo "jest MIXPREC_CUDA_SYNC=1 rc=$?" >> "$summary"
grep -E "^jest: " "$out/jest-sync.log" >> "$summary"
# 3. memcheck over the CUDA test cases only (describe titles carry "[cuda]")
timeout 120 compute-sanitizer --tool memcheck --target-processes all --print-limit 20 \
  node node_modules/.bin/jest --runInBand -t '\[cuda\]' test/gemm.test.ts test/amp_step.test.ts test/nn_ops.test.ts test/layers.test.ts test/ops.test.ts test/autograd.test.ts test/attention_native.test.ts test/gpt.test.ts \
  > "$out/memcheck.log" 2>&1
echo "memcheck rc=$?" >> "$summary"
grep -E "ERROR SUMMARY" "$out/memcheck.log" >> "$summary"
# 4. the bench on the GPU, with cuBLAS / PyTorch AMP measured in the same run where torch imports
timeout 130 node dist/cli.js bench gemm amp train gpt tape --device cuda --sizes 1024,2048,4096,8192 \
  --widths 4096,4096,4096,4096 --batch 512 --json "$out/bench.json" > "$out/bench.log" 2>&1
echo "bench rc=$?" >> "$summary"
# 5. NCCL on one GPU (a world of one rank): libnccl from the machine, else from PyTorch's wheel
nccl=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2/ {print $NF; exit}')
[ -n "$nccl" ] || nccl=$(python3 -c "import glob, site, os; c = [p for d in site.getsitepackages() for p in glob.glob(os.path.join(d, 'nvidia', 'nccl', 'lib', 'libnccl.so*'))]; print(c[0] if c else '')" 2>/dev/null)
MIXPREC_NCCL_LIBRARY="$nccl" timeout 60 node scripts/nccl-smoke.js > "$out/nccl.json" 2> "$out/nccl.log"
echo "nccl rc=$? (library: ${nccl:-none found})" >> "$summary"
cat "$summary"; tail -n 40 "$out/bench.log"
