#!/usr/bin/env bash
# How fast traces are read: `memtrace report` against heaptrack_print on
# the same workload, in one invocation.
#
# Usage: scripts/bench-report.sh [--ops N] [--reps R]
#
# Records scripts/bench/malloc-bench.c (N alloc/free pairs, default
# 10,000,000, so 2N events) once under `memtrace run` and once under
# heaptrack, then times `memtrace report` and `heaptrack_print` on the
# traces R times (default 3) and prints the medians: seconds, events per
# second and peak RSS of the reader. Environment: MEMTRACE (default
# build/analyzer/memtrace), CC.
set -euo pipefail

ops=10000000
reps=3
while [ $# -gt 0 ]; do
    case $1 in
        --ops) ops=$2; shift ;;
        --reps) reps=$2; shift ;;
        -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "bench-report.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
memtrace=$(realpath "${MEMTRACE:-build/analyzer/memtrace}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -O2 -g -fno-omit-frame-pointer -o "$tmp/malloc-bench" scripts/bench/malloc-bench.c -lpthread

events=$((2 * ops))
"$memtrace" run -q -o "$tmp/m.bin" -- "$tmp/malloc-bench" --ops "$ops" >/dev/null
have_heaptrack=0
if command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null; then
    heaptrack -o "$tmp/h" "$tmp/malloc-bench" --ops "$ops" >/dev/null 2>&1 && have_heaptrack=1
fi

# Prints "seconds maxrss_kib" of one run of a command.
measure() {
    /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >/dev/null 2>"$tmp/err" || {
        cat "$tmp/err" >&2
        return 1
    }
    cat "$tmp/time"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

row() {
    local name=$1; shift
    local s=() r=()
    for _ in $(seq "$reps"); do
        read -r sec rss < <(measure "$@")
        s+=("$sec"); r+=("$rss")
    done
    local ms mr
    ms=$(printf '%s\n' "${s[@]}" | median)
    mr=$(printf '%s\n' "${r[@]}" | median)
    awk -v n="$name" -v s="$ms" -v r="$mr" -v e="$events" \
        'BEGIN { printf "| %-28s | %8.2f | %8.1f | %8.0f |\n", n, s, (s > 0 ? e / s / 1e6 : 0), r / 1024 }'
}

echo "Reading a trace of $events events (malloc-bench --ops $ops), medians of $reps runs"
echo "memtrace trace $(stat -c %s "$tmp/m.bin") bytes$( [ $have_heaptrack = 1 ] && echo ", heaptrack trace $(stat -c %s "$tmp/h.zst") bytes")"
echo
echo "| reader                       | seconds  | M events/s | RSS MiB |"
echo "|---|---:|---:|---:|"
row "memtrace report" "$memtrace" report "$tmp/m.bin"
row "memtrace report --json" "$memtrace" report --json "$tmp/m.bin"
if [ $have_heaptrack = 1 ]; then
    row "heaptrack_print" heaptrack_print "$tmp/h.zst"
else
    echo "| heaptrack_print              | (heaptrack not installed) | | |"
fi
