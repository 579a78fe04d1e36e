#!/usr/bin/env bash
# Golden fixtures: each committed trace in tests/fixtures must report
# exactly its committed JSON (symbols off: nothing depends on the files of
# the machine that runs the test). A truncated fixture must exit 3.
#
# Usage: test-fixtures.sh MEMTRACE FIXTURE_DIR
set -uo pipefail

memtrace=$(realpath "$1")
dir=$2
cd "$dir" || exit 1
failed=0 passed=0
for bin in *.bin; do
    name=${bin%.bin}
    want=0
    [ "$name" = cut ] && want=3
    got=$("$memtrace" report --json --no-symbols "$bin" 2>/dev/null)
    rc=$?
    if [ "$rc" != "$want" ]; then
        echo "FAIL $bin: exit $rc, expected $want"
        failed=$((failed + 1))
    elif ! diff -u "$name.json" <(printf '%s\n' "$got") > /tmp/fixture-diff.$$; then
        echo "FAIL $bin: report differs from $name.json:"
        head -40 /tmp/fixture-diff.$$
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
done
rm -f /tmp/fixture-diff.$$
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
