#!/bin/bash
# The dynamic symbols libmemtrace.so exports are exactly the names in the
# global: section of preload/libmemtrace.sym: the functions it interposes
# and nothing else (a leaked internal symbol could be bound by the traced
# program or clash with one of its own). Version-definition entries (the
# absolute symbols a named version node adds) are not symbols of ours.
#
# Usage: test-symbols.sh LIBMEMTRACE.SO LIBMEMTRACE.SYM
# Exits 77 (skipped) without nm.
set -euo pipefail

lib=${1:?usage: test-symbols.sh LIBMEMTRACE.SO LIBMEMTRACE.SYM}
sym=${2:?usage: test-symbols.sh LIBMEMTRACE.SO LIBMEMTRACE.SYM}

if ! command -v nm >/dev/null 2>&1; then
    echo "SKIP: nm not found"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-symbols-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Names of the global: sections of the version script: comments dropped,
# everything after `global:` up to the next `local:` or `}`.
tr '\n' ' ' <"$sym" |
    sed -e 's:/\*\([^*]\|\*[^/]\)*\*/: :g' -e 's/global:/\nglobal:/g' -e 's/local:/\nlocal:/g' -e 's/}/\n}/g' |
    sed -n 's/^global://p' | tr ';' '\n' | tr -d ' \t' | grep -v '^$' | sort -u >"$tmp/expected"
if [ ! -s "$tmp/expected" ]; then
    echo "FAIL: no names found in the global: section of $sym"
    exit 1
fi
if grep -q '[*?[]' "$tmp/expected"; then
    echo "FAIL: $sym has wildcard patterns in global:, which this test cannot compare:"
    grep '[*?[]' "$tmp/expected" | sed 's/^/    /'
    exit 1
fi

# Defined dynamic symbols, without @VERSION suffixes; absolute symbols of
# value 0 are version definitions.
nm -D --defined-only "$lib" >"$tmp/nm"
awk 'NF >= 3 && !($2 == "A" && $1 ~ /^0+$/) { sub(/@.*/, "", $3); print $3 }' "$tmp/nm" | sort -u >"$tmp/actual"

comm -13 "$tmp/expected" "$tmp/actual" >"$tmp/extra"
comm -23 "$tmp/expected" "$tmp/actual" >"$tmp/missing"
status=0
if [ -s "$tmp/extra" ]; then
    echo "FAIL: $(basename "$lib") exports symbols not in $(basename "$sym"):"
    sed 's/^/    /' "$tmp/extra"
    status=1
fi
if [ -s "$tmp/missing" ]; then
    echo "FAIL: $(basename "$lib") does not export symbols listed in $(basename "$sym"):"
    sed 's/^/    /' "$tmp/missing"
    status=1
fi
if [ "$status" = 0 ]; then
    echo "ok: $(wc -l <"$tmp/actual") exported symbols, as listed: $(tr '\n' ' ' <"$tmp/actual")"
fi
exit "$status"
