/* Tests of the memtrace command as a user runs it: `memtrace run` (exit
 * codes, signals, output names, children, packing, errors), the error
 * contract of `memtrace report` and the help of every subcommand.
 *
 * Each test forks and execs the built memtrace with stdout and stderr
 * going to files in a temporary directory of its own, then looks at what
 * it left there with the reader and the report code. The traced programs
 * are tests/programs/patterns.c (the end-* scenarios leave ten blocks of
 * 9*4096+23 live, the forks scenario allocates 5*4096+17 four times in its
 * child) and tests/programs/static-hello.c. Paths come from the
 * environment that tests/meson.build sets: MEMTRACE_TEST_MEMTRACE,
 * MEMTRACE_TEST_PATTERNS, MEMTRACE_TEST_STATIC (empty when static linking
 * is not available).
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "memtrace-format.h"
#include "reader.h"
#include "report.h"
#include "test-util.h"

#define U 4096u
#define END_SIZE (9 * U + 23)
#define CHILD_SIZE (5 * U + 17)



TestSuite(run, .init = tu_make_tmpdir, .fini = tu_remove_tmpdir, .timeout = 120);


static char *memtrace_exe(void)
{
    return (char *)tu_env("MEMTRACE_TEST_MEMTRACE");
}

static char *patterns_exe(void)
{
    return (char *)tu_env("MEMTRACE_TEST_PATTERNS");
}


static bool one_line(const char *s)
{
    size_t n = strlen(s);
    return n > 1 && s[n - 1] == '\n' && strchr(s, '\n') == s + n - 1;
}

static bool starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}


static void expect_signal(int status, int sig)
{
    cr_assert(WIFSIGNALED(status), "not killed by a signal (status 0x%x)", status);
    cr_assert_eq(WTERMSIG(status), sig, "killed by signal %d, expected %d", WTERMSIG(status), sig);
}

/* stderr is exactly one line of memtrace's saying where the trace went. */
static void expect_written(const char *path)
{
    const char *err = tu_slurp("stderr");
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "memtrace: trace written to %s", path);
    cr_expect(one_line(err), "not one line on stderr: '%s'", err);
    cr_expect(starts_with(err, want), "stderr: '%s', expected '%s...'", err, want);
}

/* Files in tu_tmpdir matching a glob pattern. */
static int count_files(const char *pattern, char first[PATH_MAX])
{
    glob_t g;
    int n = 0;
    if (glob(tu_in_tmp(pattern), 0, NULL, &g) == 0) {
        n = (int)g.gl_pathc;
        if (first && n)
            snprintf(first, PATH_MAX, "%s", g.gl_pathv[0]);
        globfree(&g);
    }
    return n;
}

static struct mt_file_hdr file_header(const char *path)
{
    struct mt_file_hdr h;
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h), "%s: short header", path);
    close(fd);
    cr_assert(!memcmp(h.magic, MT_FILE_MAGIC, 8), "%s: not a trace", path);
    return h;
}

static bool is_packed(const char *path)
{
    return file_header(path).flags & MT_FILE_PACKED;
}



/* The end-* scenarios: ten blocks of END_SIZE live at the end. */
static void expect_ten_live(const char *path)
{
    struct tu_sized s = tu_sized_events(path, END_SIZE);
    cr_expect_eq(s.allocs, 10, "%s: %lu of 10 allocations", path, (unsigned long)s.allocs);
    cr_expect_eq(s.live, 10, "%s: %lu of 10 blocks live at the end", path, (unsigned long)s.live);
    struct mt_report rep;
    tu_report_of(path, &rep);
    cr_expect_eq(rep.host.end_bytes, 10 * END_SIZE, "%s: %lu bytes live at the end", path,
                 (unsigned long)rep.host.end_bytes);
    mt_report_destroy(&rep);
}

/* ---- exit codes, output, signals --------------------------------------- */

Test(run, exit_code_and_output_pass_through)
{
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "end-exit", NULL };
    tu_expect_exit(tu_run(argv), 5);
    cr_expect_str_eq(tu_slurp("stdout"), "before end\n");
    expect_written(tu_in_tmp("T.bin"));
    cr_expect(is_packed(tu_in_tmp("T.bin")));
    expect_ten_live(tu_in_tmp("T.bin"));
    struct mt_report rep;
    tu_report_of(tu_in_tmp("T.bin"), &rep);
    cr_expect(rep.complete);
    cr_expect_eq(rep.exit_status, 5);
    mt_report_destroy(&rep);
}

Test(run, quiet_prints_nothing_of_its_own)
{
    char *argv[] = { memtrace_exe(), "run", "-q", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "end-exit", NULL };
    tu_expect_exit(tu_run(argv), 5);
    cr_expect_str_eq(tu_slurp("stdout"), "before end\n");
    cr_expect_str_eq(tu_slurp("stderr"), "");
    cr_expect(is_packed(tu_in_tmp("T.bin")));
}

static void expect_dies_by(const char *scenario, int sig)
{
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), (char *)scenario, NULL };
    expect_signal(tu_run(argv), sig);
    cr_expect_str_eq(tu_slurp("stdout"), "before end\n");
    expect_written(tu_in_tmp("T.bin"));
    cr_assert(exists(tu_in_tmp("T.bin")), "%s: no trace", scenario);
    cr_expect(is_packed(tu_in_tmp("T.bin")), "%s: trace not packed", scenario);
    expect_ten_live(tu_in_tmp("T.bin"));
}

Test(run, segv_passes_through)
{
    expect_dies_by("end-segv", SIGSEGV);
}

Test(run, sigkill_passes_through)
{
    expect_dies_by("end-kill", SIGKILL);
}

Test(run, abort_passes_through)
{
    expect_dies_by("end-abort", SIGABRT);
}

/* Waits until the command has printed "before end" (its blocks are live). */
static void wait_for_before_end(pid_t pid)
{
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(tu_in_tmp("stdout"), "r");
        char line[64] = "";
        if (f) {
            char *got = fgets(line, sizeof(line), f);
            fclose(f);
            if (got && !strcmp(line, "before end\n"))
                return;
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, WNOHANG), 0, "memtrace ended early (status 0x%x)", status);
        nanosleep(&(struct timespec){ 0, 5 * 1000 * 1000 }, NULL);
    }
    kill(-pid, SIGKILL);
    cr_assert_fail("the command did not start within 10 s");
}

Test(run, sigterm_to_memtrace_is_forwarded)
{
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "end-pause", NULL };
    pid_t pid = tu_spawn(argv, NULL);
    wait_for_before_end(pid);
    cr_assert_eq(kill(pid, SIGTERM), 0);
    expect_signal(tu_wait(pid), SIGTERM);
    expect_written(tu_in_tmp("T.bin"));
    cr_expect(is_packed(tu_in_tmp("T.bin")));
    expect_ten_live(tu_in_tmp("T.bin"));
}

Test(run, sigint_to_the_group_ends_the_command_then_memtrace)
{
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "end-pause", NULL };
    pid_t pid = tu_spawn(argv, NULL);
    wait_for_before_end(pid);
    /* As a terminal's ^C: the whole process group. */
    cr_assert_eq(kill(-pid, SIGINT), 0);
    expect_signal(tu_wait(pid), SIGINT);
    expect_written(tu_in_tmp("T.bin"));
    cr_expect(is_packed(tu_in_tmp("T.bin")));
    expect_ten_live(tu_in_tmp("T.bin"));
}

/* ---- output names, children, packing ------------------------------------ */

Test(run, default_output_is_named_after_the_command_pid)
{
    char *argv[] = { memtrace_exe(), "run", "--", patterns_exe(), "end-exit", NULL };
    pid_t memtrace_pid;
    tu_expect_exit(tu_run_in(argv, tu_tmpdir, &memtrace_pid), 5);
    char path[PATH_MAX];
    cr_assert_eq(count_files("memtrace.*.bin", path), 1, "not exactly one memtrace.*.bin");
    unsigned pid = 0;
    cr_assert_eq(sscanf(strrchr(path, '/') + 1, "memtrace.%u.bin", &pid), 1, "%s", path);
    struct mt_report rep;
    tu_report_of(path, &rep);
    cr_expect_eq(rep.pid, pid, "file named after pid %u, trace of pid %u", pid, rep.pid);
    cr_expect_eq(rep.ppid, (uint32_t)memtrace_pid, "the command's parent is memtrace");
    cr_expect_eq(rep.session_pid, pid);
    cr_expect(rep.packed);
    mt_report_destroy(&rep);
    expect_written(path);
    expect_ten_live(path);
}

Test(run, children_write_their_own_packed_files)
{
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "forks", NULL };
    tu_expect_exit(tu_run(argv), 0);
    char child[PATH_MAX];
    cr_assert_eq(count_files("T.*.bin", child), 1, "not exactly one child trace");
    cr_expect(is_packed(tu_in_tmp("T.bin")), "T.bin not packed");
    cr_expect(is_packed(child), "%s not packed", child);
    struct mt_file_hdr main_h = file_header(tu_in_tmp("T.bin")), child_h = file_header(child);
    char want[64];
    snprintf(want, sizeof(want), "/T.%u.bin", child_h.pid);
    cr_expect(strstr(child, want) != NULL, "%s is not named after pid %u", child, child_h.pid);
    cr_expect_neq(child_h.pid, main_h.pid);
    cr_expect_eq(child_h.session_pid, main_h.pid);
    cr_expect_eq(tu_sized_events(child, CHILD_SIZE).allocs, 4);
    cr_expect_eq(tu_sized_events(tu_in_tmp("T.bin"), CHILD_SIZE).allocs, 0);
    const char *err = tu_slurp("stderr");
    expect_written(tu_in_tmp("T.bin"));
    cr_expect(strstr(err, "(and 1 more beside it") != NULL, "stderr: %s", err);
}

Test(run, no_follow_traces_only_the_command)
{
    char *argv[] = { memtrace_exe(), "run", "--no-follow", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "forks",
                     NULL };
    tu_expect_exit(tu_run(argv), 0);
    cr_expect_eq(count_files("T.*.bin", NULL), 0, "a child trace was written");
    cr_expect(is_packed(tu_in_tmp("T.bin")));
    cr_expect_eq(tu_sized_events(tu_in_tmp("T.bin"), 3 * U + 17).allocs, 2);
    expect_written(tu_in_tmp("T.bin"));
}

/* --torch-allocated puts PyTorch's cudaMallocAsync backend into the
 * command's PYTORCH_CUDA_ALLOC_CONF, replacing a backend given there and
 * keeping the other settings. */
Test(run, torch_allocated_sets_the_allocator_backend)
{
    char *argv[] = { memtrace_exe(), "run", "-q", "--torch-allocated", "-o", tu_in_tmp("T.bin"), "--", "/bin/sh",
                     "-c", "printf '%s\\n' \"$PYTORCH_CUDA_ALLOC_CONF\"", NULL };
    setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True,backend:native", 1);
    tu_expect_exit(tu_run(argv), 0);
    cr_expect_str_eq(tu_slurp("stdout"), "expandable_segments:True,backend:cudaMallocAsync\n");
    unsetenv("PYTORCH_CUDA_ALLOC_CONF");
    tu_expect_exit(tu_run(argv), 0);
    cr_expect_str_eq(tu_slurp("stdout"), "backend:cudaMallocAsync\n");
}

/* The command execs itself: the trace of the new image (T.<pid>.bin, pid
 * of the command itself) is one of the run's traces and is packed too. */
Test(run, exec_image_trace_is_packed_too)
{
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "execs", NULL };
    tu_expect_exit(tu_run(argv), 0);
    char image[PATH_MAX];
    cr_assert_eq(count_files("T.*.bin", image), 1, "not exactly one trace beside T.bin");
    cr_expect(is_packed(tu_in_tmp("T.bin")));
    cr_expect(is_packed(image), "%s not packed", image);
}

Test(run, no_pack_leaves_a_raw_trace_that_reports)
{
    char *argv[] = { memtrace_exe(), "run", "--no-pack", "-o", tu_in_tmp("T.bin"), "--", patterns_exe(), "end-exit",
                     NULL };
    tu_expect_exit(tu_run(argv), 5);
    expect_written(tu_in_tmp("T.bin"));
    cr_expect_not(is_packed(tu_in_tmp("T.bin")), "packed despite --no-pack");
    expect_ten_live(tu_in_tmp("T.bin"));
    struct mt_report rep;
    tu_report_of(tu_in_tmp("T.bin"), &rep);
    cr_expect(rep.complete);
    cr_expect_not(rep.packed);
    cr_expect_eq(rep.exit_status, 5);
    mt_report_destroy(&rep);
}

/* ---- errors of `memtrace run` -------------------------------------------- */

Test(run, no_command_is_a_usage_error)
{
    char *argv[] = { memtrace_exe(), "run", NULL };
    tu_expect_exit(tu_run(argv), 2);
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect_str_eq(tu_slurp("stdout"), "");
}

Test(run, missing_command_exits_127_and_leaves_no_trace)
{
    char *argv[] = { memtrace_exe(), "run", "--", "/nonexistent", NULL };
    tu_expect_exit(tu_run_in(argv, tu_tmpdir, NULL), 127);
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect(strstr(err, "/nonexistent") != NULL, "stderr does not name the command: '%s'", err);
    cr_expect_eq(count_files("*.bin", NULL), 0, "a trace was left");

    char *argv_o[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", "/nonexistent", NULL };
    tu_expect_exit(tu_run(argv_o), 127);
    err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect(strstr(err, "/nonexistent") != NULL, "stderr does not name the command: '%s'", err);
    cr_expect_not(exists(tu_in_tmp("T.bin")), "-o file left behind");
}

Test(run, command_not_executable_exits_126)
{
    FILE *f = fopen(tu_in_tmp("script"), "w");
    cr_assert_not_null(f);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    chmod(tu_in_tmp("script"), 0644);
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", tu_in_tmp("script"), NULL };
    tu_expect_exit(tu_run(argv), 126);
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect_not(exists(tu_in_tmp("T.bin")), "-o file left behind");
}

Test(run, unwritable_output_is_refused_before_running)
{
    char *argv[] = { memtrace_exe(), "run", "-o", "/nonexistent-dir/x.bin", "--", patterns_exe(), "end-exit", NULL };
    tu_expect_exit(tu_run(argv), 1);
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect(strstr(err, "/nonexistent-dir/x.bin") != NULL, "stderr: '%s'", err);
    cr_expect_str_eq(tu_slurp("stdout"), "", "the command ran");
}

Test(run, unknown_option_is_a_usage_error)
{
    char *argv[] = { memtrace_exe(), "run", "--no-such-option", "--", patterns_exe(), "end-exit", NULL };
    tu_expect_exit(tu_run(argv), 2);
    cr_expect_str_eq(tu_slurp("stdout"), "", "the command ran");
    cr_expect_str_neq(tu_slurp("stderr"), "");
}

/* ---- report errors, help --------------------------------------------------- */

static void expect_report_error(const char *path)
{
    char *argv[] = { memtrace_exe(), "report", (char *)path, NULL };
    tu_expect_exit(tu_run(argv), 1);
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "%s: stderr: '%s'", path, err);
    cr_expect_str_eq(tu_slurp("stdout"), "", "%s: something on stdout", path);

    char *argv_json[] = { memtrace_exe(), "report", "--json", (char *)path, NULL };
    tu_expect_exit(tu_run(argv_json), 1);
    err = tu_slurp("stderr");
    cr_expect(one_line(err), "%s (--json): stderr: '%s'", path, err);
    cr_expect_str_eq(tu_slurp("stdout"), "", "%s (--json): something on stdout", path);
}

Test(run, report_of_a_missing_file_fails)
{
    expect_report_error(tu_in_tmp("missing.bin"));
}

Test(run, report_of_a_non_trace_fails)
{
    FILE *f = fopen(tu_in_tmp("text.bin"), "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 100; i++)
        fputs("this is not a memtrace trace\n", f);
    fclose(f);
    expect_report_error(tu_in_tmp("text.bin"));
    f = fopen(tu_in_tmp("empty.bin"), "w");
    cr_assert_not_null(f);
    fclose(f);
    expect_report_error(tu_in_tmp("empty.bin"));
}

Test(run, report_without_a_file_is_a_usage_error)
{
    char *argv[] = { memtrace_exe(), "report", NULL };
    tu_expect_exit(tu_run(argv), 2);
    cr_expect_str_eq(tu_slurp("stdout"), "");
}

static void expect_help(char *const argv[], const char *usage)
{
    tu_expect_exit(tu_run(argv), 0);
    const char *out = tu_slurp("stdout");
    cr_expect(starts_with(out, usage), "%s %s: stdout '%.80s...'", argv[1], argv[2] ? argv[2] : "", out);
    cr_expect_str_eq(tu_slurp("stderr"), "");
}

Test(run, help_of_every_command)
{
    char *top[] = { memtrace_exe(), "--help", NULL };
    expect_help(top, "Usage: memtrace COMMAND");
    char *r[] = { memtrace_exe(), "run", "--help", NULL };
    expect_help(r, "Usage: memtrace run ");
    char *rep[] = { memtrace_exe(), "report", "--help", NULL };
    expect_help(rep, "Usage: memtrace report ");
    char *p[] = { memtrace_exe(), "pack", "--help", NULL };
    expect_help(p, "Usage: memtrace pack ");
    static const char *const more[] = { "diff", "dump", "simulate", "plan", "verify", "flamegraph", "timeline",
                                         "script" };
    for (size_t i = 0; i < sizeof more / sizeof *more; i++) {
        char *argv[] = { memtrace_exe(), (char *)more[i], "--help", NULL };
        char want[64];
        snprintf(want, sizeof want, "Usage: memtrace %s ", more[i]);
        expect_help(argv, want);
    }
}

Test(run, no_or_unknown_command_is_a_usage_error)
{
    char *none[] = { memtrace_exe(), NULL };
    tu_expect_exit(tu_run(none), 2);
    cr_expect_str_eq(tu_slurp("stdout"), "");
    cr_expect(starts_with(tu_slurp("stderr"), "Usage: memtrace"));
    char *unknown[] = { memtrace_exe(), "frobnicate", NULL };
    tu_expect_exit(tu_run(unknown), 2);
    cr_expect_str_eq(tu_slurp("stdout"), "");
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect(strstr(err, "frobnicate") != NULL, "stderr: '%s'", err);
}

/* ---- a program LD_PRELOAD cannot reach ------------------------------------ */

Test(run, static_program_runs_unchanged_and_nothing_is_recorded)
{
    const char *exe = getenv("MEMTRACE_TEST_STATIC");
    if (!exe || !*exe)
        cr_skip_test("static linking is not available here");
    char *argv[] = { memtrace_exe(), "run", "-o", tu_in_tmp("T.bin"), "--", (char *)exe, NULL };
    tu_expect_exit(tu_run(argv), 3);
    cr_expect_str_eq(tu_slurp("stdout"), "hello from a static program (1)\n");
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect(strstr(err, "recorded nothing") != NULL, "stderr: '%s'", err);
    cr_expect_not(exists(tu_in_tmp("T.bin")), "an empty trace was left");
}

Test(run, static_program_without_output_option_says_so_too)
{
    const char *exe = getenv("MEMTRACE_TEST_STATIC");
    if (!exe || !*exe)
        cr_skip_test("static linking is not available here");
    char *argv[] = { memtrace_exe(), "run", "--", (char *)exe, NULL };
    tu_expect_exit(tu_run_in(argv, tu_tmpdir, NULL), 3);
    const char *err = tu_slurp("stderr");
    cr_expect(one_line(err), "stderr: '%s'", err);
    cr_expect(strstr(err, "recorded nothing") != NULL, "stderr: '%s'", err);
    cr_expect_eq(count_files("memtrace.*.bin", NULL), 0);
}

/* An old file of the output's name must not pass for this run's trace. */
Test(run, stale_output_file_is_not_reported_as_new)
{
    const char *exe = getenv("MEMTRACE_TEST_STATIC");
    if (!exe || !*exe)
        cr_skip_test("static linking is not available here");
    char *first[] = { memtrace_exe(), "run", "-o", tu_in_tmp("S.bin"), "--", patterns_exe(), "basic", NULL };
    tu_expect_exit(tu_run(first), 0);
    expect_written(tu_in_tmp("S.bin"));
    char *second[] = { memtrace_exe(), "run", "-o", tu_in_tmp("S.bin"), "--", (char *)exe, NULL };
    tu_expect_exit(tu_run(second), 3);
    const char *err = tu_slurp("stderr");
    cr_expect(strstr(err, "recorded nothing") != NULL, "stderr: '%s'", err);
    cr_expect_not(exists(tu_in_tmp("S.bin")), "the old trace is still there");
    char *third[] = { memtrace_exe(), "run", "-o", tu_in_tmp("S.bin"), "--", "/nonexistent-command", NULL };
    tu_expect_exit(tu_run(third), 127);
    cr_expect(strstr(tu_slurp("stderr"), "trace written") == NULL);
    cr_expect_not(exists(tu_in_tmp("S.bin")));
}
