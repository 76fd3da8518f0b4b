#!/usr/bin/env bash
# Static throughput of the GEMM micro-kernels' inner loops under LLVM's scheduling models
# (llvm-mca), for CPUs this machine may not be: compiles native/cpu/gemm*.cpp to assembly with the
# addon's flags, takes each kernel's hottest loop (the backward branch with the most FMAs) and
# prints cycles per iteration and FLOPs per cycle per model. A static check, not a measurement:
# it says whether a loop is FMA-bound or starved by loads / shuffles / spills, and nothing about
# caches, packing or threads. Caveats of the models (LLVM 19): znver5 reuses znver4's model, which
# runs 512-bit ops double-pumped (real Zen 5 has full-width 512-bit FMA pipes, twice the FLOPs per
# cycle); the vdpbf16ps costs are the model's, not measured.
#   bash scripts/mca-kernels.sh            (Debian: apt-get install llvm-19)
set -euo pipefail
cd "$(dirname "$0")/.."
mca=$(command -v llvm-mca-19 || ls /usr/lib/llvm-*/bin/llvm-mca 2>/dev/null | sort -V | tail -1 || command -v llvm-mca || true)
[ -n "$mca" ] || { echo "llvm-mca not found (Debian: apt-get install llvm-19)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for src in gemm gemm_avx512; do
  g++ -O3 -DNDEBUG -fPIC -ffp-contract=off -fno-math-errno -std=gnu++17 -I/usr/include/node \
    -Inode_modules/node-addon-api -S -o "$tmp/$src.s" "native/cpu/$src.cpp"
done

# The loop of function $2 in $1 that holds the most FMA instructions, as llvm-mca input.
hottest_loop() {
  awk -v fn="$2:" '
    $0 == fn { on = 1; n = 0; next }
    on && /\.cfi_endproc/ { on = 0 }
    on {
      line[++n] = $0
      if ($0 ~ /^\.L[0-9]+:/) { sub(":", "", $1); at[$1] = n }
      if ($1 ~ /^j/ && ($2 in at)) {
        fmas = 0
        for (i = at[$2]; i <= n; ++i) if (line[i] ~ /vfmadd|vdpbf16ps/) ++fmas
        if (fmas > best) { best = fmas; from = at[$2]; to = n }
      }
    }
    END { for (i = from; i <= to; ++i) if (line[i] !~ /^\s*\.(p2align|cfi)/) print line[i] }' "$1"
}

printf '%-18s %-15s %6s %8s %10s %12s  %s\n' kernel model instrs FMAs cycles/iter FLOP/cycle bottleneck
while read -r name file fn models; do
  hottest_loop "$tmp/$file.s" "$fn" > "$tmp/$name.s"
  # A renamed kernel would otherwise give an empty loop and a table of zeros.
  grep -q -E 'vfmadd|vdpbf16ps' "$tmp/$name.s" || { echo "$name: no FMA loop in $fn (renamed? update KERNELS)" >&2; exit 1; }
  # FLOPs per FMA: 2 per lane; vdpbf16ps does 2 multiply-adds per FP32 lane.
  flops=$(awk '/vfmadd[0-9]*ps.*%ymm/ { f += 16 } /vfmadd[0-9]*ps.*%zmm/ { f += 32 } /vdpbf16ps.*%zmm/ { f += 64 } END { print f + 0 }' "$tmp/$name.s")
  fmas=$(grep -c -E 'vfmadd|vdpbf16ps' "$tmp/$name.s")
  for model in ${models//,/ }; do
    report=$("$mca" -mtriple=x86_64 -mcpu="$model" -iterations=400 -bottleneck-analysis "$tmp/$name.s" 2>&1)
    instrs=$(awk '/^Instructions:/ { print $2 / 400; exit }' <<< "$report")
    cycles=$(awk '/^Total Cycles:/ { print $3 / 400; exit }' <<< "$report")
    top=$(awk '/^  - [A-Za-z]/ { gsub(/[\[\]%]/, ""); if ($3 + 0 > best) { best = $3 + 0; name = $2 } } END { print name ? name " " best "%" : "none" }' <<< "$report")
    printf '%-18s %-15s %6s %8s %10.1f %12.1f  %s\n' "$name" "$model" "$instrs" "$fmas" "$cycles" "$(awk -v f="$flops" -v c="$cycles" 'BEGIN { print f / c }')" "$top"
  done
done <<'KERNELS'
avx2-fp32-6x16 gemm _ZN2mp12_GLOBAL__N_115microKernelAvx2ElPKfS2_Pflb znver3,znver4,znver5
avx512-fp32-14x32 gemm_avx512 _ZN2mp3cpu17microKernelAvx512ElPKfS2_Pflb znver4,znver5,skylake-avx512,sapphirerapids
avx512bf16-14x32 gemm_avx512 _ZN2mp3cpu21microKernelAvx512Bf16ElPKtS2_Pflb znver4,znver5,sapphirerapids
KERNELS
echo "($mca. FLOP/cycle per core; the peaks: Zen 3 32 fp32 (2 x 256-bit FMA); Zen 4 32 fp32, 64 bf16;"
echo " Zen 5 with full-width 512-bit pipes 64 fp32, 128 bf16; Skylake-X / Sapphire Rapids with two 512-bit FMA units 64 fp32.)"
