#!/bin/bash
# The example trainer (examples/train_gpt.py) natively, under `memtrace run`
# and under a plain LD_PRELOAD: the same output and exit code each time, and
# reports of both traces that make sense for it (the heap peak holds at
# least the parameters). Also `memtrace pack` on the LD_PRELOAD trace, which
# is left raw, changes none of the report's numbers.
#
# Environment (set by tests/meson.build): MEMTRACE_TEST_MEMTRACE,
# MEMTRACE_TEST_LIB, MEMTRACE_TEST_SRCDIR. Exits 77 (skipped) when no Python
# with torch is found (scripts/find-python; MEMTRACE_PYTHON chooses one).
set -euo pipefail

memtrace=${MEMTRACE_TEST_MEMTRACE:?not set (run through meson test)}
lib=${MEMTRACE_TEST_LIB:?not set (run through meson test)}
src=${MEMTRACE_TEST_SRCDIR:?not set (run through meson test)}
trainer=$src/examples/train_gpt.py
steps=3
# A small model: the run is mostly torch's start-up, which is what tracing
# slows down most.
args=(--steps "$steps" --layers 2 --seq 32 --batch 4)

if ! python=$("$src/scripts/find-python" 2>/dev/null); then
    echo "SKIP: no Python interpreter that can import torch"
    exit 77
fi
echo "python: $python"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-trainer-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unset MEMTRACE_OUTPUT MEMTRACE_SESSION MEMTRACE_LIB MEMTRACE_FOLLOW MEMTRACE_ENABLE MEMTRACE_VERBOSE LD_PRELOAD

failed=0
fail() {
    echo "FAIL: $*"
    failed=1
}

# run NAME CMD...: runs CMD, output in $tmp/NAME.out and .err, exit code in
# $tmp/NAME.rc.
run() {
    local name=$1 rc=0
    shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    echo "$rc" >"$tmp/$name.rc"
}

run native "$python" "$trainer" "${args[@]}"
# The two traced runs at once: each is a few seconds.
run launcher "$memtrace" run -o "$tmp/a.bin" -- "$python" "$trainer" "${args[@]}" &
launcher_job=$!
run preload env LD_PRELOAD="$lib" MEMTRACE_OUTPUT="$tmp/b.bin" "$python" "$trainer" "${args[@]}" &
preload_job=$!
wait "$launcher_job" "$preload_job"

# The lines that do not depend on timing.
for name in native launcher preload; do
    rc=$(cat "$tmp/$name.rc")
    if [ "$rc" != 0 ]; then
        fail "$name run exited $rc; its stderr:"
        sed 's/^/    /' "$tmp/$name.err"
    fi
    grep -E '^(step|params) ' "$tmp/$name.out" >"$tmp/$name.lines" || true
done
if [ "$(grep -c '^step ' "$tmp/native.lines")" != "$steps" ]; then
    fail "native run printed not $steps step lines:"
    sed 's/^/    /' "$tmp/native.out"
fi
for name in launcher preload; do
    if ! diff -u "$tmp/native.lines" "$tmp/$name.lines" >"$tmp/$name.diff"; then
        fail "$name run printed other step/params lines than the native run:"
        sed 's/^/    /' "$tmp/$name.diff"
    fi
done
param_bytes=$(sed -n 's/^params [0-9]* param_bytes \([0-9]*\)$/\1/p' "$tmp/native.out")
if [ -z "$param_bytes" ]; then
    fail "no 'params N param_bytes B' line from the native run"
    param_bytes=1
fi
launcher_err=$(cat "$tmp/launcher.err")
case $launcher_err in
    "memtrace: trace written to $tmp/a.bin"*) ;;
    *) fail "memtrace run's stderr: $launcher_err" ;;
esac

# check_report NAME JSON: the report of a trainer run makes sense.
check_report() {
    "$python" - "$1" "$2" "$param_bytes" <<'EOF'
import json, sys
name, path, param_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path) as f:
    rep = json.load(f)
host = rep["host"]
problems = []
if host["peak_bytes"] < param_bytes:
    problems.append("host.peak_bytes %d < param_bytes %d" % (host["peak_bytes"], param_bytes))
if host["alloc_count"] <= 0:
    problems.append("host.alloc_count %d" % host["alloc_count"])
if rep["complete"] is not True:
    problems.append("complete is %r (status %r)" % (rep["complete"], rep.get("status")))
if rep["partial"] is not False:
    problems.append("partial is %r" % rep["partial"])
for p in problems:
    print("FAIL: %s: %s" % (name, p))
if not problems:
    print("%s: peak %d bytes, %d allocations" % (name, host["peak_bytes"], host["alloc_count"]))
sys.exit(1 if problems else 0)
EOF
}

# report NAME FILE: `memtrace report --json FILE` into $tmp/NAME.json.
report() {
    local rc=0
    "$memtrace" report --json "$2" >"$tmp/$1.json" 2>"$tmp/$1.report-err" || rc=$?
    if [ "$rc" != 0 ]; then
        fail "memtrace report --json $2 exited $rc: $(cat "$tmp/$1.report-err")"
        return 1
    fi
}

if [ -f "$tmp/a.bin" ]; then
    report a "$tmp/a.bin" && { check_report "memtrace run trace" "$tmp/a.json" || failed=1; }
else
    fail "memtrace run left no trace $tmp/a.bin"
fi

if [ -f "$tmp/b.bin" ]; then
    if report b-raw "$tmp/b.bin"; then
        check_report "LD_PRELOAD trace" "$tmp/b-raw.json" || failed=1
    fi
    rc=0
    "$memtrace" pack "$tmp/b.bin" >"$tmp/pack.out" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        fail "memtrace pack exited $rc: $(cat "$tmp/pack.out")"
    elif report b-packed "$tmp/b.bin" && [ -f "$tmp/b-raw.json" ]; then
        # Everything but the file's size and packing is the same.
        "$python" - "$tmp/b-raw.json" "$tmp/b-packed.json" <<'EOF' || failed=1
import json, sys
raw, packed = (json.load(open(p)) for p in sys.argv[1:3])
problems = []
if raw["packed"] is not False or packed["packed"] is not True:
    problems.append("packed: %r before, %r after" % (raw["packed"], packed["packed"]))
for rep in (raw, packed):
    rep.pop("packed"), rep.pop("file_bytes")
def flat(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat(v, prefix + k + ".")
    else:
        yield prefix[:-1], obj
a, b = dict(flat(raw)), dict(flat(packed))
for key in sorted(set(a) | set(b)):
    if a.get(key) != b.get(key):
        problems.append("%s: %r before packing, %r after" % (key, a.get(key), b.get(key)))
for p in problems:
    print("FAIL: memtrace pack: %s" % p)
sys.exit(1 if problems else 0)
EOF
    fi
else
    fail "LD_PRELOAD run left no trace $tmp/b.bin"
fi

if [ "$failed" != 0 ]; then
    exit 1
fi
echo "ok"
