#!/usr/bin/env bash
# Set memtrace up, trace the example PyTorch trainer and print the report.
#
# Usage: scripts/demo.sh [TRAINER_ARGS...]
#
# Runs scripts/setup.sh (installs Debian packages when missing: needs root
# then; builds into $BUILD_DIR, default build), then
#   memtrace run -o memtrace-demo.bin -- PYTHON examples/train_gpt.py ARGS...
#   memtrace report memtrace-demo.bin
# PYTHON is an interpreter that imports torch (scripts/find-python;
# MEMTRACE_PYTHON overrides).  The trace is left in memtrace-demo.bin in the
# repository root.
set -euo pipefail

cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}

scripts/setup.sh --no-bench

python=$(scripts/find-python)
memtrace=$build_dir/analyzer/memtrace
trace="memtrace-demo.bin"

if [ ! -x "$memtrace" ]; then
    echo "demo.sh: $memtrace was not built" >&2
    exit 1
fi

echo "demo.sh: tracing: $python examples/train_gpt.py $*" >&2
"$memtrace" run -o "$trace" -- "$python" examples/train_gpt.py "$@"
echo "demo.sh: report of $trace" >&2
"$memtrace" report "$trace"
