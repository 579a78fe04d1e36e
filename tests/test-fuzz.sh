#!/usr/bin/env bash
# Short libFuzzer run of the trace reader (tests/fuzz-reader.c) under ASan
# and UBSan, seeded with real traces: raw and packed, several threads, a
# forked child, mappings, a killed process and a truncated file.
#
# Usage: test-fuzz.sh SRCDIR MEMTRACE LIBMEMTRACE PATTERNS [SECONDS]
# Exits 77 (skipped) when clang with libFuzzer is not installed.
set -euo pipefail

src=$(realpath "$1") memtrace=$(realpath "$2") lib=$(realpath "$3") patterns=$(realpath "$4") seconds=${5:-20}
cc=${FUZZ_CC:-clang}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! command -v "$cc" >/dev/null; then
    echo "test-fuzz: $cc not found; skipped"
    exit 77
fi
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' > "$tmp/probe.c"
if ! "$cc" -fsanitize=fuzzer "$tmp/probe.c" -o "$tmp/probe" 2>/dev/null; then
    echo "test-fuzz: $cc cannot build libFuzzer targets (libclang-rt missing?); skipped"
    exit 77
fi

"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -D_GNU_SOURCE -I"$src/include" -I"$src/analyzer" \
    "$src/tests/fuzz-reader.c" "$src/analyzer/reader.c" "$src/analyzer/crc32.c" \
    "$src/analyzer/live-table.c" "$src/analyzer/range-set.c" \
    -lzstd -o "$tmp/fuzz-reader"

mkdir "$tmp/corpus"
for s in basic forks maps reallocs end-kill; do
    { ( cd "$tmp" && MEMTRACE_SESSION= MEMTRACE_OUTPUT="$tmp/$s.bin" LD_PRELOAD="$lib" \
        "$patterns" "$s" >/dev/null 2>&1 ) || true; } 2>/dev/null
done
for f in "$tmp"/*.bin; do
    cp "$f" "$tmp/corpus/raw-$(basename "$f")"
    "$memtrace" pack --force "$f" >/dev/null
    cp "$f" "$tmp/corpus/packed-$(basename "$f")"
    head -c $(( $(stat -c %s "$f") / 2 )) "$f" > "$tmp/corpus/cut-$(basename "$f")"
done

echo "test-fuzz: $(ls "$tmp/corpus" | wc -l) seed traces, ${seconds}s of fuzzing"
"$tmp/fuzz-reader" -max_total_time="$seconds" -seed=1 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$tmp/" "$tmp/corpus" 2>"$tmp/log" || {
    tail -40 "$tmp/log"
    echo "test-fuzz: the reader failed on an input (see above)"
    exit 1
}
grep -E "stat::number_of_executed_units|Done" "$tmp/log" | head -3
echo "1 passed, 0 failed"
