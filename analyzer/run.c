/* `memtrace run`: start a command with libmemtrace.so preloaded.
 *
 * The launcher forks, sets LD_PRELOAD and the MEMTRACE_* variables in the
 * child and execs the command; the parent waits, then packs the traces the
 * run left (the command's own and those of its forked or exec'd children)
 * and finally ends exactly as the command did: the same exit code, or the
 * same signal raised on itself. Terminal signals (SIGINT, SIGQUIT) reach the
 * command through the process group and are ignored here; termination
 * signals sent to the launcher are forwarded to the command.
 */
#include "run.h"
#include "pack.h"
#include "progress.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memtrace-format.h"

#ifndef MT_INSTALLED_LIBDIR
#define MT_INSTALLED_LIBDIR "/usr/local/lib"
#endif

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
    if (child_pid > 0)
        kill(child_pid, sig);
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds libmemtrace.so: $MEMTRACE_LIB, beside the build tree's memtrace,
 * or the installed library directory. */
int mt_find_library(char *out, size_t size)
{
    const char *env = getenv("MEMTRACE_LIB");
    if (env && *env) {
        if (!is_file(env))
            return -ENOENT;
        if (!realpath(env, out))
            return -errno;
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        char *dir = dirname(exe);
        const char *rel[] = { "/../preload/libmemtrace.so", "/libmemtrace.so", "/../lib/libmemtrace.so" };
        for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
            char cand[PATH_MAX];
            snprintf(cand, sizeof(cand), "%s%s", dir, rel[i]);
            if (is_file(cand) && realpath(cand, out))
                return 0;
        }
    }
    snprintf(out, size, "%s/libmemtrace.so", MT_INSTALLED_LIBDIR);
    return is_file(out) ? 0 : -ENOENT;
}

/* PyTorch's allocator settings with the backend set to cudaMallocAsync:
 * old's comma-separated options without any backend one, then the new
 * backend. 0, or -1 when it does not fit in n bytes. */
static int torch_alloc_conf(const char *old, char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    while (old && *old) {
        size_t k = strcspn(old, ",");
        const char *opt = old;
        old += k + (old[k] == ',');
        while (k && (*opt == ' ' || *opt == '\t')) {
            opt++;
            k--;
        }
        if (!k || !strncmp(opt, "backend:", 8) || !strncmp(opt, "backend :", 9))
            continue;
        if (len + k + 1 >= n)
            return -1;
        memcpy(out + len, opt, k);
        len += k;
        out[len++] = ',';
        out[len] = 0;
    }
    static const char backend[] = "backend:cudaMallocAsync";
    if (len + sizeof backend > n)
        return -1;
    memcpy(out + len, backend, sizeof backend);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: memtrace run [-o FILE] [--no-follow] [--no-pack] [--torch-allocated] [--] CMD [ARGS...]\n"
               "\n"
               "Runs CMD with libmemtrace.so preloaded and records every allocation.\n"
               "CMD's output, exit code and signals pass through unchanged.\n"
               "\n"
               "  -o, --output FILE  trace file (default: memtrace.<pid>.bin in the current\n"
               "                     directory); forked children and exec'd programs write\n"
               "                     FILE with their pid inserted: trace.bin -> trace.<pid>.bin\n"
               "      --no-follow    do not trace children and exec'd programs\n"
               "      --no-pack      leave the traces uncompressed (see `memtrace pack`)\n"
               "      --torch-allocated  switch PyTorch's CUDA allocator to its cudaMallocAsync\n"
               "                     backend (PYTORCH_CUDA_ALLOC_CONF backend:cudaMallocAsync),\n"
               "                     so every tensor is a driver allocation and the report\n"
               "                     has per-tensor (allocated) GPU numbers beside reserved;\n"
               "                     the run then uses that allocator (docs/PHASES.md)\n"
               "  -q, --quiet        print nothing of memtrace's own when the command ends\n"
               "  -h, --help         this text\n");
}

static int pack_one(const char *path, bool quiet, struct mt_error *err)
{
    struct mt_progress pr;
    mt_progress_init(&pr, "packing", path);
    if (quiet)
        pr.tty = false;
    int rc = mt_pack_file_progress(path, 3, 0, mt_progress_update, &pr, NULL, err);
    mt_progress_done(&pr);
    return rc;
}

/* Packs `path` and every trace of the same session beside it. Returns the
 * number of child traces found. */
static int pack_session(const char *path, pid_t session, bool pack, bool quiet)
{
    char dir_buf[PATH_MAX], base_buf[PATH_MAX];
    snprintf(dir_buf, sizeof(dir_buf), "%s", path);
    snprintf(base_buf, sizeof(base_buf), "%s", path);
    const char *dir = dirname(dir_buf), *base = basename(base_buf);
    size_t blen = strlen(base);
    size_t stem_len = (blen > 4 && !strcmp(base + blen - 4, ".bin")) ? blen - 4 : blen;

    int children = 0;
    struct mt_error err;
    if (pack && is_file(path) && pack_one(path, quiet, &err) < 0 && !quiet)
        fprintf(stderr, "memtrace: %s\n", err.msg);

    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        if (strncmp(name, base, stem_len) || name[stem_len] != '.' || !strcmp(name, base))
            continue;
        char full[PATH_MAX];
        if (snprintf(full, sizeof(full), "%s/%s", dir, name) >= (int)sizeof(full))
            continue;
        int fd = open(full, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct mt_file_hdr h;
        /* Any trace of this session but the main one: forked children, and
         * the command's own later images when it execs (same pid). */
        bool ours = pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) && !memcmp(h.magic, MT_FILE_MAGIC, 8) &&
                    h.session_pid == (uint32_t)session;
        close(fd);
        if (!ours)
            continue;
        children++;
        if (pack && pack_one(full, quiet, &err) < 0 && !quiet)
            fprintf(stderr, "memtrace: %s\n", err.msg);
    }
    closedir(d);
    return children;
}

int mt_run_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, 'o' },
        { "no-follow", no_argument, NULL, 'F' },
        { "no-pack", no_argument, NULL, 'P' },
        { "torch-allocated", no_argument, NULL, 'T' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *output = NULL;
    bool follow = true, pack = true, quiet = false, torch_allocated = false;
    int c;
    opterr = 0;
    /* '+': stop at the first non-option, which starts the command. */
    while ((c = getopt_long(argc, argv, "+o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            output = optarg;
            break;
        case 'F':
            follow = false;
            break;
        case 'P':
            pack = false;
            break;
        case 'T':
            torch_allocated = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            if (optopt)
                fprintf(stderr, "memtrace run: unknown option '-%c' or missing argument; try 'memtrace run --help'\n",
                        optopt);
            else
                fprintf(stderr, "memtrace run: unknown option '%s'; try 'memtrace run --help'\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "memtrace run: no command given; try 'memtrace run --help'\n");
        return 2;
    }
    char **cmd = argv + optind;
    char alloc_conf[4096];
    if (torch_allocated && torch_alloc_conf(getenv("PYTORCH_CUDA_ALLOC_CONF"), alloc_conf, sizeof alloc_conf) < 0) {
        fprintf(stderr, "memtrace run: PYTORCH_CUDA_ALLOC_CONF is too long to add the backend to\n");
        return 2;
    }

    char lib[PATH_MAX];
    if (mt_find_library(lib, sizeof(lib)) < 0) {
        fprintf(stderr, "memtrace run: cannot find libmemtrace.so (set MEMTRACE_LIB to its path)\n");
        return 1;
    }
    char out_abs[PATH_MAX] = "";
    if (output) {
        if (output[0] == '/') {
            snprintf(out_abs, sizeof(out_abs), "%s", output);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof(cwd))) {
                fprintf(stderr, "memtrace run: cannot read the current directory: %s\n", strerror(errno));
                return 1;
            }
            if (snprintf(out_abs, sizeof(out_abs), "%s/%s", cwd, output) >= (int)sizeof(out_abs)) {
                fprintf(stderr, "memtrace run: output path too long\n");
                return 1;
            }
        }
        /* Say now, not after a long run, that the output cannot be written;
         * an old trace of that name must not pass for this run's. */
        int fd = open(out_abs, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "memtrace run: cannot write '%s': %s\n", output, strerror(errno));
            return 1;
        }
        close(fd);
    }

    /* Ignore terminal signals while the command runs; forward the others.
     * Both are in place before the fork, and the forwarded ones blocked
     * until the child's pid is known, so no signal falls in between; the
     * child gets back the dispositions and mask memtrace started with. */
    static const int terminal[] = { SIGINT, SIGQUIT };
    static const int forwarded[] = { SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 };
    struct sigaction ign = { .sa_handler = SIG_IGN }, fwd = { .sa_handler = forward_signal };
    struct sigaction old_term[2], old_fwd[4];
    sigemptyset(&ign.sa_mask);
    sigemptyset(&fwd.sa_mask);
    sigset_t block, old_mask;
    sigemptyset(&block);
    for (int i = 0; i < 4; i++)
        sigaddset(&block, forwarded[i]);
    sigprocmask(SIG_BLOCK, &block, &old_mask);
    for (int i = 0; i < 2; i++)
        sigaction(terminal[i], &ign, &old_term[i]);
    for (int i = 0; i < 4; i++)
        sigaction(forwarded[i], &fwd, &old_fwd[i]);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "memtrace run: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        for (int i = 0; i < 2; i++)
            sigaction(terminal[i], &old_term[i], NULL);
        for (int i = 0; i < 4; i++)
            sigaction(forwarded[i], &old_fwd[i], NULL);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        char buf[PATH_MAX * 2];
        const char *pre = getenv("LD_PRELOAD");
        if (pre && *pre)
            snprintf(buf, sizeof(buf), "%s:%s", lib, pre);
        else
            snprintf(buf, sizeof(buf), "%s", lib);
        setenv("LD_PRELOAD", buf, 1);
        if (!out_abs[0]) {
            char cwd[PATH_MAX - 32];
            if (!getcwd(cwd, sizeof(cwd)))
                _exit(127);
            snprintf(out_abs, sizeof(out_abs), "%s/memtrace.%u.bin", cwd, (unsigned)getpid());
        }
        setenv("MEMTRACE_OUTPUT", out_abs, 1);
        setenv("MEMTRACE_FOLLOW", follow ? "1" : "0", 1);
        unsetenv("MEMTRACE_SESSION");
        if (torch_allocated)
            setenv("PYTORCH_CUDA_ALLOC_CONF", alloc_conf, 1);
        execvp(cmd[0], cmd);
        int e = errno;
        fprintf(stderr, "memtrace run: cannot run '%s': %s\n", cmd[0], strerror(e));
        _exit(e == ENOENT ? 127 : 126);
    }
    child_pid = pid;
    sigprocmask(SIG_SETMASK, &old_mask, NULL);

    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "memtrace run: waitpid: %s\n", strerror(errno));
            return 1;
        }
    }
    if (!out_abs[0]) {
        char cwd[PATH_MAX - 32];
        if (getcwd(cwd, sizeof(cwd)))
            snprintf(out_abs, sizeof(out_abs), "%s/memtrace.%u.bin", cwd, (unsigned)pid);
    }
    /* No file, or the empty one this launcher created to check the path:
     * the command never started recording (it could not be run, or it is
     * not dynamically linked). */
    bool not_run = WIFEXITED(status) && WEXITSTATUS(status) >= 126 && WEXITSTATUS(status) <= 127;
    struct stat st;
    bool recorded = out_abs[0] && stat(out_abs, &st) == 0 && st.st_size > 0;
    if (!recorded) {
        if (out_abs[0])
            unlink(out_abs);
        if (!quiet && !not_run)
            fprintf(stderr, "memtrace: %s recorded nothing (a statically linked program?)\n", cmd[0]);
    } else {
        int children = pack_session(out_abs, pid, pack, quiet);
        if (!quiet) {
            if (children)
                fprintf(stderr, "memtrace: trace written to %s (and %d more beside it: children, exec'd programs)\n",
                        out_abs, children);
            else
                fprintf(stderr, "memtrace: trace written to %s\n", out_abs);
        }
    }

    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        /* Die the same way, without a second core dump. */
        struct rlimit nocore = { 0, 0 };
        setrlimit(RLIMIT_CORE, &nocore);
        fflush(NULL);
        signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(sig);
        return 128 + sig;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
