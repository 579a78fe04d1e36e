/* Tests of libmemtrace.so against programs whose allocations are known.
 *
 * Each test runs tests/programs/patterns.c (one scenario per test) with the
 * library preloaded, then reads the trace back with the reader and the
 * report code and compares with figures the scenario's own code implies.
 * Sizes are multiples of 4096 plus a tag (see patterns.c) so a scenario's
 * events can be picked out exactly even where the C library allocates for
 * itself (thread creation). Paths come from the environment that
 * tests/meson.build sets: MEMTRACE_TEST_LIB, MEMTRACE_TEST_PATTERNS,
 * MEMTRACE_TEST_MEMTRACE.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reader.h"
#include "report.h"
#include "test-util.h"

#define U 4096u



TestSuite(preload, .init = tu_make_tmpdir, .fini = tu_remove_tmpdir, .timeout = 120);


/* Runs argv with extra "NAME=value" settings; stdout and stderr go to
 * files in tu_tmpdir. Returns the wait status. */
static int run_with(char *const argv[], const char *const *envs)
{
    char out[PATH_MAX + 64], err[PATH_MAX + 64];
    snprintf(out, sizeof(out), "%s/stdout", tu_tmpdir);
    snprintf(err, sizeof(err), "%s/stderr", tu_tmpdir);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        for (const char *const *p = envs; p && *p; p++)
            putenv((char *)*p);
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return status;
}

static char *trace_path(const char *name)
{
    static char buf[PATH_MAX + 64];
    snprintf(buf, sizeof(buf), "%s/%s", tu_tmpdir, name);
    return buf;
}

/* Runs `patterns scenario` preloaded, tracing into tu_tmpdir/t.bin. */
static int run_pattern(const char *scenario, const char *extra_env)
{
    static char pre[PATH_MAX + 64], out[PATH_MAX + 64];
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", tu_env("MEMTRACE_TEST_LIB"));
    snprintf(out, sizeof(out), "MEMTRACE_OUTPUT=%s/t.bin", tu_tmpdir);
    const char *envs[] = { pre, out, "MEMTRACE_SESSION=", extra_env, NULL };
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_PATTERNS"), (char *)scenario, NULL };
    return run_with(argv, envs);
}





static void expect_heap(const char *scenario, uint64_t peak, uint64_t allocs, uint64_t total)
{
    tu_expect_exit(run_pattern(scenario, NULL), 0);
    struct mt_report rep;
    tu_report_of(trace_path("t.bin"), &rep);
    cr_expect_eq(rep.host.peak_bytes, peak, "%s: peak %lu, expected %lu", scenario,
                 (unsigned long)rep.host.peak_bytes, (unsigned long)peak);
    cr_expect_eq(rep.host.end_bytes, 0);
    cr_expect_eq(rep.host.alloc_count, allocs, "%s: %lu allocations", scenario, (unsigned long)rep.host.alloc_count);
    cr_expect_eq(rep.host.free_count, allocs);
    cr_expect_eq(rep.host.total_allocated_bytes, total);
    cr_expect_eq(rep.host.unmatched_free_count, 0);
    cr_expect_eq(rep.host.inconsistent_count, 0);
    cr_expect(rep.complete);
    cr_expect(rep.host.rss_peak_bytes > 0);
    cr_expect(rep.stacks > 0);
    cr_expect(rep.modules > 0);
    mt_report_destroy(&rep);
}

Test(preload, malloc_free)
{
    expect_heap("basic", 6 * U + 6, 4, 7 * U + 10);
}

Test(preload, calloc)
{
    expect_heap("callocs", 13 * U + 26, 3, 13 * U + 26);
}

Test(preload, realloc_grow_shrink_null_zero_and_reallocarray)
{
    /* realloc: NULL->2U+1, ->8U+1, ->U+1, ->0 (frees); reallocarray:
     * NULL->3U, ->6U. A realloc releases the old block before the new one
     * counts, so the peak is the largest single block. */
    expect_heap("reallocs", 8 * U + 1, 5, (2 * U + 1) + (8 * U + 1) + (U + 1) + 3 * U + 6 * U);
}

Test(preload, aligned_family)
{
    uint64_t all = (2 * U + 1) + 3 * U + (U + 7) + (U + 9) + (U + 11);
    expect_heap("aligned", all, 5, all);
}

Test(preload, mmap_munmap_mremap)
{
    tu_expect_exit(run_pattern("maps", NULL), 0);
    struct mt_report rep;
    tu_report_of(trace_path("t.bin"), &rep);
    uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
    /* 64 pages, 16 punched out, the 32-page tail remapped to 96: 112. */
    cr_expect_eq(rep.host.mmap_peak_bytes, 112 * pg, "anonymous peak %lu pages",
                 (unsigned long)(rep.host.mmap_peak_bytes / pg));
    cr_expect_eq(rep.host.mmap_end_bytes, 0);
    cr_expect_eq(rep.host.mmap_file_peak_bytes, 2 * pg);
    cr_expect_eq(rep.host.mmap_file_end_bytes, 0);
    cr_expect_eq(rep.host.peak_bytes, 0);
    mt_report_destroy(&rep);
}

Test(preload, sixty_four_threads_lose_nothing)
{
    tu_expect_exit(run_pattern("threads", NULL), 0);
    uint64_t size = U + 13;
    struct tu_sized s = tu_sized_events(trace_path("t.bin"), size);
    cr_expect_eq(s.allocs, 64 * 1000);
    cr_expect_eq(s.frees, 64 * 1000);
    cr_expect_eq(s.peak, 64 * 1000, "all blocks live at once in merged order");
    struct mt_report rep;
    tu_report_of(trace_path("t.bin"), &rep);
    cr_expect_geq(rep.host.peak_bytes, 64 * 1000 * size);
    /* What else is live then is the C library's per-thread bookkeeping. */
    cr_expect_lt(rep.host.peak_bytes - 64 * 1000 * size, 1u << 20);
    cr_expect_eq(rep.host.inconsistent_count, 0);
    cr_expect_geq(rep.threads, 65);
    mt_report_destroy(&rep);
}

static int find_child_traces(char paths[][PATH_MAX + 64], int max)
{
    char pat[PATH_MAX + 64];
    snprintf(pat, sizeof(pat), "%s/t.*.bin", tu_tmpdir);
    glob_t g;
    int n = 0;
    if (glob(pat, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && n < max; i++)
            snprintf(paths[n++], PATH_MAX + 64, "%s", g.gl_pathv[i]);
        globfree(&g);
    }
    return n;
}

Test(preload, forked_child_has_its_own_file)
{
    tu_expect_exit(run_pattern("forks", NULL), 0);
    cr_expect_eq(tu_sized_events(trace_path("t.bin"), 3 * U + 17).allocs, 2);
    cr_expect_eq(tu_sized_events(trace_path("t.bin"), 5 * U + 17).allocs, 0);
    char child[4][PATH_MAX + 64];
    cr_assert_eq(find_child_traces(child, 4), 1);
    struct tu_sized s = tu_sized_events(child[0], 5 * U + 17);
    cr_expect_eq(s.allocs, 4);
    cr_expect_eq(s.frees, 4);
    cr_expect_eq(tu_sized_events(child[0], 3 * U + 17).allocs, 0);
    struct mt_report rep;
    tu_report_of(child[0], &rep);
    cr_expect_eq(rep.host.peak_bytes, 4 * (5 * U + 17));
    cr_expect(rep.complete);
    mt_report_destroy(&rep);
}

Test(preload, no_follow_leaves_children_alone)
{
    tu_expect_exit(run_pattern("forks", "MEMTRACE_FOLLOW=0"), 0);
    char child[4][PATH_MAX + 64];
    cr_expect_eq(find_child_traces(child, 4), 0);
    cr_expect_eq(tu_sized_events(trace_path("t.bin"), 3 * U + 17).allocs, 2);
}

Test(preload, exec_gets_its_own_file)
{
    tu_expect_exit(run_pattern("execs", NULL), 0);
    cr_expect_eq(tu_sized_events(trace_path("t.bin"), 7 * U + 19).allocs, 1);
    char child[4][PATH_MAX + 64];
    cr_assert_eq(find_child_traces(child, 4), 1);
    struct mt_report rep;
    tu_report_of(child[0], &rep);
    cr_expect_eq(rep.host.peak_bytes, 6 * U + 6);
    cr_expect(rep.complete);
    mt_report_destroy(&rep);
}

Test(preload, other_glibc_entry_points_work)
{
    tu_expect_exit(run_pattern("glibc", NULL), 0);
    cr_expect_str_eq(tu_slurp("stdout"), "glibc ok\n");
    cr_expect_str_eq(tu_slurp("stderr"), "");
}

/* Ten blocks of 9U+23 are live when the program ends its way. */
static void expect_end(const char *scenario, int exit_code, int sig, bool ended)
{
    int status = run_pattern(scenario, NULL);
    if (sig) {
        cr_assert(WIFSIGNALED(status), "%s: not killed by a signal", scenario);
        cr_expect_eq(WTERMSIG(status), sig);
    } else {
        tu_expect_exit(status, exit_code);
    }
    struct mt_report rep;
    tu_report_of(trace_path("t.bin"), &rep);
    struct tu_sized s = tu_sized_events(trace_path("t.bin"), 9 * U + 23);
    cr_expect_eq(s.allocs, 10, "%s: %lu of 10 allocations in the trace", scenario, (unsigned long)s.allocs);
    cr_expect_eq(s.allocs - s.frees, 10);
    if (strcmp(scenario, "end-exit-thread"))
        cr_expect_eq(rep.host.end_bytes, 10 * (9 * U + 23), "%s", scenario);
    else /* plus the C library's bookkeeping for the live thread */
        cr_expect_lt(rep.host.end_bytes - 10 * (9 * U + 23), 4096, "%s", scenario);
    cr_expect_eq(rep.ended, ended, "%s", scenario);
    if (ended)
        cr_expect_eq(rep.exit_status, (uint64_t)exit_code);
    mt_report_destroy(&rep);
}

Test(preload, exit_normally)
{
    expect_end("end-exit", 5, 0, true);
}

Test(preload, exit_from_a_thread)
{
    expect_end("end-exit-thread", 7, 0, true);
}

Test(preload, underscore_exit)
{
    expect_end("end-_exit", 6, 0, true);
}

Test(preload, abort)
{
    expect_end("end-abort", 0, SIGABRT, false);
}

Test(preload, fatal_signal)
{
    expect_end("end-segv", 0, SIGSEGV, false);
}

Test(preload, sigkill)
{
    expect_end("end-kill", 0, SIGKILL, false);
}

Test(preload, unwritable_output_harms_nothing)
{
    static char pre[PATH_MAX + 64];
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", tu_env("MEMTRACE_TEST_LIB"));
    const char *envs[] = { pre, "MEMTRACE_OUTPUT=/nonexistent-dir/t.bin", "MEMTRACE_SESSION=", NULL };
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_PATTERNS"), "glibc", NULL };
    tu_expect_exit(run_with(argv, envs), 0);
    cr_expect_str_eq(tu_slurp("stdout"), "glibc ok\n");
    const char *err = tu_slurp("stderr");
    cr_expect(!strncmp(err, "memtrace: cannot write trace '/nonexistent-dir/t.bin'", 52), "stderr: %s", err);
    cr_expect_eq(strchr(err, '\n') - err + 1, (long)strlen(err), "exactly one line: %s", err);
}

Test(preload, full_disk_stops_recording_once)
{
    char mnt[PATH_MAX + 64];
    snprintf(mnt, sizeof(mnt), "%s/small", tu_tmpdir);
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=256k") != 0) {
        rmdir(mnt);
        cr_skip_test("cannot mount a small tmpfs here (%s)", strerror(errno));
    }
    static char pre[PATH_MAX + 64], out[2 * PATH_MAX];
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", tu_env("MEMTRACE_TEST_LIB"));
    snprintf(out, sizeof(out), "MEMTRACE_OUTPUT=%s/t.bin", mnt);
    const char *envs[] = { pre, out, "MEMTRACE_SESSION=", NULL };
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_PATTERNS"), "threads", NULL };
    int status = run_with(argv, envs);
    char path[2 * PATH_MAX];
    snprintf(path, sizeof(path), "%s/t.bin", mnt);
    struct mt_report rep;
    struct mt_error err = { "" };
    int rc = mt_report_compute(path, &rep, &err);
    umount(mnt);
    rmdir(mnt);
    tu_expect_exit(status, 0);
    const char *e = tu_slurp("stderr");
    cr_expect(strstr(e, "No space left on device") != NULL, "stderr: %s", e);
    cr_expect_eq(strchr(e, '\n') - e + 1, (long)strlen(e), "exactly one line: %s", e);
    /* What was recorded before the disk filled is still readable. */
    cr_expect_eq(rc, 0, "%s", err.msg);
    if (rc == 0) {
        cr_expect_gt(rep.host.alloc_count, 0);
        mt_report_destroy(&rep);
    }
}

/* Code loaded with dlopen is in the module map before any stack that runs
 * through it, and its unloading is written too. */
Test(preload, dlopened_library_is_in_the_module_map)
{
    static char pre[PATH_MAX + 64], out[PATH_MAX + 64];
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", tu_env("MEMTRACE_TEST_LIB"));
    snprintf(out, sizeof(out), "MEMTRACE_OUTPUT=%s/t.bin", tu_tmpdir);
    const char *envs[] = { pre, out, "MEMTRACE_SESSION=", NULL };
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_PATTERNS"), "dlopen",
                     (char *)tu_env("MEMTRACE_TEST_PLUGIN"), NULL };
    tu_expect_exit(run_with(argv, envs), 0);

    struct mt_reader *r;
    struct mt_error err = { "" };
    cr_assert_eq(mt_reader_open(trace_path("t.bin"), &r, &err), 0, "%s", err.msg);
    static uint64_t node_ip[1 << 16];
    uint64_t bias = 0, lo[MT_MAX_SEGMENTS], hi[MT_MAX_SEGMENTS], stack = 0;
    unsigned nseg = 0, loads = 0, order = 0, load_at = 0, alloc_at = 0, unload_at = 0;
    struct mt_record rec;
    int rc;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        order++;
        if (rec.type == MT_REC_STACK && rec.stack_id < (1u << 16)) {
            node_ip[rec.stack_id] = rec.ip;
        } else if (rec.type == MT_REC_MODULE && rec.kind == MT_MODULE_LOAD && rec.path_len > 14 &&
                   !memcmp(rec.path + rec.path_len - 14, "libmtplugin.so", 14)) {
            loads++;
            load_at = order;
            bias = rec.bias;
            nseg = rec.nsegs;
            for (unsigned i = 0; i < nseg; i++) {
                lo[i] = rec.segs[i][0];
                hi[i] = rec.segs[i][1];
            }
        } else if (rec.type == MT_REC_MODULE && rec.kind == MT_MODULE_UNLOAD && loads && rec.bias == bias) {
            unload_at = order;
        } else if (rec.type == MT_REC_ALLOC && rec.size == 11 * U + 29) {
            stack = rec.stack_id;
            alloc_at = order;
        }
    }
    cr_assert_eq(rc, 0, "%s", mt_reader_error(r));
    mt_reader_close(r);
    cr_assert_eq(loads, 1, "the plugin was written %u times", loads);
    cr_assert(alloc_at && stack && stack < (1u << 16));
    cr_expect_lt(load_at, alloc_at, "the module record comes before the allocation");
    uint64_t ip = node_ip[stack];
    bool inside = false;
    for (unsigned i = 0; i < nseg; i++)
        inside |= ip - 1 >= lo[i] && ip - 1 < hi[i];
    cr_expect(inside, "frame 0 (0x%lx) is not in the plugin", (unsigned long)ip);
    cr_expect_gt(unload_at, alloc_at, "the unloading was not written after the allocation");
}

/* Forks while other threads allocate and load and unload a library: no
 * child hangs or crashes, and every child's trace holds its allocation. */
Test(preload, fork_while_threads_allocate_and_dlopen)
{
    tu_expect_exit(run_pattern("fork-storm", NULL), 0);
    char child[64][PATH_MAX + 64];
    int n = find_child_traces(child, 64);
    cr_assert_eq(n, 50, "%d child traces", n);
    for (int i = 0; i < n; i++) {
        struct tu_sized s = tu_sized_events(child[i], 13 * U + 37);
        cr_expect_eq(s.allocs, 1, "%s", child[i]);
        cr_expect_eq(s.frees, 1, "%s", child[i]);
    }
}

/* The program closes every descriptor and reuses the trace's number for a
 * file of its own: that file gets only what the program writes, and the
 * trace keeps everything. */
Test(preload, program_closing_all_descriptors)
{
    static char pre[PATH_MAX + 64], out[PATH_MAX + 64], victim[PATH_MAX + 64];
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", tu_env("MEMTRACE_TEST_LIB"));
    snprintf(out, sizeof(out), "MEMTRACE_OUTPUT=%s/t.bin", tu_tmpdir);
    snprintf(victim, sizeof(victim), "%s/victim", tu_tmpdir);
    const char *envs[] = { pre, out, "MEMTRACE_SESSION=", NULL };
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_PATTERNS"), "close-fds", victim, NULL };
    tu_expect_exit(run_with(argv, envs), 0);
    cr_expect_str_eq(tu_slurp("victim"), "victim\n");
    struct tu_sized s = tu_sized_events(trace_path("t.bin"), 14 * U + 41);
    cr_expect_eq(s.allocs, 50000);
    cr_expect_eq(s.frees, 50000);
}

/* memtrace's own descriptors (the trace, libunwind's pipe) do not shift the
 * numbers the program's open() returns. */
Test(preload, descriptor_numbers_unchanged)
{
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_PATTERNS"), "fd-number", NULL };
    const char *none[] = { "LD_PRELOAD=", NULL };
    tu_expect_exit(run_with(argv, none), 0);
    char native[64];
    snprintf(native, sizeof(native), "%s", tu_slurp("stdout"));
    tu_expect_exit(run_pattern("fd-number", NULL), 0);
    cr_expect_str_eq(tu_slurp("stdout"), native);
    cr_expect_eq(tu_sized_events(trace_path("t.bin"), 15 * U + 43).allocs, 1);
}
