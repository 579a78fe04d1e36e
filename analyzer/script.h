/* script: perf script's text format, both ways.
 *
 * Writing (`memtrace script FILE`): every heap allocation of the trace as
 * one sample of an event "memtrace:malloc" whose period is the allocation's
 * requested size, in the layout perf script prints for a `perf record -g`:
 *
 *   COMM PID/TID SEC.USEC: PERIOD memtrace:malloc:
 *   \t    IP FUNCTION+0xOFF (MODULE)        innermost frame first
 *   \t    ...
 *   (blank line)
 *
 * so stackcollapse-perf.pl, inferno-collapse-perf, speedscope and the like
 * read it (weighting by period gives bytes). Allocator frames are left out
 * at the innermost end as in the report; unknown functions print as
 * [unknown] and frames outside any module as ([unknown]), as perf does.
 * Two passes: the call tree first (a node may be defined after its use),
 * then the allocations in merged order; output is one sample per
 * allocation, so it is as large as the trace is long.
 *
 * Reading (mt_perf_parse): the samples of `perf script` output (default
 * fields) as stacks of function names, outermost first, offsets
 * ("+0x1f") stripped, for the flamegraph's CPU annotation. Lines that are
 * neither a sample header nor a frame are ignored.
 */
#ifndef MT_SCRIPT_H
#define MT_SCRIPT_H

#include <stdint.h>
#include <stdio.h>

#include "mt-error.h"

/* Called once per sample: frames[0] is the outermost. The strings are
 * valid during the call only. Returns 0 to go on or a negative code to
 * stop (returned by mt_perf_parse). */
typedef int (*mt_perf_sample_fn)(const char *const *frames, unsigned n, void *arg);

/* Reads path (perf script text). 0 and *samples, or a negative errno-style
 * code and err (cannot open; no sample in the file: -EINVAL). */
int mt_perf_parse(const char *path, mt_perf_sample_fn fn, void *arg, uint64_t *samples, struct mt_error *err);

/* `memtrace script [-o OUT] FILE`; argv[0] is "script". Exit status 0, 1
 * (error), 2 (usage). */
int mt_script_main(int argc, char **argv);

#endif
