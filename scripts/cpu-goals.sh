#!/usr/bin/env bash
# The measurements the CPU kernel goals are judged by (README "CPU kernels"), in one run on the
# machine at hand, every ratio side by side: GEMM squares and the MLP's shapes against OpenBLAS
# and PyTorch at every vector level this CPU has, the fused AMP passes against a copy, the MLP
# step against PyTorch fp32 / autocast bf16, MNIST epochs in fp32 / bf16 / fp16, and this build
# against an older one when OLD_CHECKOUT is given (built with npm install).
#   bash scripts/cpu-goals.sh [OLD_CHECKOUT]
# Writes bench/results/cpu-<best level>-<date>.{json,svg} and prints the tables. Needs the addon
# built (npm install) and, for the references, numpy and PyTorch (Debian: python3-torch).
set -euo pipefail
cd "$(dirname "$0")/.."
day=$(date -u +%F)
node dist/cli.js info
grep -m1 'model name' /proc/cpuinfo || true
levels=$(node -e "console.log(require('./dist').cpuIsa().available.filter((l) => l !== 'scalar').join(','))")
best=${levels%%,*}
out="bench/results/cpu-${best}-${day}.json"
node dist/cli.js bench gemm train amp --device cpu --sizes 512,1024,2048 --shapes mlp --isa "$levels" --json "$out"
echo
echo "MNIST, one epoch per precision (the default MLP, npm start's settings):"
for p in fp32 bf16 fp16; do
  node dist/cli.js train --device cpu --precision "$p" --epochs 1 --json --no-progress |
    node -e "let s='';process.stdin.on('data',(d)=>s+=d).on('end',()=>{const e=s.trim().split('\n').map(JSON.parse).find((l)=>l.event==='epoch');console.log('  $p', e.seconds.toFixed(1), 's,', Math.round(e.samplesPerSecond), 'samples/s, test accuracy', e.testAccuracy);});"
done
if [ $# -ge 1 ]; then
  echo
  node bench/compare_builds.js "$1" . --rounds 9
fi
echo "wrote $out"
