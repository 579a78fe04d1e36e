#!/usr/bin/env bash
# Set memtrace up and run its test suite.
#
# Usage: scripts/test.sh [MESON_TEST_ARGS...]
#
# Runs scripts/setup.sh (installs Debian packages when missing: needs root
# then; builds into $BUILD_DIR, default build), then
#   meson test -C BUILD_DIR --print-errorlogs MESON_TEST_ARGS...
# and exits with its status.
set -euo pipefail

cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}

scripts/setup.sh --no-bench

status=0
meson test -C "$build_dir" --print-errorlogs "$@" || status=$?
exit "$status"
