/* Helpers shared by the Criterion suites that run programs and read their
 * traces (test-preload.c, test-run.c). Each test runs in a process of its
 * own with a fresh temporary directory, tu_tmpdir, made by tu_make_tmpdir
 * (the suites' .init) and removed by tu_remove_tmpdir (.fini). Failures
 * are Criterion assertions; nothing here returns an error.
 */
#ifndef MEMTRACE_TEST_UTIL_H
#define MEMTRACE_TEST_UTIL_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "report.h"

extern char tu_tmpdir[PATH_MAX];

void tu_make_tmpdir(void);
void tu_remove_tmpdir(void);

/* The value of an environment variable the test needs (set by meson). */
const char *tu_env(const char *name);

/* tu_tmpdir/name, in one of four rotating buffers. */
char *tu_in_tmp(const char *name);

/* Contents of tu_tmpdir/name, in one of two rotating buffers. */
char *tu_slurp(const char *name);

/* mt_report_compute on path; the trace must not be partial. */
void tu_report_of(const char *path, struct mt_report *rep);

/* Allocations of one size in a trace: how many, how many of them were
 * freed, how many are live at the end, and the most live at once. */
struct tu_sized {
    uint64_t allocs, frees, live, peak;
};
struct tu_sized tu_sized_events(const char *path, uint64_t size);

void tu_expect_exit(int status, int code);

/* Starts argv with stdout and stderr going to tu_tmpdir/stdout and
 * tu_tmpdir/stderr, in directory cwd (NULL: unchanged), in a process group
 * of its own, without MEMTRACE_* settings or LD_PRELOAD inherited. */
pid_t tu_spawn(char *const argv[], const char *cwd);
/* Waits for pid; its wait status. */
int tu_wait(pid_t pid);
/* Runs argv to the end; *pid_out (if not NULL) gets the pid it ran as. */
int tu_run_in(char *const argv[], const char *cwd, pid_t *pid_out);
int tu_run(char *const argv[]);

/* Runs `patterns SCENARIO` (MEMTRACE_TEST_PATTERNS) with libmemtrace.so
 * (MEMTRACE_TEST_LIB) preloaded, tracing into `trace`; its stdout is
 * discarded and it must exit 0. */
void tu_trace_pattern(const char *scenario, const char *trace);

#endif
