#!/usr/bin/env bash
# Install memtrace's build and test dependencies (Debian 12) and build it.
#
# Usage: scripts/setup.sh [--no-bench] [-- MESON_SETUP_ARGS...]
#
#   --no-bench   do not install heaptrack (only the benchmarks need it)
#   BUILD_DIR    build directory, relative to the repository root
#                (default: build)
#
# Idempotent: apt-get runs only when a needed package is missing, and an
# existing build directory is reconfigured instead of set up again.  As a
# non-root user with packages missing it prints what to install and exits 1.
set -euo pipefail

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "$0"
}

bench=1
meson_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --no-bench) bench=0 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; meson_args=("$@"); break ;;
        *) echo "setup.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}

packages=(build-essential meson ninja-build pkg-config libunwind-dev libzstd-dev
          libcjson-dev libcriterion-dev libelf-dev libdw-dev python3-torch
          clang libclang-rt-14-dev chromium)
if [ "$bench" = 1 ]; then
    packages+=(heaptrack)
fi

log() { printf 'setup.sh: %s\n' "$*" >&2; }

if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in "${packages[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [ "$status" != "install ok installed" ]; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "all ${#packages[@]} packages already installed"
    elif [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages: ${missing[*]}"
        log "install them as root, e.g.:"
        log "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
        log "or run this script as root (sudo scripts/setup.sh)"
        exit 1
    else
        log "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
else
    log "dpkg-query not found (not a Debian system?); not installing packages."
    log "make sure these (or their equivalents) are installed: ${packages[*]}"
fi

for tool in meson ninja cc pkg-config; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "required tool '$tool' is not on PATH"
        exit 1
    fi
done

if [ -f "$build_dir/meson-private/coredata.dat" ]; then
    log "reconfiguring $build_dir"
    meson setup --reconfigure "$build_dir" "${meson_args[@]}"
else
    log "setting up $build_dir"
    meson setup "$build_dir" "${meson_args[@]}"
fi

ninja -C "$build_dir"
log "build ready in $build_dir"
