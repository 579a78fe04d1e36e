/* The one table of MEMTRACE_* settings read by libmemtrace.so.
 *
 * Each row: name, type, default, description (docs/ENVIRONMENT.md mirrors
 * this table; keep them in step). mti_options_load() reads the environment
 * once, at initialisation, before any thread of ours exists; afterwards the
 * values are read-only. A malformed value is reported once and the default
 * kept. MEMTRACE_VERBOSE=1 prints the effective values.
 */
#ifndef MEMTRACE_PRELOAD_OPTIONS_H
#define MEMTRACE_PRELOAD_OPTIONS_H

#include <stdbool.h>

struct mti_options {
    const char *output;     /* MEMTRACE_OUTPUT; NULL = memtrace.<pid>.bin */
    bool follow;            /* MEMTRACE_FOLLOW */
    bool mmap;              /* MEMTRACE_MMAP */
    long stack_depth;       /* MEMTRACE_STACK_DEPTH */
    long rss_interval_ms;   /* MEMTRACE_RSS_INTERVAL_MS */
    long time_shift;        /* MEMTRACE_TIME_SHIFT */
    bool verbose;           /* MEMTRACE_VERBOSE */
    bool enabled;           /* MEMTRACE_ENABLE */
    bool torch;             /* MEMTRACE_TORCH */
};

extern struct mti_options mti_opt;

void mti_options_load(void);

#endif
