#!/bin/bash
# python/memtrace/__init__.py, the API of include/memtrace.h for Python,
# called by hand: under LD_PRELOAD every call becomes the MARK record it
# names (`memtrace dump`), the phase and scope context managers pop on an
# exception too; without memtrace every call does nothing and active() is
# False. The module must not import torch.
#
# Environment (set by tests/meson.build): MEMTRACE_TEST_MEMTRACE,
# MEMTRACE_TEST_LIB, MEMTRACE_TEST_SRCDIR. Exits 77 (skipped) without
# python3.
set -euo pipefail

memtrace=${MEMTRACE_TEST_MEMTRACE:?not set (run through meson test)}
lib=${MEMTRACE_TEST_LIB:?not set (run through meson test)}
src=${MEMTRACE_TEST_SRCDIR:?not set (run through meson test)}
# The interpreter itself, not a wrapper script that runs it.
if ! python=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || [ -z "$python" ]; then
    echo "SKIP: no python3"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-pyapi-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unset MEMTRACE_OUTPUT MEMTRACE_SESSION MEMTRACE_LIB MEMTRACE_FOLLOW MEMTRACE_ENABLE MEMTRACE_VERBOSE \
    MEMTRACE_TORCH LD_PRELOAD

cat >"$tmp/prog.py" <<'EOF'
import ctypes, sys
import memtrace
print("active", memtrace.active())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
block = libc.malloc(4096)
memtrace.step(7)
with memtrace.phase("eval"):
    with memtrace.scope("encoder.layers.0"):
        memtrace.tag(block, "activations")
    memtrace.tag_gpu(0x7f0000001000, "kv_cache")
try:
    with memtrace.phase("failing"):
        raise ValueError("boom")
except ValueError:
    pass
memtrace.phase_push(b"manual")
memtrace.phase_pop()
memtrace.gpu_tensor_alloc(0x7f0000002000, 512, 0, 0)
memtrace.gpu_tensor_free(0x7f0000002000, 0)
libc.free(block)
print("torch imported", "torch" in sys.modules)
EOF

failed=0
fail() {
    echo "FAIL: $*"
    failed=1
}

# Without memtrace: no-ops.
out=$(PYTHONPATH="$src/python" "$python" "$tmp/prog.py" 2>/dev/null) || fail "untraced run exited $?"
[ "$out" = "$(printf 'active False\ntorch imported False')" ] || fail "untraced run printed: $out"

# With memtrace (the automatic integration off, so only these calls mark).
out=$(export LD_PRELOAD="$lib" MEMTRACE_OUTPUT="$tmp/t.bin" MEMTRACE_TORCH=0 PYTHONPATH="$src/python"
    exec "$python" "$tmp/prog.py" 2>"$tmp/err") || fail "traced run exited $?: $(cat "$tmp/err")"
[ "$out" = "$(printf 'active True\ntorch imported False')" ] || fail "traced run printed: $out"
"$memtrace" dump "$tmp/t.bin" >"$tmp/dump" || fail "memtrace dump exited $?"

"$python" - "$tmp/dump" <<'EOF' || failed=1
import sys
path = sys.argv[1]
names, got, sizes = {}, [], {}
for line in open(path, errors="replace"):
    f = line.split()
    if len(f) >= 7 and f[3] == "alloc":
        sizes[f[5]] = f[6]
    if len(f) >= 5 and f[3] == "mark":
        if f[4] == "string":
            names[f[5].split("=")[1]] = line.split(" text=", 1)[1].rstrip("\n")
        else:
            got.append(f[4:])
    elif len(f) >= 5 and f[3] == "gpu" and f[4] in ("alloc", "free"):
        got.append(["gpu", f[4]] + [x for x in f[5:] if x.startswith("addr=")])
def show(rec):
    out = []
    for x in rec:
        k, _, v = x.partition("=")
        out.append("%s=%s" % (k, names.get(v, v)) if k in ("name", "category") else x)
    return " ".join(out)
got = [show(r) for r in got]
# A host tag comes out naming the block it tags (block=SEQ of its ALLOC):
# the 4096 bytes malloc'd at the address the program printed.
for i, g in enumerate(got):
    f = g.split()
    if f[:2] == ["tag", "space=0"] and sizes.get(f[2]) == "size=4096":
        got[i] = " ".join(f[:2] + ["BLOCK"] + f[3:])
want = [
    "step step=7",
    "phase_push name=eval",
    "scope_push name=encoder.layers.0",
    "tag space=0 BLOCK category=activations",
    "scope_pop",
    "tag space=1 addr=0x7f0000001000 category=kv_cache",
    "phase_pop",
    "phase_push name=failing",
    "phase_pop",
    "phase_push name=manual",
    "phase_pop",
    "gpu alloc addr=0x7f0000002000",
    "gpu free addr=0x7f0000002000",
]
if got != want:
    print("FAIL: marks in the trace:\n    got  %s\n    want %s" % ("\n         ".join(got), "\n         ".join(want)))
    sys.exit(1)
print("marks: %d as expected" % len(got))
EOF

if [ "$failed" != 0 ]; then
    exit 1
fi
echo "ok"
