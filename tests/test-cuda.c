/* Tests of preload/cuda.c: GPU records for every way a program reaches the
 * CUDA driver or runtime, against the stand-ins of tests/fake-cuda (their
 * rules are in fake-cuda.h) on machines without a GPU.
 *
 * Each test runs one scenario of tests/programs/cuda-*.c twice, untraced
 * and with libmemtrace.so preloaded: the program's stdout (every CUDA
 * result and device address) and exit status must be the same, and the
 * trace's GPU records must be exactly those the scenario implies: counts
 * per kind, function and space, sizes, devices, streams, and the live
 * bytes per space at their peak and at the end. Paths come from the
 * environment tests/meson.build sets.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tests/fake-cuda/fake-cuda.h"
#include "reader.h"

#define MiB (1ull << 20)

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
    char tmpl[] = "/tmp/memtrace-cuda-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    strcpy(tmpdir, tmpl);
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[PATH_MAX + 256];
        snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

TestSuite(cuda, .init = make_tmpdir, .fini = remove_tmpdir, .timeout = 60);

static const char *env(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (run through meson test)", name);
    return v;
}

static char *in_tmp(const char *name)
{
    static char buf[4][PATH_MAX + 64];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return p;
}

static char *slurp(const char *path)
{
    static char buf[2][32768];
    static int next;
    char *b = buf[next++ % 2];
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(b, 1, sizeof(buf[0]) - 1, f);
    fclose(f);
    b[n] = 0;
    return b;
}

/* Runs argv (NULL-terminated) with stdout to tmpdir/out, stderr to
 * tmpdir/err, traced into tmpdir/t.bin when `traced`, with extra NAME=value
 * settings; returns the wait status. */
static int run(char *const argv[], bool traced, const char *extra)
{
    static char pre[PATH_MAX + 64], out[PATH_MAX + 64], drv[PATH_MAX + 64];
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", env("MEMTRACE_TEST_LIB"));
    snprintf(out, sizeof(out), "MEMTRACE_OUTPUT=%s", in_tmp("t.bin"));
    snprintf(drv, sizeof(drv), "FAKE_CUDA_DRIVER=%s", env("MEMTRACE_TEST_FAKE_CUDA"));
    const char *so = in_tmp("out"), *se = in_tmp("err");
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(so, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(se, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        unsetenv("LD_PRELOAD");
        putenv(drv);
        putenv("MEMTRACE_SESSION=");
        if (traced) {
            putenv(pre);
            putenv(out);
        }
        if (extra)
            putenv((char *)extra);
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return status;
}

struct gpu {
    unsigned kind, api, space, device;
    uint64_t addr, size, stream, result;
};

static struct gpu recs[512];
static size_t nrecs;

/* Runs the program untraced and traced, checks that both behave the same
 * and exit 0, and loads the GPU records of the trace. */
static void trace(char *const argv[])
{
    int st = run(argv, false, NULL);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s %s: untraced status 0x%x: %s", argv[0], argv[1], st,
              slurp(in_tmp("err")));
    char *plain = strdup(slurp(in_tmp("out")));
    st = run(argv, true, NULL);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s %s: traced status 0x%x: %s", argv[0], argv[1], st,
              slurp(in_tmp("err")));
    cr_assert_str_eq(slurp(in_tmp("out")), plain, "output differs traced");
    free(plain);

    struct mt_reader *r;
    struct mt_error err = { "" };
    cr_assert_eq(mt_reader_open(in_tmp("t.bin"), &r, &err), 0, "%s", err.msg);
    struct mt_record rec;
    int rc;
    nrecs = 0;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        if (rec.type != MT_REC_GPU)
            continue;
        cr_assert_lt(nrecs, sizeof(recs) / sizeof(recs[0]));
        recs[nrecs++] = (struct gpu){ rec.kind, rec.api, rec.space, rec.device,
                                      rec.addr, rec.size, rec.stream, rec.result };
    }
    cr_assert_eq(rc, 0, "%s", mt_reader_error(r));
    mt_reader_close(r);
}

/* Records of that kind, api and space (-1: any) and, if not 0, size. */
static unsigned count(unsigned kind, int api, int space, uint64_t size)
{
    unsigned n = 0;
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].kind == kind && (api < 0 || recs[i].api == (unsigned)api) &&
            (space < 0 || recs[i].space == (unsigned)space) && (!size || recs[i].size == size))
            n++;
    return n;
}

/* Every record of that kind and api has this device (and stream, for
 * ALLOC, unless ~0). */
static void all_on(unsigned kind, unsigned api, unsigned device, uint64_t stream)
{
    for (size_t i = 0; i < nrecs; i++) {
        if (recs[i].kind != kind || recs[i].api != api)
            continue;
        cr_expect_eq(recs[i].device, device, "api %u: device %u, expected %u", api, recs[i].device, device);
        if (kind == MT_GPU_ALLOC && stream != ~0ull)
            cr_expect_eq(recs[i].stream, stream, "api %u: stream 0x%lx", api, (unsigned long)recs[i].stream);
    }
}

/* Live bytes of one space, replaying ALLOC and FREE in order (a FREE
 * releases the ALLOC of its space, device and address): the most at once,
 * and what is left; every FREE must match. */
static void live(unsigned space, uint64_t peak, uint64_t end)
{
    struct gpu *open[64];
    size_t n = 0;
    uint64_t cur = 0, top = 0;
    for (size_t i = 0; i < nrecs; i++) {
        struct gpu *g = &recs[i];
        if (g->space != space)
            continue;
        if (g->kind == MT_GPU_ALLOC) {
            cr_assert_lt(n, 64);
            open[n++] = g;
            cur += g->size;
            top = cur > top ? cur : top;
        } else if (g->kind == MT_GPU_FREE) {
            size_t j = 0;
            while (j < n && !(open[j]->addr == g->addr && open[j]->device == g->device))
                j++;
            cr_assert_lt(j, n, "space %u: a FREE of 0x%lx (device %u) with no ALLOC", space, (unsigned long)g->addr,
                         g->device);
            cur -= open[j]->size;
            open[j] = open[--n];
        }
    }
    cr_expect_eq(top, peak, "space %u: peak %lu, expected %lu", space, (unsigned long)top, (unsigned long)peak);
    cr_expect_eq(cur, end, "space %u: %lu live at the end, expected %lu", space, (unsigned long)cur,
                 (unsigned long)end);
}

static void direct(const char *scenario)
{
    char *argv[] = { (char *)env("MEMTRACE_TEST_CUDA_DIRECT"), (char *)scenario, NULL };
    trace(argv);
}

Test(cuda, direct_alloc_family)
{
    direct("alloc");
    cr_expect_eq(nrecs, 14);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, MiB + 1), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_PITCH, MT_GPU_SPACE_DEVICE, 1024 * 3), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_MANAGED, MT_GPU_SPACE_MANAGED, 2 * MiB), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_HOST_ALLOC, MT_GPU_SPACE_HOST, 64 << 10), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_HOST, MT_GPU_SPACE_HOST, 128 << 10), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_HOST_REGISTER, MT_GPU_SPACE_REGISTERED, 0), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE, MT_GPU_SPACE_DEVICE, 0), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE, MT_GPU_SPACE_MANAGED, 0), 1);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE_HOST, MT_GPU_SPACE_HOST, 0), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_HOST_UNREGISTER, MT_GPU_SPACE_REGISTERED, 0), 2);
    cr_expect_eq(count(MT_GPU_OOM, -1, -1, 0), 0);
    cr_expect_eq(count(MT_GPU_ALLOC, -1, -1, FAKE_CUDA_ODD_SIZE), 0);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC, 0, 0);
    live(MT_GPU_SPACE_DEVICE, MiB + 1 + 3072, 0);
    live(MT_GPU_SPACE_MANAGED, 2 * MiB, 0);
    live(MT_GPU_SPACE_HOST, 192 << 10, 0);
    live(MT_GPU_SPACE_REGISTERED, 12288, 0);
}

Test(cuda, direct_virtual_memory)
{
    direct("vmm");
    cr_expect_eq(nrecs, 10);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ADDRESS_RESERVE, MT_GPU_SPACE_VA, 64 * MiB), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_CREATE, MT_GPU_SPACE_PHYSICAL, 2 * MiB), 2);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_MAP, MT_GPU_SPACE_MAPPED, 2 * MiB), 2);
    /* One cuMemUnmap of both maps: two FREEs. */
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_UNMAP, MT_GPU_SPACE_MAPPED, 0), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_RELEASE, MT_GPU_SPACE_PHYSICAL, 0), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_ADDRESS_FREE, MT_GPU_SPACE_VA, 0), 1);
    /* Handles are the cuMemCreate results; memory and maps are on the
     * device of the allocation's properties (1), not the context's (0). */
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].space == MT_GPU_SPACE_PHYSICAL)
            cr_expect(recs[i].addr == FAKE_CUDA_HANDLE_BASE || recs[i].addr == FAKE_CUDA_HANDLE_BASE + 1);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_CREATE, 1, 0);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_MAP, 1, 0);
    all_on(MT_GPU_FREE, MT_GPU_API_MEM_UNMAP, 1, 0);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_ADDRESS_RESERVE, 0, 0);
    live(MT_GPU_SPACE_VA, 64 * MiB, 0);
    live(MT_GPU_SPACE_PHYSICAL, 4 * MiB, 0);
    live(MT_GPU_SPACE_MAPPED, 4 * MiB, 0);
}

Test(cuda, direct_async_and_pools)
{
    direct("async");
    /* 5 allocations, 5 frees, and the two pools' reservations (the fake's
     * rule: all ever allocated, rounded up to 2 MiB): device 1's pool 4, 6
     * then 10 MiB, the explicit pool 6 then 10 MiB, each change a FREE of
     * the old amount and an ALLOC of the new; frees change nothing. */
    cr_expect_eq(nrecs, 18);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 4 * MiB), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 6 * MiB), 2);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 10 * MiB), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 0), 3);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_POOL, 1, 0);
    live(MT_GPU_SPACE_POOL, 20 * MiB, 20 * MiB);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_ASYNC, MT_GPU_SPACE_DEVICE, 3 * MiB), 3);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_FROM_POOL_ASYNC, MT_GPU_SPACE_DEVICE, 5 * MiB), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE_ASYNC, MT_GPU_SPACE_DEVICE, 0), 5);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_ASYNC, 1, 0x5a);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_FROM_POOL_ASYNC, 1, 0x5a);
    /* Freed from a device 0 context: the allocation's device. */
    all_on(MT_GPU_FREE, MT_GPU_API_MEM_FREE_ASYNC, 1, 0);
    live(MT_GPU_SPACE_DEVICE, 19 * MiB, 0);
}

Test(cuda, direct_out_of_memory)
{
    direct("oom");
    cr_expect_eq(nrecs, 4);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, 600 * MiB), 1);
    cr_expect_eq(count(MT_GPU_OOM, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, 600 * MiB), 1);
    cr_expect_eq(count(MT_GPU_OOM, MT_GPU_API_MEM_CREATE, MT_GPU_SPACE_PHYSICAL, 2048 * MiB), 1);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE, MT_GPU_SPACE_DEVICE, 0), 1);
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].kind == MT_GPU_OOM)
            cr_expect_eq(recs[i].result, 2);
    live(MT_GPU_SPACE_DEVICE, 600 * MiB, 0);
}

Test(cuda, linked_but_unused_records_nothing)
{
    direct("none");
    cr_expect_eq(nrecs, 0);
}

Test(cuda, no_cuda_no_gpu_records)
{
    char *argv[] = { (char *)env("MEMTRACE_TEST_PATTERNS"), "basic", NULL };
    trace(argv);
    cr_expect_eq(nrecs, 0);
}

Test(cuda, recording_off_changes_nothing)
{
    char *argv[] = { (char *)env("MEMTRACE_TEST_CUDA_RUNTIME"), "malloc", NULL };
    int st = run(argv, false, NULL);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *plain = strdup(slurp(in_tmp("out")));
    st = run(argv, true, "MEMTRACE_ENABLE=0");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", slurp(in_tmp("err")));
    cr_expect_str_eq(slurp(in_tmp("out")), plain);
    cr_expect(access(in_tmp("t.bin"), F_OK) != 0, "a trace was written with MEMTRACE_ENABLE=0");
    free(plain);
}

/* The dlsym program: the same allocations whichever way it found them. */
static void by_lookup(const char *method)
{
    char *argv[] = { (char *)env("MEMTRACE_TEST_CUDA_DLSYM"), (char *)env("MEMTRACE_TEST_FAKE_CUDA"),
                     (char *)method, NULL };
    trace(argv);
    /* 10, and device 0's pool after the 4 MiB stream-ordered allocation. */
    cr_expect_eq(nrecs, 11, "%s: %zu GPU records", method, nrecs);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 4 * MiB), 1, "%s", method);
    for (unsigned i = 1; i <= 3; i++)
        cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, i * MiB), 1, "%s", method);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_ASYNC, MT_GPU_SPACE_DEVICE, 4 * MiB), 1, "%s", method);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_MANAGED, MT_GPU_SPACE_MANAGED, 5 * MiB), 1, "%s",
                 method);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE, -1, 0), 4, "%s", method);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE_ASYNC, MT_GPU_SPACE_DEVICE, 0), 1, "%s", method);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_ASYNC, 0, 0x77);
    live(MT_GPU_SPACE_DEVICE, 10 * MiB, 0);
    live(MT_GPU_SPACE_MANAGED, 5 * MiB, 0);
}

Test(cuda, dlsym)
{
    by_lookup("dlsym");
}

Test(cuda, dlvsym)
{
    by_lookup("dlvsym");
}

Test(cuda, cuGetProcAddress)
{
    by_lookup("getproc");
}

Test(cuda, cuGetProcAddress_v2)
{
    by_lookup("getproc2");
}

Test(cuda, cuGetProcAddress_v2_per_thread_stream)
{
    by_lookup("ptds");
}

Test(cuda, legacy_cuMemAlloc_left_alone)
{
    char *argv[] = { (char *)env("MEMTRACE_TEST_CUDA_DLSYM"), (char *)env("MEMTRACE_TEST_FAKE_CUDA"), "legacy",
                     NULL };
    trace(argv);
    cr_expect_eq(nrecs, 0);
}

static void runtime(const char *scenario)
{
    char *argv[] = { (char *)env("MEMTRACE_TEST_CUDA_RUNTIME"), (char *)scenario, NULL };
    trace(argv);
}

Test(cuda, runtime_malloc_family_recorded_once)
{
    runtime("malloc");
    /* 14, and device 0's pool after the two 11 MiB stream-ordered
     * allocations: 12 MiB, then 22 (a FREE and an ALLOC). */
    cr_expect_eq(nrecs, 17);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 12 * MiB), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 22 * MiB), 1);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_POOL, MT_GPU_SPACE_POOL, 0), 1);
    /* Seen at the driver: recorded there, not again for the runtime. */
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, 7 * MiB), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_MANAGED, MT_GPU_SPACE_MANAGED, 9 * MiB), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_PITCH, MT_GPU_SPACE_DEVICE, 1024 * 5), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_HOST_ALLOC, MT_GPU_SPACE_HOST, 96 << 10), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC_ASYNC, MT_GPU_SPACE_DEVICE, 11 * MiB), 2);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE, -1, 0), 3);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE_HOST, MT_GPU_SPACE_HOST, 0), 1);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE_ASYNC, MT_GPU_SPACE_DEVICE, 0), 2);
    /* Never reaching the driver: recorded at the runtime. */
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_CUDA_MALLOC_HOST, MT_GPU_SPACE_HOST, 48 << 10), 1);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_CUDA_FREE_HOST, MT_GPU_SPACE_HOST, 0), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_CUDA_MALLOC, -1, 0), 0);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_CUDA_FREE, -1, 0), 0);
    unsigned streams = 0;
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].kind == MT_GPU_ALLOC && recs[i].api == MT_GPU_API_MEM_ALLOC_ASYNC)
            streams |= recs[i].stream == 0x33 ? 1 : recs[i].stream == 0x34 ? 2 : 4;
    cr_expect_eq(streams, 3);
    live(MT_GPU_SPACE_DEVICE, 7 * MiB + 5120 + 22 * MiB, 0);
    live(MT_GPU_SPACE_MANAGED, 9 * MiB, 0);
    live(MT_GPU_SPACE_HOST, 144 << 10, 0);
}

Test(cuda, runtime_driver_entry_points)
{
    runtime("entry");
    cr_expect_eq(nrecs, 4);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, 13 * MiB), 1);
    cr_expect_eq(count(MT_GPU_ALLOC, MT_GPU_API_MEM_CREATE, MT_GPU_SPACE_PHYSICAL, 2 * MiB), 1);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_FREE, MT_GPU_SPACE_DEVICE, 0), 1);
    cr_expect_eq(count(MT_GPU_FREE, MT_GPU_API_MEM_RELEASE, MT_GPU_SPACE_PHYSICAL, 0), 1);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_ALLOC, 1, 0);
    all_on(MT_GPU_ALLOC, MT_GPU_API_MEM_CREATE, 1, 0);
    live(MT_GPU_SPACE_DEVICE, 13 * MiB, 0);
}

Test(cuda, runtime_out_of_memory_recorded_once)
{
    runtime("oom");
    cr_expect_eq(nrecs, 1);
    cr_expect_eq(count(MT_GPU_OOM, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, 1536 * MiB), 1);
}
