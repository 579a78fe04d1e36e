#!/usr/bin/env bash
# GPU check: memtrace's per-phase GPU peaks against PyTorch's own numbers on
# the example trainer, for each allocator setting and training switch.
#
# Usage: scripts/gpu-check.sh [--steps N] [--out DIR] [-- TRAINER ARGS...]
#
# For each configuration (default; --checkpoint; --bf16; --alloc-backend
# cudaMallocAsync; --expandable-segments) it runs examples/train_gpt.py
# --device cuda --cuda-phase-stats untraced and under `memtrace run`, checks
# that the losses are identical, and prints per phase: PyTorch's reserved
# and allocated peaks (the trainer resets PyTorch's peak statistics at each
# phase boundary and prints them; the most over the steps) beside memtrace's
# (devices[0].phases.<phase> of the report), with the difference. Reserved
# must agree within 0.1% and allocated within 1% where memtrace has them
# (allocated needs per-tensor events: the cudaMallocAsync backend). Exit
# status 1 if any comparison fails. Needs a CUDA GPU and a Python that
# imports torch with CUDA; MEMTRACE (default build/analyzer/memtrace).
set -euo pipefail

steps=6
out=
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --steps) steps=$2; shift ;;
        --out) out=$2; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,18s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "gpu-check.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
memtrace=$(realpath "${MEMTRACE:-build/analyzer/memtrace}")
py=$(scripts/find-python) || { echo "gpu-check.sh: no Python that imports torch" >&2; exit 2; }
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' ||
    { echo "gpu-check.sh: torch sees no CUDA device" >&2; exit 2; }
if [ -z "$out" ]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

status=0
configs=("default:" "checkpoint:--checkpoint" "bf16:--bf16" "async:--alloc-backend cudaMallocAsync"
         "expandable:--expandable-segments")
for c in "${configs[@]}"; do
    name=${c%%:*}
    read -r -a flags <<<"${c#*:}"
    args=(examples/train_gpt.py --device cuda --steps "$steps" --cuda-phase-stats "${flags[@]}" "${extra[@]}")
    "$py" "${args[@]}" >"$out/$name.native" 2>"$out/$name.native.err" ||
        { echo "$name: untraced run failed"; cat "$out/$name.native.err"; status=1; continue; }
    "$memtrace" run -q -o "$out/$name.bin" -- "$py" "${args[@]}" >"$out/$name.traced" 2>"$out/$name.err" ||
        { echo "$name: traced run failed"; cat "$out/$name.err"; status=1; continue; }
    if ! diff <(grep -E '^(step|params)' "$out/$name.native") <(grep -E '^(step|params)' "$out/$name.traced") >/dev/null; then
        echo "$name: losses differ under memtrace"; status=1
    fi
    "$memtrace" report --json "$out/$name.bin" >"$out/$name.json" || { echo "$name: report failed"; status=1; continue; }
    "$py" - "$name" "$out/$name.traced" "$out/$name.json" <<'EOF' || status=1
import json, sys
name, stats, report = sys.argv[1:4]
torch_peak = {}
for line in open(stats):
    f = line.split()
    if f and f[0] == "cuda_phase" and int(f[1]) > 1:  # step 1 warms up the allocator
        r, a = int(f[4]), int(f[6])
        old = torch_peak.get(f[2], (0, 0))
        torch_peak[f[2]] = (max(old[0], r), max(old[1], a))
d = json.load(open(report))
devs = d.get("devices") or []
if not devs:
    print("%s: the report has no GPU device" % name); sys.exit(1)
dev = devs[0]
# memtrace's per-phase peaks over steps 2.. (the trainer's warm-up step left out)
mem = {}
for st in d["steps"][1:]:
    for e in st.get("devices", []):
        if e["device"] != dev["device"]:
            continue
        old = mem.get(e["phase"], (None, None))
        r, a = e["reserved_peak_bytes"], e["allocated_peak_bytes"]
        mem[e["phase"]] = (r if old[0] is None or (r is not None and r > old[0]) else old[0],
                           a if old[1] is None or (a is not None and a > old[1]) else old[1])
ok = True
def cmp(what, t, m, tol):
    global ok
    if m is None:
        return "%14d %14s   (not seen)" % (t, "-")
    diff = (m - t) / t * 100 if t else 0.0
    bad = abs(diff) > tol
    ok = ok and not bad
    return "%14d %14d %+8.3f%%%s" % (t, m, diff, "  FAIL" if bad else "")
print("%s (allocated from %s)" % (name, dev.get("allocated_source")))
print("  %-10s %-9s %14s %14s %9s" % ("phase", "", "pytorch", "memtrace", "diff"))
for ph in ("forward", "backward", "optimizer"):
    if ph not in torch_peak or ph not in mem:
        print("  %-10s missing (pytorch %s, memtrace %s)" % (ph, ph in torch_peak, ph in mem)); ok = False
        continue
    (tr, ta), (mr, ma) = torch_peak[ph], mem[ph]
    if dev.get("reserved_peak_bytes") is not None:
        print("  %-10s %-9s %s" % (ph, "reserved", cmp("reserved", tr, mr, 0.1)))
    print("  %-10s %-9s %s" % (ph, "allocated", cmp("allocated", ta, ma, 1.0)))
print("  oom events: %d, reserved peak %s, allocated peak %s" % (
    len(dev["oom_events"]), dev["reserved_peak_bytes"], dev["allocated_peak_bytes"]))
sys.exit(0 if ok else 1)
EOF
done
exit $status
