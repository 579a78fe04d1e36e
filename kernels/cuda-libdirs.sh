#!/bin/sh
# Print the library folders nvcc itself links with, one per line. nvcc on
# PATH may be a wrapper script or a symlink far from the toolkit, so its own
# dry run is asked rather than guessed from where it lies.
nvcc="$1"
"$nvcc" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 |
  sed -n 's/^#\$ LIBRARIES=//p' | tr ' ' '\n' | sed -n 's/^"\{0,1\}-L\([^"]*\)"\{0,1\}$/\1/p' |
  while read -r d; do
    [ -d "$d" ] && (cd "$d" && pwd -P)
  done
