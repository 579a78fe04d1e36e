#!/bin/bash
# The PyTorch integration (python/memtrace/torch_phases.py, loaded by
# preload/python.c) on the unmodified example trainer, under a plain
# LD_PRELOAD and under `memtrace run`:
# - the trainer prints the same step and params lines as untraced, and
#   exits 0;
# - `memtrace dump` shows, per training step, a step marker (0, 1, ...;
#   step k starts after k optimizer steps) then the phases forward,
#   backward, optimizer, each popped, and nothing else;
# - one `parameters` tag per parameter tensor, `gradients` and
#   `optimizer_state` tags, each naming a heap block the reader found
#   (the storage's data pointer is the start of the malloc'd block), module
#   scopes such as blocks.0.mlp.fc1 in forward and in backward, and as many
#   pops as pushes;
# - the report's categories: parameters and gradients equal the model's
#   parameter bytes and optimizer_state twice that, each within 1%.
# Also: MEMTRACE_TORCH=0 leaves the trace without marks, and a Python
# program that never imports torch runs unchanged, with the package loaded
# (under its private name, sys.path untouched) and no marks.
#
# Environment (set by tests/meson.build): MEMTRACE_TEST_MEMTRACE,
# MEMTRACE_TEST_LIB, MEMTRACE_TEST_SRCDIR. Exits 77 (skipped) when no Python
# with torch is found (scripts/find-python).
set -euo pipefail

memtrace=${MEMTRACE_TEST_MEMTRACE:?not set (run through meson test)}
lib=${MEMTRACE_TEST_LIB:?not set (run through meson test)}
src=${MEMTRACE_TEST_SRCDIR:?not set (run through meson test)}
trainer=$src/examples/train_gpt.py
steps=3
layers=2
args=(--steps "$steps" --layers "$layers" --seq 32 --batch 4)

if ! python=$("$src/scripts/find-python" 2>/dev/null); then
    echo "SKIP: no Python interpreter that can import torch"
    exit 77
fi
echo "python: $python"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-torch-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unset MEMTRACE_OUTPUT MEMTRACE_SESSION MEMTRACE_LIB MEMTRACE_FOLLOW MEMTRACE_ENABLE MEMTRACE_VERBOSE \
    MEMTRACE_TORCH LD_PRELOAD PYTHONPATH

failed=0
fail() {
    echo "FAIL: $*"
    failed=1
}

# run NAME CMD...: runs CMD, output in $tmp/NAME.out and .err, exit code
# checked.
run() {
    local name=$1 rc=0
    shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    if [ "$rc" != 0 ]; then
        fail "$name exited $rc; its stderr:"
        sed 's/^/    /' "$tmp/$name.err"
    fi
}

# traced NAME TRACE [VAR=VALUE...] -- CMD...: run with libmemtrace.so
# preloaded into CMD itself (not into an env(1) that execs it), tracing
# into TRACE.
traced() {
    local name=$1 trace=$2 vars=()
    shift 2
    while [ "$1" != -- ]; do
        vars+=("$1")
        shift
    done
    shift
    vars+=(LD_PRELOAD="$lib" MEMTRACE_OUTPUT="$trace")
    run "$name" bash -c 'export "${@:2:$1}"; shift "$(($1 + 1))"; exec "$@"' _ "${#vars[@]}" "${vars[@]}" "$@"
}

# dump NAME TRACE: `memtrace dump` into $tmp/NAME.dump.
dump() {
    if [ ! -f "$2" ]; then
        fail "$1 left no trace $2"
        : >"$tmp/$1.dump"
        return
    fi
    "$memtrace" dump "$2" >"$tmp/$1.dump" 2>"$tmp/$1.dump-err" ||
        fail "memtrace dump $2: $(cat "$tmp/$1.dump-err")"
}

# The number of parameter tensors of the trainer's model.
nparams=$("$python" - "$trainer" "$layers" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("train_gpt", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
model = m.GPT(256, 32, int(sys.argv[2]), 64, 4)
print(len({p.data_ptr() for p in model.parameters()}))
EOF
)
echo "parameter tensors: $nparams"

run native "$python" "$trainer" "${args[@]}"
traced preload "$tmp/preload.bin" -- "$python" "$trainer" "${args[@]}"
run launcher "$memtrace" run -q -o "$tmp/launcher.bin" -- "$python" "$trainer" "${args[@]}"
traced off "$tmp/off.bin" MEMTRACE_TORCH=0 -- "$python" "$trainer" "${args[@]}"

for name in native preload launcher off; do
    grep -E '^(step|params) ' "$tmp/$name.out" >"$tmp/$name.lines" || true
done
if [ "$(grep -c '^step ' "$tmp/native.lines")" != "$steps" ]; then
    fail "native run printed not $steps step lines:"
    sed 's/^/    /' "$tmp/native.out"
fi
for name in preload launcher off; do
    if ! diff -u "$tmp/native.lines" "$tmp/$name.lines" >"$tmp/$name.diff"; then
        fail "$name run printed other step/params lines than the native run:"
        sed 's/^/    /' "$tmp/$name.diff"
    fi
    if ! diff -u "$tmp/native.err" "$tmp/$name.err" >"$tmp/$name.err-diff"; then
        fail "$name run wrote other lines to stderr than the native run:"
        sed 's/^/    /' "$tmp/$name.err-diff"
    fi
done

dump preload "$tmp/preload.bin"
dump launcher "$tmp/launcher.bin"
dump off "$tmp/off.bin"

# check NAME DUMP: the marks of a trainer trace.
check() {
    "$python" - "$@" "$steps" "$nparams" <<'EOF' || failed=1
import collections, sys
name, path, steps, nparams = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
names, events = {}, []
for line in open(path, errors="replace"):
    f = line.split()
    if len(f) < 5 or f[3] != "mark":
        continue
    if f[4] == "string":
        kv = dict(x.split("=", 1) for x in f[5:7])
        names[kv["id"]] = line.split(" text=", 1)[1].rstrip("\n")
    else:
        events.append((int(f[0]), f[4], dict(x.split("=", 1) for x in f[5:] if "=" in x)))
events.sort(key=lambda e: e[0])
problems = []
seq, tags = [], collections.Counter()
scopes, bwd_scopes = set(), set()
phase, depth, sdepth, unresolved = [], 0, 0, 0
for _, kind, kv in events:
    if kind == "phase_push":
        phase.append(names[kv["name"]])
        seq.append(phase[-1])
    elif kind == "phase_pop":
        if not phase:
            problems.append("phase_pop without a phase")
        else:
            phase.pop()
        seq.append("/")
    elif kind == "step":
        seq.append("step%s" % kv["step"])
    elif kind == "tag":
        tags[names[kv["category"]]] += 1
        if kv.get("space") == "0" and "block" not in kv:
            unresolved += 1
    elif kind == "scope_push":
        sdepth += 1
        scopes.add(names[kv["name"]])
        if phase and phase[-1] == "backward":
            bwd_scopes.add(names[kv["name"]])
    elif kind == "scope_pop":
        sdepth -= 1
        if sdepth < 0:
            problems.append("scope_pop without a scope")
want = []
for s in range(steps):
    want += ["step%d" % s, "forward", "/", "backward", "/", "optimizer", "/"]
if seq != want:
    problems.append("phases and steps:\n    got  %s\n    want %s" % (" ".join(seq), " ".join(want)))
if phase or sdepth:
    problems.append("left open: phases %r, %d scopes" % (phase, sdepth))
if unresolved:
    problems.append("%d host tags name no allocation's start" % unresolved)
if tags["parameters"] != nparams:
    problems.append("%d parameters tags for %d parameter tensors" % (tags["parameters"], nparams))
if tags["gradients"] < nparams:
    problems.append("%d gradients tags, want at least %d" % (tags["gradients"], nparams))
if tags["optimizer_state"] < nparams:
    problems.append("%d optimizer_state tags, want at least %d" % (tags["optimizer_state"], nparams))
for want_scope in ("blocks.0", "blocks.0.mlp.fc1", "blocks.1.attn.qkv", "head"):
    if want_scope not in scopes:
        problems.append("no scope %s among %s" % (want_scope, sorted(scopes)))
if "blocks.0.mlp.fc1" not in bwd_scopes:
    problems.append("no backward scope blocks.0.mlp.fc1 among %s" % sorted(bwd_scopes))
for p in problems:
    print("FAIL: %s: %s" % (name, p))
if not problems:
    print("%s: %s; tags %s; %d scopes (%d in backward)"
          % (name, " ".join(seq), dict(tags), len(scopes), len(bwd_scopes)))
sys.exit(1 if problems else 0)
EOF
}
check "LD_PRELOAD" "$tmp/preload.dump"
check "memtrace run" "$tmp/launcher.dump"

# The breakdown the report gives (issue 4's acceptance): parameters equal
# the model's parameter bytes, gradients the same, optimizer_state twice
# that (AdamW's two moments) plus its step counters, each within 1%; the
# phases and steps are there.
breakdown() { # NAME TRACE
    "$memtrace" report --json --no-symbols "$2" >"$tmp/$1.json" 2>"$tmp/$1.json-err" ||
        { fail "report of $2: $(cat "$tmp/$1.json-err")"; return; }
    "$python" - "$1" "$tmp/$1.json" "$tmp/native.out" "$steps" <<'EOF' || failed=1
import json, sys
name, report, native, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
param_bytes = int([l.split()[3] for l in open(native) if l.startswith("params ")][0])
d = json.load(open(report))
cat = {k: v["peak_bytes"] for k, v in d["categories"].items()}
problems = []
for key, want in (("parameters", param_bytes), ("gradients", param_bytes),
                  ("optimizer_state", 2 * param_bytes)):
    if abs(cat[key] - want) > 0.01 * want:
        problems.append("%s %d, expected %d (1%%)" % (key, cat[key], want))
if cat["activations"] <= 0:
    problems.append("no activations")
for ph in ("forward", "backward", "optimizer"):
    if d["phases"].get(ph, {}).get("peak_bytes", 0) <= cat["parameters"]:
        problems.append("phase %s: peak %s" % (ph, d["phases"].get(ph)))
if len(d["steps"]) != steps:
    problems.append("%d steps" % len(d["steps"]))
if not any(m["path"].startswith("blocks.0") for m in d["modules"]):
    problems.append("no module blocks.0*")
for p in problems:
    print("FAIL: %s: %s" % (name, p))
print("%s: parameters %d gradients %d optimizer_state %d (param_bytes %d)"
      % (name, cat["parameters"], cat["gradients"], cat["optimizer_state"], param_bytes))
sys.exit(1 if problems else 0)
EOF
}
breakdown preload "$tmp/preload.bin"
breakdown launcher "$tmp/launcher.bin"
if grep -q ' mark ' "$tmp/off.dump"; then
    fail "MEMTRACE_TORCH=0: the trace has marks:"
    grep ' mark ' "$tmp/off.dump" | head -5 | sed 's/^/    /'
fi

# A Python program without torch: same output, the package loaded while it
# runs (it allocates for a while, so RSS ticks come, then imports), sys.path
# untouched, no marks. With MEMTRACE_TORCH=0 nothing is loaded.
cat >"$tmp/plain.py" <<'EOF'
import sys, time
path = list(sys.path)
t = time.monotonic()
junk = []
while time.monotonic() - t < 0.3:
    junk = [bytearray(1000) for _ in range(100)]
import json  # the package may wait for an import (preload/python.c)
print("sum", sum(range(1000)), json.dumps([1]))
print("path unchanged", sys.path == path)
sys.stderr.write("loaded %s torch %s\n" % ("_memtrace" in sys.modules, "torch" in sys.modules))
EOF
run plain-native "$python" "$tmp/plain.py"
traced plain-preload "$tmp/plain.bin" -- "$python" "$tmp/plain.py"
traced plain-off "$tmp/plain-off.bin" MEMTRACE_TORCH=0 -- "$python" "$tmp/plain.py"
for name in plain-preload plain-off; do
    diff -u "$tmp/plain-native.out" "$tmp/$name.out" >/dev/null ||
        fail "$name printed other lines: $(cat "$tmp/$name.out")"
done
[ "$(cat "$tmp/plain-native.err")" = "loaded False torch False" ] ||
    fail "plain-native: $(cat "$tmp/plain-native.err")"
[ "$(cat "$tmp/plain-preload.err")" = "loaded True torch False" ] ||
    fail "plain-preload: the integration was not loaded: $(cat "$tmp/plain-preload.err")"
[ "$(cat "$tmp/plain-off.err")" = "loaded False torch False" ] ||
    fail "plain-off: MEMTRACE_TORCH=0 loaded it: $(cat "$tmp/plain-off.err")"
dump plain "$tmp/plain.bin"
if grep -q ' mark ' "$tmp/plain.dump"; then
    fail "a program without torch left marks:"
    grep ' mark ' "$tmp/plain.dump" | head -5 | sed 's/^/    /'
fi

if [ "$failed" != 0 ]; then
    exit 1
fi
echo "ok"
