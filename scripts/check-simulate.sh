#!/bin/bash
# Holds `memtrace simulate`'s predictions against real re-runs.
#
# For each technique: trace the plain example (examples/train_gpt.py for
# training techniques, examples/generate.py for KV-cache ones) with
# `memtrace run`, ask `memtrace simulate BASELINE.bin <options> --json`
# what the peak would be with the technique, trace the example again with
# the switch that really applies it, and print one row: baseline peak,
# predicted peak, measured peak of the re-run, the prediction's error
# against the re-run, and PASS or FAIL at the tolerance (5% unless told).
#
# Peaks compared: on the CPU the host heap peak (`host.peak_bytes` of
# `memtrace report --json`, `predicted.peak_bytes` of simulate); with
# --device cuda the first GPU's reserved and allocated peaks
# (`devices[0].reserved_peak_bytes`/`allocated_peak_bytes` against
# `predicted.devices[0]`), one row each; allocated is null under PyTorch's
# default allocator, so add --torch-allocated to get it (every run is then
# traced with `memtrace run --torch-allocated`).
#
# Without `memtrace simulate` in the memtrace binary the baselines and
# re-runs are still traced and measured, the predicted column says "-",
# and the script exits 3 after the table.
#
# Usage: scripts/check-simulate.sh [options]
#   --device cpu|cuda     where the examples run (default cpu)
#   --only T1,T2,...      these techniques only (default: all for the device)
#   --tolerance PCT       PASS when |predicted - measured| <= PCT% of
#                         measured (default 5)
#   --torch-allocated     trace with `memtrace run --torch-allocated`
#   --train-args "ARGS"   the trainer's size (default: --steps 2 --layers 6
#                         --d-model 128 --seq 128 --batch 16)
#   --gen-args "ARGS"     the generator's size (default: --layers 6
#                         --d-model 256 --batch 8 --prompt-len 32
#                         --tokens 224)
#   --keep DIR            keep traces, reports and predictions in DIR
#   --list                print the techniques and exit
# Environment: MEMTRACE (the memtrace binary; default build/analyzer/memtrace
# of this tree), MEMTRACE_PYTHON (an interpreter with torch, see
# scripts/find-python).
# Exit status: 0 all PASS, 1 some FAIL or ERROR, 2 bad usage or no torch,
# 3 no `memtrace simulate` (measurements only).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
memtrace=${MEMTRACE:-$here/build/analyzer/memtrace}

# name|workload|simulate options|re-run switches|devices
# (@SQRT@ is floor(sqrt(--layers of the trainer's size)).
techniques=(
    "checkpoint-every|train|--checkpoint every|--checkpoint|cpu cuda"
    "checkpoint-every-2|train|--checkpoint every:2|--checkpoint-every 2|cpu cuda"
    "checkpoint-sqrt|train|--checkpoint sqrt|--checkpoint-segment @SQRT@|cpu cuda"
    "int8-optimizer|train|--int8-optimizer=128|--int8-adamw --int8-block 128|cpu cuda"
    "grad-accum-2|train|--grad-accum 2|--grad-accum 2|cpu cuda"
    "grad-accum-4|train|--grad-accum 4|--grad-accum 4|cpu cuda"
    "optimizer-offload|train|--offload optimizer:host|--optimizer-host|cuda"
    "kv-window-64|generate|--kv-window 64|--kv-window 64|cpu cuda"
    "kv-int8|generate|--kv-compress int:8:32|--kv-bits 8|cpu cuda"
    "kv-int4|generate|--kv-compress int:4:32|--kv-bits 4|cpu cuda"
    "kv-latent-4|generate|--kv-compress latent:4|--kv-latent 4|cpu cuda"
)

device=cpu only="" tolerance=5 torch_allocated="" keep="" list=""
train_args="--steps 2 --layers 6 --d-model 128 --seq 128 --batch 16"
gen_args="--layers 6 --d-model 256 --batch 8 --prompt-len 32 --tokens 224"
usage() {
    sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=${2:?}; shift 2 ;;
        --only) only=${2:?}; shift 2 ;;
        --tolerance) tolerance=${2:?}; shift 2 ;;
        --torch-allocated) torch_allocated=--torch-allocated; shift ;;
        --train-args) train_args=${2?}; shift 2 ;;
        --gen-args) gen_args=${2?}; shift 2 ;;
        --keep) keep=${2:?}; shift 2 ;;
        --list) list=1; shift ;;
        -h|--help) usage ;;
        *) echo "check-simulate: unknown option '$1'" >&2; usage ;;
    esac
done
case $device in
    cpu|cuda) ;;
    *) echo "check-simulate: --device must be cpu or cuda" >&2; exit 2 ;;
esac
if [ -n "$list" ]; then
    for t in "${techniques[@]}"; do
        IFS='|' read -r name work sim switch devs <<<"$t"
        printf '%-20s %-9s simulate %-28s re-run %-30s (%s)\n' "$name" "$work" "$sim" "$switch" "$devs"
    done
    exit 0
fi

if ! python=$("$here/scripts/find-python"); then
    exit 2
fi
if [ ! -x "$memtrace" ]; then
    echo "check-simulate: no memtrace binary at $memtrace (build with ninja, or set MEMTRACE)" >&2
    exit 2
fi
have_simulate=1
if ! "$memtrace" simulate --help >/dev/null 2>&1; then
    have_simulate=""
    echo "check-simulate: '$memtrace simulate' is not there yet: tracing baselines and re-runs only," \
        "no predictions" >&2
fi

# The techniques to run, in table order.
selected=()
for t in "${techniques[@]}"; do
    IFS='|' read -r name work sim switch devs <<<"$t"
    if [ -n "$only" ]; then
        case ",$only," in *",$name,"*) ;; *) continue ;; esac
    fi
    case " $devs " in
        *" $device "*) selected+=("$t") ;;
        *) [ -n "$only" ] && echo "check-simulate: $name does not run on $device; left out" >&2 ;;
    esac
done
if [ -n "$only" ]; then
    for want in ${only//,/ }; do
        found=""
        for t in "${techniques[@]}"; do [ "${t%%|*}" = "$want" ] && found=1; done
        if [ -z "$found" ]; then
            echo "check-simulate: unknown technique '$want' (--list shows them)" >&2
            exit 2
        fi
    done
fi
if [ ${#selected[@]} = 0 ]; then
    echo "check-simulate: no technique to run" >&2
    exit 2
fi

if [ -n "$keep" ]; then
    mkdir -p "$keep"
    work=$(cd "$keep" && pwd)
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/check-simulate-XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi
unset MEMTRACE_OUTPUT MEMTRACE_SESSION MEMTRACE_LIB MEMTRACE_FOLLOW MEMTRACE_ENABLE LD_PRELOAD

layers=$(sed -n 's/.*--layers[ =]\([0-9]*\).*/\1/p' <<<"$train_args")
sqrt_layers=$(awk -v n="${layers:-4}" 'BEGIN { print int(sqrt(n)) }')

dev_args=()
[ "$device" = cuda ] && dev_args=(--device cuda)

# trace NAME WORKLOAD SWITCHES...: traces the example into $work/NAME.bin and
# its report into $work/NAME.json; 1 (with the run's stderr) when it fails.
trace() {
    local name=$1 workload=$2 script args rc=0
    shift 2
    if [ "$workload" = train ]; then
        script=$here/examples/train_gpt.py args=$train_args
    else
        script=$here/examples/generate.py args=$gen_args
    fi
    # shellcheck disable=SC2086 # the size arguments are words
    "$memtrace" run -q $torch_allocated -o "$work/$name.bin" -- \
        "$python" "$script" $args "${dev_args[@]}" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    if [ "$rc" != 0 ]; then
        echo "check-simulate: $name: the traced run exited $rc:" >&2
        tail -n 20 "$work/$name.err" | sed 's/^/    /' >&2
        return 1
    fi
    "$memtrace" report --json "$work/$name.bin" >"$work/$name.json" 2>"$work/$name.report-err" || {
        echo "check-simulate: $name: memtrace report failed: $(cat "$work/$name.report-err")" >&2
        return 1
    }
}

# The metrics of a report or a prediction, "metric value" per line (value
# "-" when null or absent). kind: report | predicted.
metrics() {
    "$python" - "$1" "$2" "$device" <<'EOF'
import json, sys
path, kind, device = sys.argv[1:4]
try:
    with open(path) as f:
        d = json.load(f)
except (OSError, ValueError):
    d = None
def get(obj, *keys):
    for k in keys:
        if isinstance(obj, list):
            obj = obj[k] if len(obj) > k else None
        elif isinstance(obj, dict):
            obj = obj.get(k)
        else:
            return None
    return obj
out = []
if d is None:
    pass
elif device == "cpu":
    out.append(("host", get(d, "host", "peak_bytes") if kind == "report"
                else get(d, "predicted", "peak_bytes")))
else:
    root = get(d, "devices") if kind == "report" else get(d, "predicted", "devices")
    for m in ("reserved", "allocated"):
        out.append((m, get(root, 0, m + "_peak_bytes")))
for name, v in out:
    print(name, "-" if v is None else int(v))
EOF
}

declare -A base_done=()
rows=()
failed=0
for t in "${selected[@]}"; do
    IFS='|' read -r name workload sim switch devs <<<"$t"
    base=baseline-$workload
    if [ -z "${base_done[$base]:-}" ]; then
        echo "check-simulate: tracing the $workload baseline" >&2
        if trace "$base" "$workload"; then base_done[$base]=ok; else base_done[$base]=failed; fi
    fi
    if [ "${base_done[$base]}" != ok ]; then
        rows+=("$name|-|-|-|-|-|ERROR (baseline run)")
        failed=1
        continue
    fi
    pred_file=$work/$name.predicted.json
    if [ -n "$have_simulate" ]; then
        # shellcheck disable=SC2086 # the technique's options are words
        if ! "$memtrace" simulate "$work/$base.bin" $sim --json >"$pred_file" 2>"$work/$name.simulate-err"; then
            echo "check-simulate: $name: memtrace simulate $sim failed:" >&2
            sed 's/^/    /' "$work/$name.simulate-err" >&2
            : >"$pred_file"
        fi
    fi
    switch=${switch//@SQRT@/$sqrt_layers}
    echo "check-simulate: tracing the re-run with $switch" >&2
    # shellcheck disable=SC2086 # the switches are words
    if ! trace "$name" "$workload" $switch; then
        rows+=("$name|-|-|-|-|-|ERROR (re-run)")
        failed=1
        continue
    fi
    mapfile -t base_m < <(metrics "$work/$base.json" report)
    mapfile -t meas_m < <(metrics "$work/$name.json" report)
    pred_m=()
    [ -n "$have_simulate" ] && mapfile -t pred_m < <(metrics "$pred_file" predicted)
    for i in "${!base_m[@]}"; do
        metric=${base_m[$i]%% *} b=${base_m[$i]#* } m=${meas_m[$i]#* } p=-
        [ ${#pred_m[@]} -gt "$i" ] && p=${pred_m[$i]#* }
        if [ "$m" = - ]; then
            rows+=("$name|$metric|$b|$p|-|-|n/a (not measured)")
            continue
        fi
        if [ -z "$have_simulate" ]; then
            rows+=("$name|$metric|$b|-|$m|-|no simulate")
        elif [ "$p" = - ]; then
            rows+=("$name|$metric|$b|-|$m|-|FAIL (no prediction)")
            failed=1
        else
            verdict=$("$python" -c '
import sys
p, m, tol = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
err = (p - m) / m * 100.0
print("%+.2f %s" % (err, "PASS" if abs(err) <= tol else "FAIL"))' "$p" "$m" "$tolerance")
            rows+=("$name|$metric|$b|$p|$m|${verdict% *}%|${verdict#* }")
            [ "${verdict#* }" = PASS ] || failed=1
        fi
    done
done

printf '\n%-20s %-9s %14s %14s %14s %9s %8s  %s\n' technique peak baseline predicted measured error saved result
for r in "${rows[@]}"; do
    IFS='|' read -r name metric b p m err verdict <<<"$r"
    saved=-
    if [[ $b =~ ^[0-9]+$ && $m =~ ^[0-9]+$ && $b != 0 ]]; then
        saved=$(awk -v b="$b" -v m="$m" 'BEGIN { printf "%.1f%%", (b - m) / b * 100 }')
    fi
    printf '%-20s %-9s %14s %14s %14s %9s %8s  %s\n' "$name" "$metric" "$b" "$p" "$m" "$err" "$saved" "$verdict"
done
echo "(bytes; error = (predicted - measured) / measured; saved = (baseline - measured) / baseline;" \
    "tolerance ${tolerance}%; device $device)"
[ -n "$keep" ] && echo "traces, reports and predictions in $work"

if [ "$failed" != 0 ]; then
    exit 1
fi
if [ -z "$have_simulate" ]; then
    exit 3
fi
exit 0
