#!/usr/bin/env bash
# Host kernels (kernels/, docs/KERNELS.md): each kernel's throughput beside
# this machine's memcpy on the same buffers in the same run, and the ratio
# (target: at least 70%).
#
# Usage: scripts/bench-kernels.sh [--mib N] [--reps R] [--isa scalar|avx2|avx512]
#                                 [--threads T] [--dir DIR]
# N MiB of fp32 per kernel (default 64), best of R runs (default 5), the
# best ISA this CPU runs unless --isa, T threads for the kernels and for
# the memcpy they are held to (default: every CPU this process may use;
# --threads 1 gives one core's figures), the offload file in DIR (default
# a temporary directory under the build directory).
#
# GB/s counts bytes read plus bytes written; memcpy of B bytes counts 2B.
# The file offload row counts payload bytes once, against memcpy counted
# once. Environment: BUILD_DIR (default build).
set -euo pipefail

build=${BUILD_DIR:-build}
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,17s/^# \{0,1\}//p' "$0"
    exit 0
fi
ninja -C "$build" kernels/bench-kernels >/dev/null
args=("$@")
if [[ " $* " != *" --dir "* ]]; then
    dir=$(mktemp -d "$build/bench-kernels.XXXXXX")
    trap 'rm -rf "$dir"' EXIT
    args+=(--dir "$dir")
fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
"$build/kernels/bench-kernels" "${args[@]}"
