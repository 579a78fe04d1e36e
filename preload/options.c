/* See options.h. getenv() does not allocate, and strtol only parses, so this
 * runs safely inside the first intercepted malloc. */
#include "options.h"
#include "log.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "memtrace-format.h"

struct mti_options mti_opt = {
    .output = NULL,
    .follow = true,
    .mmap = true,
    .stack_depth = 64,
    .rss_interval_ms = 10,
    .time_shift = 10,
    .verbose = false,
    .enabled = true,
    .torch = true,
};

enum opt_type { OPT_STRING, OPT_BOOL, OPT_LONG };

static const struct opt_row {
    const char *name;
    enum opt_type type;
    void *value;
    long min, max;
    const char *doc;
} rows[] = {
    { "MEMTRACE_OUTPUT", OPT_STRING, &mti_opt.output, 0, 0,
      "trace file of the first process; others add their pid (default memtrace.<pid>.bin)" },
    { "MEMTRACE_FOLLOW", OPT_BOOL, &mti_opt.follow, 0, 1,
      "trace forked children and exec'd programs into files of their own" },
    { "MEMTRACE_MMAP", OPT_BOOL, &mti_opt.mmap, 0, 1,
      "record mmap, munmap and mremap calls" },
    { "MEMTRACE_STACK_DEPTH", OPT_LONG, &mti_opt.stack_depth, 1, MT_MAX_FRAMES,
      "most frames recorded per stack" },
    { "MEMTRACE_RSS_INTERVAL_MS", OPT_LONG, &mti_opt.rss_interval_ms, 1, 3600000,
      "least time between two RSS samples" },
    { "MEMTRACE_TIME_SHIFT", OPT_LONG, &mti_opt.time_shift, 0, 20,
      "record times in units of 2^N nanoseconds" },
    { "MEMTRACE_VERBOSE", OPT_BOOL, &mti_opt.verbose, 0, 1,
      "print the effective settings and the trace file name at start" },
    { "MEMTRACE_ENABLE", OPT_BOOL, &mti_opt.enabled, 0, 1,
      "0 loads the library but records nothing" },
    { "MEMTRACE_TORCH", OPT_BOOL, &mti_opt.torch, 0, 1,
      "in a Python process, load the PyTorch integration (phases, modules, categories)" },
};

static int parse_bool(const char *s, bool *ret)
{
    if (!strcmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on")) {
        *ret = true;
        return 0;
    }
    if (!strcmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off")) {
        *ret = false;
        return 0;
    }
    return -EINVAL;
}

static int parse_long(const char *s, long min, long max, long *ret)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -EINVAL;
    *ret = v;
    return 0;
}

void mti_options_load(void)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct opt_row *r = &rows[i];
        const char *s = getenv(r->name);
        if (!s)
            continue;
        int err = 0;
        switch (r->type) {
        case OPT_STRING:
            if (*s)
                *(const char **)r->value = s;
            break;
        case OPT_BOOL:
            err = parse_bool(s, (bool *)r->value);
            break;
        case OPT_LONG:
            err = parse_long(s, r->min, r->max, (long *)r->value);
            break;
        }
        if (err) {
            if (r->type == OPT_BOOL)
                mti_log("ignoring %s='%s': expected 0 or 1", r->name, s);
            else
                mti_log("ignoring %s='%s': expected a number from %ld to %ld", r->name, s, r->min, r->max);
        }
    }
    if (!mti_opt.verbose)
        return;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct opt_row *r = &rows[i];
        switch (r->type) {
        case OPT_STRING: {
            const char *v = *(const char **)r->value;
            mti_log("%s=%s", r->name, v ? v : "(default)");
            break;
        }
        case OPT_BOOL:
            mti_log("%s=%d", r->name, *(bool *)r->value ? 1 : 0);
            break;
        case OPT_LONG:
            mti_log("%s=%ld", r->name, *(long *)r->value);
            break;
        }
    }
}
