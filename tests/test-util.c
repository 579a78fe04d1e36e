/* See test-util.h. */
#include "test-util.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reader.h"

char tu_tmpdir[PATH_MAX];

void tu_make_tmpdir(void)
{
    char tmpl[] = "/tmp/memtrace-test-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    /* The real path: memtrace prints getcwd()'s form of paths. */
    cr_assert_not_null(realpath(tmpl, tu_tmpdir));
}

void tu_remove_tmpdir(void)
{
    DIR *d = opendir(tu_tmpdir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char p[PATH_MAX + 256];
        snprintf(p, sizeof(p), "%s/%s", tu_tmpdir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tu_tmpdir);
}

const char *tu_env(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (run through meson test)", name);
    return v;
}

char *tu_in_tmp(const char *name)
{
    static char buf[4][PATH_MAX + 256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", tu_tmpdir, name);
    return p;
}

char *tu_slurp(const char *name)
{
    static char buf[2][16384];
    static int next;
    char *b = buf[next++ % 2];
    FILE *f = fopen(tu_in_tmp(name), "r");
    cr_assert_not_null(f, "%s: %s", name, strerror(errno));
    size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
    fclose(f);
    b[n] = 0;
    return b;
}

void tu_report_of(const char *path, struct mt_report *rep)
{
    struct mt_error err = { "" };
    memset(rep, 0, sizeof(*rep));
    cr_assert_eq(mt_report_compute(path, rep, &err), 0, "%s: %s", path, err.msg);
    cr_assert_not(rep->partial, "%s is partial", path);
}

struct tu_sized tu_sized_events(const char *path, uint64_t size)
{
    struct mt_reader *r;
    struct mt_error err = { "" };
    cr_assert_eq(mt_reader_open(path, &r, &err), 0, "%s", err.msg);
    struct tu_sized s = { 0, 0, 0, 0 };
    static uint64_t blocks[70000]; /* live blocks of that size */
    size_t n = 0;
    struct mt_record rec;
    int rc;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        if (rec.type == MT_REC_ALLOC && rec.size == size) {
            cr_assert_lt(n, sizeof(blocks) / sizeof(blocks[0]));
            blocks[n++] = rec.block;
            s.allocs++;
            if (n > s.peak)
                s.peak = n;
        } else if (rec.type == MT_REC_FREE) {
            for (size_t i = 0; i < n; i++) {
                if (blocks[i] == rec.block) {
                    blocks[i] = blocks[--n];
                    s.frees++;
                    break;
                }
            }
        }
    }
    cr_assert_eq(rc, 0, "%s", mt_reader_error(r));
    mt_reader_close(r);
    s.live = n;
    return s;
}

void tu_expect_exit(int status, int code)
{
    cr_assert(WIFEXITED(status), "did not exit (status 0x%x)", status);
    cr_assert_eq(WEXITSTATUS(status), code, "exit code %d, expected %d", WEXITSTATUS(status), code);
}

void tu_trace_pattern(const char *scenario, const char *trace)
{
    char pre[PATH_MAX + 64], out[PATH_MAX + 64];
    snprintf(pre, sizeof pre, "LD_PRELOAD=%s", tu_env("MEMTRACE_TEST_LIB"));
    snprintf(out, sizeof out, "MEMTRACE_OUTPUT=%s", trace);
    const char *exe = tu_env("MEMTRACE_TEST_PATTERNS");
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        putenv(pre);
        putenv(out);
        putenv("MEMTRACE_SESSION=");
        execl(exe, "patterns", scenario, (char *)NULL);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    tu_expect_exit(status, 0);
}

/* Starts argv with stdout and stderr going to tu_tmpdir/stdout and
 * tu_tmpdir/stderr, in directory cwd (NULL: unchanged), in a process group of
 * its own, without MEMTRACE_* settings inherited from the caller. */
pid_t tu_spawn(char *const argv[], const char *cwd)
{
    char out[PATH_MAX + 16], err[PATH_MAX + 16];
    snprintf(out, sizeof(out), "%s/stdout", tu_tmpdir);
    snprintf(err, sizeof(err), "%s/stderr", tu_tmpdir);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(120);
        if (cwd && chdir(cwd))
            _exit(121);
        const char *clear[] = { "MEMTRACE_LIB", "MEMTRACE_OUTPUT", "MEMTRACE_SESSION", "MEMTRACE_FOLLOW",
                                "MEMTRACE_ENABLE", "MEMTRACE_VERBOSE", "LD_PRELOAD" };
        for (size_t i = 0; i < sizeof(clear) / sizeof(clear[0]); i++)
            unsetenv(clear[i]);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        _exit(122);
    }
    return pid;
}

int tu_wait(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    return status;
}

/* Runs argv to the end; *pid_out (if not NULL) gets the pid it ran as. */
int tu_run_in(char *const argv[], const char *cwd, pid_t *pid_out)
{
    pid_t pid = tu_spawn(argv, cwd);
    if (pid_out)
        *pid_out = pid;
    return tu_wait(pid);
}

int tu_run(char *const argv[])
{
    return tu_run_in(argv, NULL, NULL);
}
