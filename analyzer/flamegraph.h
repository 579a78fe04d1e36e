/* flamegraph: `memtrace flamegraph`, where the heap's bytes come from, as
 * an interactive SVG written by memtrace itself or as folded stacks.
 *
 * The numbers are heap-view.h's per (stack, phase): for --metric peak the
 * bytes live at the heap peak (the default), allocated (all bytes ever
 * allocated), count (allocations), leaked (bytes live at the end); --phase
 * keeps the allocations made in one phase. Stacks are symbolized, allocator
 * frames left out at the innermost end, inlined calls expanded and merged
 * into a tree of frames (children by name, outermost first) whose nodes
 * carry the metric, bytes and blocks, and, per phase, how much of the value
 * was allocated in it: a frame is coloured by the phase holding most of its
 * value.
 *
 * SVG: one rectangle per frame wider than 0.1 pixel at full zoom (so the
 * file is bounded by the picture, not the trace), an inline script (no
 * external resources) for tooltips, click-to-zoom, search and, with
 * --perf, a second colouring by CPU samples. Folded: one line per distinct
 * stack, "outer;...;inner VALUE", inlined frames suffixed "_[i]", for
 * flamegraph.pl, inferno and speedscope.
 *
 * --perf FILE: `perf script` output of a `perf record -g` of the same run.
 * A frame's CPU samples are the samples whose stack (outermost first,
 * inlined frames not being in perf's stacks) starts with the frame's path
 * of non-inlined names; shown in the tooltip and as the alternative
 * colouring (white to red by the share of all samples).
 */
#ifndef MT_FLAMEGRAPH_H
#define MT_FLAMEGRAPH_H

/* `memtrace flamegraph FILE [-o OUT] [--metric M] [--phase NAME]
 * [--folded] [--perf FILE] [--title T] [--width PX] [--no-symbols]`;
 * argv[0] is "flamegraph". Exit status 0, 1 (error), 2 (usage). */
int mt_flamegraph_main(int argc, char **argv);

#endif
