/* A program that loads the CUDA driver itself and finds its functions by
 * name: `cuda-dlsym DRIVER METHOD`, METHOD one of
 *   dlsym     dlsym() of the versioned names
 *   dlvsym    dlvsym() of the same
 *   getproc   cuGetProcAddress (found with dlsym), cudaVersion 11040
 *   getproc2  cuGetProcAddress_v2, 12000, and cuGetProcAddress itself
 *             through it
 *   ptds      cuGetProcAddress_v2 with the per-thread default stream flag
 *   legacy    dlsym of cuMemAlloc, the 32-bit function of before 3.2,
 *             which memtrace must leave alone
 * Each method then allocates 1, 2 and 3 MiB with cuMemAlloc_v2, 4 MiB with
 * cuMemAllocAsync (stream 0x77) and 5 MiB with cuMemAllocManaged, and
 * frees them all. Results and device addresses go to stdout. The program
 * also checks that dlsym(RTLD_NEXT) and dlsym(RTLD_DEFAULT) still answer
 * relative to their caller (here: this program).
 */
#include "fake-cuda.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1ull << 20)

typedef CUresult (*get_proc_fn)(const char *, void **, int, uint64_t);
typedef CUresult (*get_proc2_fn)(const char *, void **, int, uint64_t, int *);

static struct {
    CUresult (*ctx_create)(CUcontext *, unsigned, CUdevice);
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*free)(CUdeviceptr);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*alloc_managed)(CUdeviceptr *, size_t, unsigned);
} f;

static void *sym(void *h, const char *name, bool versioned)
{
    void *p = versioned ? dlvsym(h, name, "CUDA_FAKE") : dlsym(h, name);
    if (!p) {
        fprintf(stderr, "%s: %s\n", name, dlerror());
        exit(3);
    }
    return p;
}

static void by_name(void *h, bool versioned)
{
    *(void **)&f.ctx_create = sym(h, "cuCtxCreate_v2", versioned);
    *(void **)&f.alloc = sym(h, "cuMemAlloc_v2", versioned);
    *(void **)&f.free = sym(h, "cuMemFree_v2", versioned);
    *(void **)&f.alloc_async = sym(h, "cuMemAllocAsync", versioned);
    *(void **)&f.free_async = sym(h, "cuMemFreeAsync", versioned);
    *(void **)&f.alloc_managed = sym(h, "cuMemAllocManaged", versioned);
}

static void get2(get_proc2_fn gp, const char *name, void *ret, int version, uint64_t flags)
{
    int status = -1;
    CUresult r = gp(name, (void **)ret, version, flags, &status);
    printf("cuGetProcAddress_v2 %s -> %d status %d\n", name, r, status);
    if (r)
        exit(3);
}

static void by_proc(void *h, const char *method)
{
    if (!strcmp(method, "getproc")) {
        get_proc_fn gp = (get_proc_fn)sym(h, "cuGetProcAddress", false);
        const char *names[] = { "cuCtxCreate", "cuMemAlloc", "cuMemFree", "cuMemAllocAsync", "cuMemFreeAsync",
                                "cuMemAllocManaged" };
        void **slots[] = { (void **)&f.ctx_create, (void **)&f.alloc, (void **)&f.free,
                           (void **)&f.alloc_async, (void **)&f.free_async, (void **)&f.alloc_managed };
        for (int i = 0; i < 6; i++) {
            CUresult r = gp(names[i], slots[i], 11040, 0);
            printf("cuGetProcAddress %s -> %d\n", names[i], r);
            if (r)
                exit(3);
        }
        return;
    }
    get_proc2_fn gp = (get_proc2_fn)sym(h, "cuGetProcAddress_v2", false);
    uint64_t flags = !strcmp(method, "ptds") ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : 0;
    /* The resolver through itself, as the runtime does: the pointer it
     * gives must work (and be wrapped) the same way. */
    get_proc2_fn gp2;
    get2(gp, "cuGetProcAddress", &gp2, 12000, 0);
    get2(gp2, "cuCtxCreate", &f.ctx_create, 12000, flags);
    get2(gp2, "cuMemAlloc", &f.alloc, 12000, flags);
    get2(gp2, "cuMemFree", &f.free, 12000, flags);
    get2(gp2, "cuMemAllocAsync", &f.alloc_async, 12000, flags);
    get2(gp2, "cuMemFreeAsync", &f.free_async, 12000, flags);
    get2(gp2, "cuMemAllocManaged", &f.alloc_managed, 12000, flags);
}

static int failures;

static void expect(const char *what, CUresult r, unsigned long long value)
{
    printf("%s -> %d 0x%llx\n", what, r, value);
    if (r) {
        fprintf(stderr, "%s: %d\n", what, r);
        failures++;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: cuda-dlsym DRIVER dlsym|dlvsym|getproc|getproc2|ptds|legacy\n");
        return 2;
    }
    /* Our own lookups relative to this program: the next malloc after it
     * is whatever malloc the program itself calls. */
    if (dlsym(RTLD_NEXT, "malloc") != (void *)malloc || dlsym(RTLD_DEFAULT, "malloc") != (void *)malloc) {
        fprintf(stderr, "dlsym(RTLD_NEXT/RTLD_DEFAULT) answered for someone else\n");
        return 4;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        return 3;
    }
    const char *method = argv[2];
    if (!strcmp(method, "legacy")) {
        CUresult (*old)(unsigned *, unsigned) = (CUresult(*)(unsigned *, unsigned))sym(h, "cuMemAlloc", false);
        CUresult (*ctx)(CUcontext *, unsigned, CUdevice) =
            (CUresult(*)(CUcontext *, unsigned, CUdevice))sym(h, "cuCtxCreate_v2", false);
        CUcontext c;
        unsigned a = 0;
        expect("cuCtxCreate_v2", ctx(&c, 0, 0), 0);
        CUresult r = old(&a, 6 * MiB);
        expect("cuMemAlloc (v1)", r, a);
        return failures ? 1 : 0;
    }
    if (!strcmp(method, "dlsym") || !strcmp(method, "dlvsym"))
        by_name(h, !strcmp(method, "dlvsym"));
    else if (!strcmp(method, "getproc") || !strcmp(method, "getproc2") || !strcmp(method, "ptds"))
        by_proc(h, method);
    else {
        fprintf(stderr, "unknown method %s\n", method);
        return 2;
    }
    CUcontext c;
    CUdeviceptr p[5];
    CUstream s = (CUstream)0x77;
    expect("cuCtxCreate", f.ctx_create(&c, 0, 0), 0);
    CUresult r;
    for (int i = 0; i < 3; i++) {
        r = f.alloc(&p[i], (i + 1) * MiB);
        expect("alloc", r, p[i]);
    }
    r = f.alloc_async(&p[3], 4 * MiB, s);
    expect("alloc_async", r, p[3]);
    r = f.alloc_managed(&p[4], 5 * MiB, 1);
    expect("alloc_managed", r, p[4]);
    for (int i = 0; i < 3; i++)
        expect("free", f.free(p[i]), 0);
    expect("free_async", f.free_async(p[3], s), 0);
    expect("free managed", f.free(p[4]), 0);
    return failures ? 1 : 0;
}
