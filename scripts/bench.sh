#!/usr/bin/env bash
# Compare the overhead of memtrace and heaptrack with native runs.
#
# Usage: scripts/bench.sh [--ops N] [--reps R] [--steps S]
#                         [--no-memtrace] [--no-heaptrack] [--no-trainer]
#
# Workloads:
#   (a) malloc-bench, default call depth (3 frames at each malloc)
#   (b) malloc-bench --depth 40
#   (c) examples/train_gpt.py (PyTorch, CPU), also under memtrace with its
#       PyTorch integration off (memtrace-nophases: MEMTRACE_TORCH=0), which
#       gives the cost of the automatic phase detection
# each run natively, under `memtrace run -o FILE --` and under
# `heaptrack -o FILE`, R times (default 3); the tables show medians.
# A column is skipped, with a note, when its tool is missing.
#
# Environment:
#   MEMTRACE         memtrace command (default $BUILD_DIR/analyzer/memtrace)
#   BUILD_DIR        build directory (default build)
#   MEMTRACE_PYTHON  Python with torch for (c) (see scripts/find-python)
#   CC               C compiler for malloc-bench (default cc)
#
# Prints a plain table, then the same results as a markdown section for
# docs/PERFORMANCE.md.
set -euo pipefail

usage() {
    sed -n '2,20s/^# \{0,1\}//p' "$0"
}

ops=1000000
reps=3
steps=""
use_memtrace=1
use_heaptrack=1
use_trainer=1
while [ $# -gt 0 ]; do
    case $1 in
        --ops) ops=$2; shift ;;
        --reps) reps=$2; shift ;;
        --steps) steps=$2; shift ;;
        --no-memtrace) use_memtrace=0 ;;
        --no-heaptrack) use_heaptrack=0 ;;
        --no-trainer) use_trainer=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for v in "$ops" "$reps"; do
    case $v in
        ''|*[!0-9]*|0) echo "bench.sh: --ops and --reps take positive integers" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
repo=$PWD
build_dir=${BUILD_DIR:-build}
memtrace=${MEMTRACE:-$build_dir/analyzer/memtrace}
memtrace_shown=$memtrace  # as given, for notes that may end up in docs
case $memtrace in
    /*) ;;
    */*) memtrace=$repo/$memtrace ;;
esac

log() { printf 'bench.sh: %s\n' "$*" >&2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

notes=()

# ---- tools ---------------------------------------------------------------

tools=(native)
if [ "$use_memtrace" = 1 ]; then
    if [ -x "$memtrace" ]; then
        tools+=(memtrace)
    else
        notes+=("memtrace skipped: $memtrace_shown not found or not executable (build it with scripts/setup.sh or set MEMTRACE)")
    fi
fi
if [ "$use_heaptrack" = 1 ]; then
    if command -v heaptrack >/dev/null 2>&1; then
        tools+=(heaptrack)
    else
        notes+=("heaptrack skipped: not installed (apt-get install heaptrack)")
    fi
fi

python=""
if [ "$use_trainer" = 1 ]; then
    if python=$(scripts/find-python 2>"$tmp/find-python.err"); then
        :
    else
        notes+=("trainer skipped: $(tail -n 3 "$tmp/find-python.err" | head -n 1)")
        use_trainer=0
    fi
fi

# ---- build malloc-bench ----------------------------------------------------

bench_bin=$tmp/malloc-bench
log "building malloc-bench"
"${CC:-cc}" -O2 -g -fno-omit-frame-pointer -o "$bench_bin" scripts/bench/malloc-bench.c -lpthread

# ---- helpers -----------------------------------------------------------------

# median NUMBERS...: print the median (mean of the middle two when even).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) exit 1
              if (NR % 2) print v[(NR + 1) / 2]
              else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B with two decimals, "-" when either is missing.
ratio() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f\n", a / b }'
}

# pct A B: A against B as a signed percentage ("+1.3%").
pct() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%+.1f%%\n", (a / b - 1) * 100 }'
}

# div A B [FMT]
div() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN { if (b == 0) print "-"; else printf f "\n", a / b }'
}

# run_under TOOL DIR CMD...: run CMD under TOOL, writing any trace into DIR
# (which exists and is empty); stdout and stderr go to DIR/../out.
run_under() {
    local tool=$1 dir=$2
    shift 2
    case $tool in
        native) "$@" ;;
        memtrace) "$memtrace" run -o "$dir/trace.bin" -- "$@" ;;
        memtrace-nophases) MEMTRACE_TORCH=0 "$memtrace" run -o "$dir/trace.bin" -- "$@" ;;
        heaptrack) heaptrack -o "$dir/heaptrack" "$@" ;;
    esac
}

# field KEY FILE: the word after the first word KEY in FILE.
field() {
    awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' "$2"
}

# dir_bytes DIR: total size of the files in DIR.
dir_bytes() {
    find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

# raw_bytes DIR: total decompressed size of the .zst/.gz files in DIR
# (heaptrack's output), "-" when there are none or no decompressor.
raw_bytes() {
    local f total=0 found=0 n
    for f in "$1"/*; do
        [ -f "$f" ] || continue
        case $f in
            *.zst) command -v zstd >/dev/null 2>&1 || { echo -; return; }
                   n=$(zstd -dc -- "$f" | wc -c) ;;
            *.gz) n=$(gzip -dc -- "$f" | wc -c) ;;
            *) continue ;;
        esac
        total=$((total + n))
        found=1
    done
    if [ "$found" = 1 ]; then echo "$total"; else echo -; fi
}

# measure NAME TOOL CMD...: run R times; sets the globals
#   m_metric (median of the first metric), m_metric2 (second, trainer),
#   m_wall (median wall seconds), m_bytes (median trace bytes),
#   m_raw (median decompressed trace bytes), m_fail (1 when a run failed).
# The metric keys come from $metric_key / $metric2_key.
measure() {
    local name=$1 tool=$2
    shift 2
    local i dir out t0 t1 v v2 b r msg
    local -a vals=() vals2=() walls=() bytes=() raws=()
    m_fail=0
    for ((i = 1; i <= reps; i++)); do
        dir=$tmp/run/$name-$tool-$i
        out=$tmp/run/$name-$tool-$i.out
        mkdir -p "$dir"
        t0=$EPOCHREALTIME
        if ! run_under "$tool" "$dir" "$@" >"$out" 2>&1; then
            log "$name/$tool run $i failed; last lines of its output:"
            tail -n 5 "$out" >&2
            m_fail=1
        fi
        t1=$EPOCHREALTIME
        v=$(field "$metric_key" "$out")
        v2=""
        if [ -z "$v" ]; then
            log "$name/$tool run $i printed no '$metric_key'"
            m_fail=1
            rm -rf "$dir"
            continue
        fi
        vals+=("$v")
        if [ -n "$metric2_key" ]; then
            v2=$(field "$metric2_key" "$out")
            vals2+=("${v2:-0}")
        fi
        walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }')")
        b=$(dir_bytes "$dir")
        bytes+=("$b")
        if [ "$tool" = heaptrack ]; then
            r=$(raw_bytes "$dir")
            [ "$r" = - ] || raws+=("$r")
        fi
        msg="$name/$tool run $i/$reps: $metric_key $v${v2:+ $metric2_key $v2} wall ${walls[-1]} s"
        [ "$tool" = native ] || msg+=" trace $b B"
        log "$msg"
        rm -rf "$dir"
    done
    if [ ${#vals[@]} -eq 0 ]; then
        m_metric=- m_metric2=- m_wall=- m_bytes=- m_raw=-
        return
    fi
    m_metric=$(median "${vals[@]}")
    m_metric2=-
    [ ${#vals2[@]} -eq 0 ] || m_metric2=$(median "${vals2[@]}")
    m_wall=$(median "${walls[@]}")
    m_bytes=$(median "${bytes[@]}")
    m_raw=-
    [ ${#raws[@]} -eq 0 ] || m_raw=$(median "${raws[@]}")
}

# ---- malloc-bench ------------------------------------------------------------

declare -A res
events=$((2 * ops))
mb_rows=()
for wl in a b; do
    if [ "$wl" = a ]; then
        label="(a) malloc-bench, depth 3"
        args=(--ops "$ops")
    else
        label="(b) malloc-bench, depth 40"
        args=(--depth 40 --ops "$ops")
    fi
    metric_key=ns_per_op metric2_key=""
    for tool in "${tools[@]}"; do
        measure "mb-$wl" "$tool" "$bench_bin" "${args[@]}"
        res[$wl,$tool,ns]=$m_metric
        res[$wl,$tool,fail]=$m_fail
        if [ "$tool" = native ]; then
            res[$wl,$tool,bytes]=-
        else
            res[$wl,$tool,bytes]=$m_bytes
        fi
        res[$wl,$tool,raw]=$m_raw
    done
    for tool in "${tools[@]}"; do
        ns=${res[$wl,$tool,ns]}
        r=$(ratio "$ns" "${res[$wl,native,ns]}")
        b=${res[$wl,$tool,bytes]}
        bpe=$(div "$b" "$events")
        raw=${res[$wl,$tool,raw]}
        rawpe=$(div "$raw" "$events")
        flag=""
        [ "${res[$wl,$tool,fail]}" = 0 ] || flag=" (some runs failed)"
        mb_rows+=("$label|$tool$flag|$ns|$r|$b|$bpe|$rawpe")
    done
done

# ---- trainer ---------------------------------------------------------------------

tr_rows=()
if [ "$use_trainer" = 1 ]; then
    targs=(examples/train_gpt.py)
    [ -z "$steps" ] || targs+=(--steps "$steps")
    metric_key=time_per_step_ms metric2_key=startup_s
    tr_tools=("${tools[@]}")
    # memtrace with its PyTorch integration (phases, scopes, tags) switched
    # off: what the automatic phase detection costs.
    [[ " ${tools[*]} " != *" memtrace "* ]] || tr_tools+=(memtrace-nophases)
    for tool in "${tr_tools[@]}"; do
        measure trainer "$tool" "$python" "${targs[@]}"
        res[c,$tool,step]=$m_metric
        res[c,$tool,startup]=$m_metric2
        res[c,$tool,wall]=$m_wall
        res[c,$tool,bytes]=$m_bytes
        res[c,$tool,fail]=$m_fail
        [ "$tool" != native ] || res[c,$tool,bytes]=-
    done
    if [ -n "${res[c,memtrace-nophases,step]:-}" ]; then
        notes+=("phase detection (PyTorch integration) per step: memtrace ${res[c,memtrace,step]} ms against memtrace-nophases ${res[c,memtrace-nophases,step]} ms: $(pct "${res[c,memtrace,step]}" "${res[c,memtrace-nophases,step]}")")
    fi
    for tool in "${tr_tools[@]}"; do
        flag=""
        [ "${res[c,$tool,fail]}" = 0 ] || flag=" (some runs failed)"
        b=${res[c,$tool,bytes]}
        mb=$(div "$b" 1048576 %.1f)
        tr_rows+=("(c) train_gpt.py|$tool$flag|${res[c,$tool,step]}|$(ratio "${res[c,$tool,step]}" "${res[c,native,step]}")|${res[c,$tool,startup]}|${res[c,$tool,wall]}|$(ratio "${res[c,$tool,wall]}" "${res[c,native,wall]}")|$mb")
    done
fi

# ---- output ------------------------------------------------------------------------

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
ncpu=$(nproc 2>/dev/null || echo "?")
kernel=$(uname -r)
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo "?")
ht_version="heaptrack not run"
if [[ " ${tools[*]} " == *" heaptrack "* ]]; then
    ht_version=$(heaptrack --version 2>/dev/null | head -n 1 || echo "?")
fi
mt_rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "?")
torch_version=-
if [ "$use_trainer" = 1 ]; then
    torch_version=$("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "?")
fi
when=$(date -u +%Y-%m-%d)

echo
echo "memtrace benchmarks, $when: $cpu, $ncpu CPUs, Linux $kernel, $glibc"
echo "memtrace $mt_rev; $ht_version; torch $torch_version; $reps runs each, medians; malloc-bench --ops $ops"
echo
printf '%-28s %-10s %10s %9s %12s %9s %12s\n' workload tool ns/op x-native trace-bytes B/event raw-B/event
for row in "${mb_rows[@]}"; do
    IFS='|' read -r a b c d e f g <<<"$row"
    printf '%-28s %-10s %10s %9s %12s %9s %12s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g"
done
if [ ${#tr_rows[@]} -gt 0 ]; then
    echo
    printf '%-28s %-18s %10s %9s %10s %8s %9s %9s\n' workload tool step-ms x-native startup-s wall-s x-native trace-MB
    for row in "${tr_rows[@]}"; do
        IFS='|' read -r a b c d e f g h <<<"$row"
        printf '%-28s %-18s %10s %9s %10s %8s %9s %9s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h"
    done
fi
for n in "${notes[@]}"; do
    echo "note: $n"
done

echo
echo "----- markdown for docs/PERFORMANCE.md -----"
echo
echo "### Results of $when"
echo
echo "Machine: $cpu, $ncpu CPUs, Linux $kernel, $glibc."
echo "memtrace $mt_rev, $ht_version, torch $torch_version."
echo "Each number is the median of $reps runs; malloc-bench does $ops alloc/free pairs"
echo "(B/event = trace bytes / $events)."
echo
echo "| workload | tool | ns/op | × native | trace bytes | B/event | uncompressed B/event |"
echo "|---|---|---:|---:|---:|---:|---:|"
for row in "${mb_rows[@]}"; do
    IFS='|' read -r a b c d e f g <<<"$row"
    echo "| $a | $b | $c | $d | $e | $f | $g |"
done
if [ ${#tr_rows[@]} -gt 0 ]; then
    echo
    echo "| workload | tool | ms/step | × native | startup s | wall s | × native | trace MiB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for row in "${tr_rows[@]}"; do
        IFS='|' read -r a b c d e f g h <<<"$row"
        echo "| $a | $b | $c | $d | $e | $f | $g | $h |"
    done
fi
if [ ${#notes[@]} -gt 0 ]; then
    echo
    for n in "${notes[@]}"; do
        echo "- $n"
    done
fi
echo
echo "----- end of markdown -----"
