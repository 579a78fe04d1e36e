#!/bin/bash
# `memtrace flamegraph`, `timeline` and `script` (analyzer/flamegraph.c,
# timeline.c, script.c, heap-view.c) on examples/phases.c, whose heap is
# known: folded totals equal the report's numbers exactly (peak, allocated,
# count, leaked; the phases' folded totals add up to the whole), the SVG
# and HTML are well-formed XML holding the peak site's label, the Chrome
# JSON has counter and complete events, `script` output parses back to the
# allocations, --perf annotates frames, and bad input gives one line on
# stderr, a non-zero exit and no output file.
#
# Usage: test-flamegraph.sh [render]
#   render: instead, draw both pictures with headless Chromium and check the
#   PNGs are not blank (exits 77, skipped, without chromium).
#
# Environment (set by tests/meson.build): MEMTRACE_TEST_MEMTRACE,
# MEMTRACE_TEST_EXAMPLE.
set -euo pipefail

memtrace=${MEMTRACE_TEST_MEMTRACE:?not set (run through meson test)}
example=${MEMTRACE_TEST_EXAMPLE:?not set (run through meson test)}
mode=${1:-}

if [ "$mode" = render ]; then
    chromium=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
    if [ -z "$chromium" ]; then
        echo "SKIP: no chromium (apt-get install chromium)"
        exit 77
    fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memtrace-flamegraph-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unset MEMTRACE_OUTPUT MEMTRACE_SESSION MEMTRACE_LIB MEMTRACE_FOLLOW MEMTRACE_ENABLE MEMTRACE_VERBOSE LD_PRELOAD
cd "$tmp"

fail() { echo "FAIL: $*" >&2; exit 1; }

"$memtrace" run -q -o ph.bin -- "$example" 3 > expect.txt
expect() { awk -v k="$1" '$1 == "expect" && $2 == k { print $3 }' expect.txt; }
report_key() { # host.KEY from the JSON report
    "$memtrace" report --json ph.bin | python3 -c "import json,sys; print(json.load(sys.stdin)['host']['$1'])"
}
folded_total() { awk '{ s += $NF } END { printf "%d\n", s }'; }

if [ "$mode" = render ]; then
    "$memtrace" flamegraph ph.bin -o fg.svg
    "$memtrace" timeline ph.bin -o tl.svg
    for pic in fg tl; do
        h=$(python3 -c "import xml.etree.ElementTree as E; print(int(float(E.parse('$pic.svg').getroot().get('height'))))")
        timeout 120 "$chromium" --headless --disable-gpu --no-sandbox --hide-scrollbars --no-first-run \
            --user-data-dir="$tmp/chrome-$pic" --window-size=1200,"$h" --screenshot="$tmp/$pic.png" \
            "file://$tmp/$pic.svg" > chrome-$pic.log 2>&1 || { cat chrome-$pic.log; fail "chromium on $pic.svg"; }
        # Decode the PNG (8-bit RGB/RGBA, any filter) and count pixels that
        # differ from the background and distinct colours.
        python3 - "$pic.png" <<'EOF'
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, w = 8, b'', 0
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
        assert depth == 8 and ctype in (2, 6), (depth, ctype)
        bpp = 3 if ctype == 2 else 4
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
pixels = []
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, bpp))
    prev = line
bg = max(set(pixels[:5000]), key=pixels[:5000].count)
other = sum(1 for p in pixels if p != bg)
colours = len(set(pixels))
print(f'{sys.argv[1]}: {w}x{h}, {other} pixels not background, {colours} colours')
assert other > w * h // 50, 'picture is nearly blank'
assert colours >= 8, 'too few colours'
EOF
    done
    echo "rendered both pictures"
    exit 0
fi

# ---- folded totals against the report ---------------------------------------
peak=$(expect peak)
[ "$("$memtrace" flamegraph ph.bin --folded | folded_total)" = "$peak" ] || fail "peak folded total != $peak"
[ "$("$memtrace" flamegraph ph.bin --folded --metric allocated | folded_total)" = "$(report_key total_allocated_bytes)" ] ||
    fail "allocated folded total"
[ "$("$memtrace" flamegraph ph.bin --folded --metric count | folded_total)" = "$(report_key alloc_count)" ] ||
    fail "count folded total"
[ "$("$memtrace" flamegraph ph.bin --folded --metric leaked | folded_total)" = "$(report_key end_bytes)" ] ||
    fail "leaked folded total"
sum=0
for p in other forward backward optimizer; do
    n=$("$memtrace" flamegraph ph.bin --folded --metric allocated --phase "$p" | folded_total)
    [ "$n" -gt 0 ] || [ "$p" = other ] || fail "no bytes allocated in phase $p"
    sum=$((sum + n))
done
[ "$sum" = "$(report_key total_allocated_bytes)" ] || fail "phases' allocated totals add up to $sum"
"$memtrace" flamegraph ph.bin --folded | grep -q ';take [0-9]*$' || fail "folded stacks lack the allocating function"
"$memtrace" flamegraph ph.bin --folded | grep -q '^_start;' || fail "folded stacks do not start outermost"
echo "folded totals match the report"

# ---- flamegraph.pl (when installed) ------------------------------------------
if command -v flamegraph.pl > /dev/null; then
    "$memtrace" flamegraph ph.bin --folded | flamegraph.pl > fgpl.svg
    python3 -c "import xml.etree.ElementTree as E; E.parse('fgpl.svg')"
    echo "flamegraph.pl accepted the folded stacks"
else
    echo "flamegraph.pl not installed: not checked"
fi

# ---- SVG, HTML, Chrome JSON ---------------------------------------------------
"$memtrace" flamegraph ph.bin -o fg.svg
"$memtrace" flamegraph ph.bin --metric count --phase forward -o fgc.svg
"$memtrace" timeline ph.bin -o tl.svg --chrome tl.json
"$memtrace" timeline ph.bin -o tl.html
python3 - <<'EOF'
import json
import xml.etree.ElementTree as E
ns = '{http://www.w3.org/2000/svg}'
for name in ('fg.svg', 'fgc.svg', 'tl.svg', 'tl.html'):
    root = E.parse(name).getroot()
    texts = ' '.join(''.join(t.itertext()) for t in root.iter(ns + 'text'))
    assert 'take' in texts, (name, 'peak site label missing')
    assert len(list(root.iter(ns + 'rect'))) > 3, name
fg = E.parse('fg.svg').getroot()
frames = [g for g in fg.iter(ns + 'g') if g.get('class') == 'f']
assert frames and frames[0].get('data-n') == 'all'
assert any('phase: ' in g.find(ns + 'title').text for g in frames), 'no phase in tooltips'
assert fg.find(ns + 'script') is not None
peak = [t for t in E.parse('tl.svg').getroot().iter(ns + 'text') if t.get('id') == 'peak']
assert peak and 'take' in ''.join(peak[0].itertext()), 'timeline peak label'
j = json.load(open('tl.json'))
ev = j['traceEvents']
kinds = {e['ph'] for e in ev}
assert {'C', 'X'} <= kinds, kinds
assert {e['name'] for e in ev if e['ph'] == 'X'} >= {'forward', 'backward', 'optimizer', 'step 0'}
heap = [e for e in ev if e['ph'] == 'C' and e['name'] == 'heap']
assert heap and max(sum(e['args'].values()) for e in heap) > 0
print('SVG, HTML and JSON well-formed;', len(frames), 'frames,', len(ev), 'trace events')
EOF

# ---- memtrace script, parsed back ----------------------------------------------
"$memtrace" script ph.bin > script.txt
python3 - "$(report_key total_allocated_bytes)" "$(report_key alloc_count)" <<'EOF'
import re, sys
want_bytes, want_count = int(sys.argv[1]), int(sys.argv[2])
head = re.compile(r'^(\S.*?)\s+(\d+)/(\d+)\s+(\d+)\.(\d{6}):\s+(\d+)\s+(\S+):\s*$')
frame = re.compile(r'^\t\s*([0-9a-f]+) (.+) \((.*)\)$')
samples, total, cur = 0, 0, None
for line in open('script.txt'):
    line = line.rstrip('\n')
    if not line:
        assert cur, 'sample without frames'
        cur = None
        continue
    m = head.match(line)
    if m:
        assert m.group(7) == 'memtrace:malloc', line
        samples += 1
        total += int(m.group(6))
        cur = []
        continue
    m = frame.match(line)
    assert m and cur is not None, repr(line)
    cur.append(m.group(2))
assert (samples, total) == (want_count, want_bytes), (samples, total, want_count, want_bytes)
print('script:', samples, 'samples,', total, 'bytes')
EOF
if command -v stackcollapse-perf.pl > /dev/null; then
    [ "$(stackcollapse-perf.pl script.txt | folded_total)" -gt 0 ] || fail "stackcollapse-perf.pl"
fi

# ---- --perf: samples of a perf script file on the frames ---------------------
cat > perf.txt <<'EOF'
phases-example 100 1.000000:     250000 cpu-clock:ppp:
	    1000 take+0x10 (/x/phases-example)
	    1001 main+0x20 (/x/phases-example)
	    1002 __libc_start_call_main+0x7a (/lib/libc.so.6)
	    1003 __libc_start_main_impl+0x85 (/lib/libc.so.6)
	    1004 _start+0x21 (/x/phases-example)

phases-example 100 1.000100:     250000 cpu-clock:ppp:
	    1001 main+0x20 (/x/phases-example)
	    1002 __libc_start_call_main+0x7a (/lib/libc.so.6)
	    1003 __libc_start_main_impl+0x85 (/lib/libc.so.6)
	    1004 _start+0x21 (/x/phases-example)

EOF
"$memtrace" flamegraph ph.bin --perf perf.txt -o fgp.svg
python3 - <<'EOF'
import xml.etree.ElementTree as E
ns = '{http://www.w3.org/2000/svg}'
cpu = {g.get('data-n'): g.find(ns + 'title').text for g in E.parse('fgp.svg').getroot().iter(ns + 'g')
       if g.get('class') == 'f'}
assert 'CPU: 2 samples (100.00%)' in cpu['main'], cpu['main']
assert 'CPU: 1 samples (50.00%)' in cpu['take'], cpu['take']
print('perf samples annotate the frames')
EOF

# ---- bad input -------------------------------------------------------------------
mkdir out
head -c 300 ph.bin > cut.bin
python3 -c "d=bytearray(open('ph.bin','rb').read()); d[200:260]=b'\xff'*60; open('bad.bin','wb').write(d)"
printf 'not a trace at all\n' > junk.bin
check_bad() { # expected-output-file command...
    local outf=$1
    shift
    if "$@" > /dev/null 2> err.txt; then fail "succeeded: $*"; fi
    [ "$(wc -l < err.txt)" = 1 ] || { cat err.txt; fail "not one line on stderr: $*"; }
    [ ! -e "$outf" ] || fail "left $outf: $*"
    [ -z "$(ls out)" ] || fail "left files in out/: $(ls out)"
    echo "  refused: $(cat err.txt)"
}
check_bad out/a.svg "$memtrace" flamegraph missing.bin -o out/a.svg
check_bad out/a.svg "$memtrace" flamegraph junk.bin -o out/a.svg
check_bad out/a.svg "$memtrace" flamegraph bad.bin -o out/a.svg
check_bad out/a.svg "$memtrace" flamegraph ph.bin --metric bogus -o out/a.svg
check_bad out/a.svg "$memtrace" flamegraph ph.bin --phase nosuchphase -o out/a.svg
check_bad out/a.svg "$memtrace" flamegraph ph.bin --perf missing.txt -o out/a.svg
check_bad out/a.svg "$memtrace" flamegraph ph.bin --perf junk.bin -o out/a.svg
check_bad out/a.svg "$memtrace" flamegraph ph.bin -o no/such/dir/a.svg
check_bad out/t.svg "$memtrace" timeline missing.bin -o out/t.svg
check_bad out/t.svg "$memtrace" timeline bad.bin -o out/t.svg --chrome out/t.json
check_bad out/t.json "$memtrace" timeline ph.bin -o out/t.svg --chrome no/such/dir/t.json
check_bad out/s.txt "$memtrace" script junk.bin -o out/s.txt
# a truncated trace is not an error: what is complete is drawn
"$memtrace" flamegraph cut.bin -o out/cut.svg && python3 -c "import xml.etree.ElementTree as E; E.parse('out/cut.svg')"
# GPU panels: per-tensor events on two devices (tests/programs/gpu-tensors.c)
if [ -n "${MEMTRACE_TEST_GPU_TENSORS:-}" ]; then
    "$memtrace" run -q -o gpu.bin -- "$MEMTRACE_TEST_GPU_TENSORS" || fail "gpu-tensors did not run"
    "$memtrace" timeline gpu.bin -o out/gpu.svg --chrome out/gpu.json || fail "timeline of a GPU trace"
    python3 -c "import xml.etree.ElementTree as E, json; E.parse('out/gpu.svg'); json.load(open('out/gpu.json'))" ||
        fail "GPU timeline: not well formed"
    for dev in 0 1; do
        grep -q "GPU $dev: reserved and allocated" out/gpu.svg || fail "GPU timeline: no panel for GPU $dev"
    done
fi
echo "all checks passed"
