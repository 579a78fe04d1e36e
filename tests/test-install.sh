#!/bin/bash
# An installed memtrace finds the installed libmemtrace.so on its own.
#
# `meson install --destdir` cannot show it, because memtrace bakes the
# library directory of its prefix in at build time; so this configures a
# second build of the same sources with a temporary prefix, installs it
# there and runs the installed memtrace from a directory outside the source
# and build trees, with MEMTRACE_LIB unset.
#
# Environment (set by tests/meson.build): MEMTRACE_TEST_SRCDIR. Exits 77
# (skipped) without meson or ninja.
set -euo pipefail

src=${MEMTRACE_TEST_SRCDIR:?not set (run through meson test)}
meson=${MESON:-meson}
ninja=${NINJA:-ninja}
for tool in "$meson" "$ninja"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not found"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unset MEMTRACE_LIB MEMTRACE_OUTPUT MEMTRACE_SESSION MEMTRACE_FOLLOW MEMTRACE_ENABLE MEMTRACE_VERBOSE LD_PRELOAD

prefix=$tmp/prefix
# step DESCRIPTION CMD...: runs CMD, its output in $tmp/step.log, shown
# when it fails.
step() {
    local what=$1 rc=0
    shift
    "$@" >"$tmp/step.log" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        echo "FAIL: $what (exit $rc): $*"
        tail -n 40 "$tmp/step.log" | sed 's/^/    /'
        exit 1
    fi
}

step "configure" "$meson" setup "$tmp/build" "$src" --prefix="$prefix" -Dtests=false
step "build and install" "$ninja" -C "$tmp/build" install

installed=$prefix/bin/memtrace
if [ ! -x "$installed" ]; then
    echo "FAIL: no $installed after install"
    exit 1
fi
libs=$(find "$prefix" -name libmemtrace.so)
if [ -z "$libs" ]; then
    echo "FAIL: no libmemtrace.so installed under the prefix"
    exit 1
fi
echo "installed: ${installed#"$tmp"/} ${libs//$tmp\//}"

# Outside the source tree, and away from the build tree the library was
# built in.
mkdir "$tmp/elsewhere"
cd "$tmp/elsewhere"
rm -rf "$tmp/build"

step "memtrace run with the installed library" "$installed" run -o "$tmp/x.bin" -- /bin/true
if ! grep -q "^memtrace: trace written to $tmp/x.bin" "$tmp/step.log"; then
    echo "FAIL: memtrace run did not say it wrote the trace:"
    sed 's/^/    /' "$tmp/step.log"
    exit 1
fi
step "memtrace report of the trace" "$installed" report --json "$tmp/x.bin"
if ! grep -q '"complete":[[:space:]]*true' "$tmp/step.log"; then
    echo "FAIL: the report of the trace of /bin/true is not complete:"
    sed 's/^/    /' "$tmp/step.log"
    exit 1
fi

# The library preloaded is the installed one.
# shellcheck disable=SC2016 # $LD_PRELOAD is for the inner shell
step "memtrace run of a command that prints LD_PRELOAD" \
    "$installed" run -q -o "$tmp/y.bin" -- /bin/sh -c 'printf "%s\n" "$LD_PRELOAD"'
preload=$(cat "$tmp/step.log")
case $preload in
    "$prefix"/*/libmemtrace.so) ;;
    *)
        echo "FAIL: LD_PRELOAD is '$preload', not a library under the prefix"
        exit 1
        ;;
esac
echo "ok: LD_PRELOAD=${preload#"$tmp"/}"
