#!/bin/bash
# `memtrace simulate`'s predictions against real re-runs of the example
# trainer on the CPU (scripts/check-simulate.sh does the work): activation
# checkpointing of every block, 8-bit AdamW state with one absmax per 128
# values, and gradient accumulation over 2 micro-batches, each predicted
# from one baseline trace and held against the traced re-run with the
# technique really applied. Fails when a predicted host heap peak misses the
# measured one by more than 5%.
#
# Environment (set by tests/meson.build): MEMTRACE_TEST_MEMTRACE,
# MEMTRACE_TEST_SRCDIR. Exits 77 (skipped) when no Python with torch is
# found (scripts/find-python; MEMTRACE_PYTHON chooses one) or when the
# memtrace binary has no `simulate` command.
set -uo pipefail

memtrace=${MEMTRACE_TEST_MEMTRACE:?not set (run through meson test)}
src=${MEMTRACE_TEST_SRCDIR:?not set (run through meson test)}

if ! "$src/scripts/find-python" >/dev/null 2>&1; then
    echo "SKIP: no Python interpreter that can import torch"
    exit 77
fi
if ! "$memtrace" simulate --help >/dev/null 2>&1; then
    echo "SKIP: $memtrace has no 'simulate' command"
    exit 77
fi

rc=0
MEMTRACE=$memtrace "$src/scripts/check-simulate.sh" --device cpu --tolerance 5 \
    --only checkpoint-every,int8-optimizer,grad-accum-2 2>&1 || rc=$?
case $rc in
    0) echo "ok" ;;
    3) echo "SKIP: no 'simulate' command"; exit 77 ;;
    *) echo "FAIL: check-simulate.sh exited $rc"; exit 1 ;;
esac
