#!/bin/bash
# On a machine with an NVIDIA GPU: checks that libmemtrace.so records GPU
# memory from the real CUDA runtime and driver (preload/cuda.c). The test
# suite checks the same against stand-ins (tests/fake-cuda); this is the
# proof on the real thing.
#
#   scripts/gpu-intercept-check.sh [BUILD_DIR]      (default: build)
#
# 1. A C program (built here with cc, no CUDA headers) dlopen()s the
#    runtime (CUDART, else the first libcudart.so* found under PyTorch or
#    by ldconfig) and calls cudaMalloc(64 MiB), cudaMallocAsync(32 MiB),
#    cudaMallocHost(1 MiB) and frees them; the trace must hold exactly one
#    GPU ALLOC of each size and a FREE for each.
# 2. With a Python that imports torch with CUDA: a 256 MiB tensor under the
#    default caching allocator (a DEVICE ALLOC of at least 256 MiB), under
#    expandable_segments:True (VA, PHYSICAL and MAPPED records) and under
#    backend:cudaMallocAsync (stream-ordered ALLOCs), and an out-of-memory
#    that must leave an OOM record.
# Prints one line per check and exits non-zero if any failed.
set -u
build=${1:-build}
memtrace=$build/analyzer/memtrace
[ -x "$memtrace" ] || { echo "no $memtrace: build first (ninja -C $build)"; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-gpu-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check NAME COMMAND...: prints ok/FAIL
    if "${@:2}"; then echo "ok:   $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi
}
gpu() { "$memtrace" dump --type gpu "$1"; }
count() { # count TRACE PATTERN: GPU records matching an extended regex
    gpu "$1" | grep -cE "$2"
}

python=${PYTHON:-python3}
has_torch=0
if "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    has_torch=1
fi

cudart=${CUDART:-}
if [ -z "$cudart" ] && [ "$has_torch" = 1 ]; then
    cudart=$("$python" - <<'PY' 2>/dev/null
import glob, os, torch, site
dirs = [os.path.join(os.path.dirname(torch.__file__), "lib")]
for s in site.getsitepackages():
    dirs += glob.glob(os.path.join(s, "nvidia", "*", "lib"))
for d in dirs:
    for f in sorted(glob.glob(os.path.join(d, "libcudart.so*"))):
        print(f); raise SystemExit
PY
)
fi
if [ -z "$cudart" ]; then
    cudart=$(ldconfig -p 2>/dev/null | awk '/libcudart\.so/ { print $NF; exit }')
fi

# ---- 1. the runtime, from C ----------------------------------------------
if [ -n "$cudart" ]; then
    cat >"$tmp/rt.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
typedef int (*malloc_fn)(void **, size_t);
int main(int argc, char **argv)
{
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 3; }
    malloc_fn cuda_malloc = (malloc_fn)dlsym(h, "cudaMalloc"), cuda_malloc_host = (malloc_fn)dlsym(h, "cudaMallocHost");
    int (*cuda_free)(void *) = (int (*)(void *))dlsym(h, "cudaFree");
    int (*cuda_free_host)(void *) = (int (*)(void *))dlsym(h, "cudaFreeHost");
    int (*malloc_async)(void **, size_t, void *) = (int (*)(void **, size_t, void *))dlsym(h, "cudaMallocAsync");
    int (*free_async)(void *, void *) = (int (*)(void *, void *))dlsym(h, "cudaFreeAsync");
    int (*sync)(void) = (int (*)(void))dlsym(h, "cudaDeviceSynchronize");
    void *a, *b, *c;
    int r1 = cuda_malloc(&a, 64 << 20), r2 = malloc_async(&b, 32 << 20, NULL), r3 = cuda_malloc_host(&c, 1 << 20);
    printf("cudaMalloc %d cudaMallocAsync %d cudaMallocHost %d\n", r1, r2, r3);
    if (r1 || r2 || r3) return 1;
    int f1 = cuda_free(a), f2 = free_async(b, NULL), f3 = sync(), f4 = cuda_free_host(c);
    printf("cudaFree %d cudaFreeAsync %d sync %d cudaFreeHost %d\n", f1, f2, f3, f4);
    return f1 || f2 || f3 || f4;
}
C
    if cc -O1 -o "$tmp/rt" "$tmp/rt.c" -ldl; then
        if ! "$tmp/rt" "$cudart" >"$tmp/rt.out"; then
            echo "FAIL: the runtime program fails without memtrace (no usable GPU?): $(cat "$tmp/rt.out")"
            fails=$((fails + 1))
        else
        check "runtime program runs traced" "$memtrace" run -q -o "$tmp/rt.bin" -- "$tmp/rt" "$cudart"
        gpu "$tmp/rt.bin" >"$tmp/rt.txt"
        sed 's/^/    /' "$tmp/rt.txt" | head -20
        check "one ALLOC of 64 MiB (cudaMalloc)" test "$(count "$tmp/rt.bin" 'gpu alloc .* size=67108864 ')" = 1
        check "one ALLOC of 32 MiB (cudaMallocAsync)" test "$(count "$tmp/rt.bin" 'gpu alloc .* size=33554432 ')" = 1
        check "one pinned ALLOC of 1 MiB (cudaMallocHost)" test "$(count "$tmp/rt.bin" 'gpu alloc .*space=1 .*size=1048576 ')" = 1
        check "a FREE for each" test "$(count "$tmp/rt.bin" 'gpu free ')" -ge 3
        fi
    else
        echo "FAIL: cannot build the runtime program"; fails=$((fails + 1))
    fi
else
    echo "skip: no libcudart found (set CUDART=/path/libcudart.so.N)"
fi

# ---- 2. PyTorch ----------------------------------------------------------------
if [ "$has_torch" = 1 ]; then
    cat >"$tmp/t.py" <<'PY'
import sys, torch
x = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
del x
if len(sys.argv) > 1:
    try:
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")
    except torch.cuda.OutOfMemoryError:
        print("oom as expected")
torch.cuda.empty_cache()
PY
    check "torch default allocator traced" "$memtrace" run -q -o "$tmp/t1.bin" -- "$python" "$tmp/t.py" oom
    check "  a DEVICE ALLOC of >= 256 MiB" test "$(gpu "$tmp/t1.bin" | awk '/gpu alloc/ && /space=0 / { for (i = 1; i <= NF; i++) if ($i ~ /^size=/ && substr($i, 6) + 0 >= 268435456) n++ } END { print n + 0 }')" -ge 1
    check "  an OOM record" test "$(count "$tmp/t1.bin" 'gpu oom ')" -ge 1
    check "torch expandable_segments traced" env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
        "$memtrace" run -q -o "$tmp/t2.bin" -- "$python" "$tmp/t.py"
    check "  VA, PHYSICAL and MAPPED records" test "$(count "$tmp/t2.bin" 'gpu alloc .*space=4 ')" -ge 1 -a \
        "$(count "$tmp/t2.bin" 'gpu alloc .*space=5 ')" -ge 1 -a "$(count "$tmp/t2.bin" 'gpu alloc .*space=6 ')" -ge 1
    check "torch cudaMallocAsync backend traced" env PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync \
        "$memtrace" run -q -o "$tmp/t3.bin" -- "$python" "$tmp/t.py"
    check "  stream-ordered ALLOCs (api 16 or 21)" test "$(count "$tmp/t3.bin" 'gpu alloc .*api=(16|21) ')" -ge 1
    for t in t1 t2 t3; do
        echo "    $t: $(count "$tmp/$t.bin" 'gpu ') GPU records"
    done
else
    echo "skip: no Python with torch and a GPU"
fi

[ "$fails" = 0 ] && echo "all GPU checks passed" || echo "$fails GPU check(s) failed"
[ "$fails" = 0 ]
