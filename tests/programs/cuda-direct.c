/* A program linked against the CUDA driver (in the tests, the stand-in of
 * tests/fake-cuda), calling its memory functions directly: the dynamic
 * linker binds them to libmemtrace.so's exports when it is preloaded.
 * `cuda-direct SCENARIO`; every result and device address goes to stdout,
 * which must read the same traced and untraced. Sizes are what
 * tests/test-cuda.c expects; change both together.
 */
#include "fake-cuda.h"

#include <stdio.h>
#include <string.h>

#define MiB (1ull << 20)

static int failures;

static void show(const char *what, CUresult r, unsigned long long value)
{
    printf("%s -> %d 0x%llx\n", what, r, value);
}

static void expect(const char *what, CUresult r, CUresult want)
{
    show(what, r, 0);
    if (r != want) {
        fprintf(stderr, "%s: %d, expected %d\n", what, r, want);
        failures++;
    }
}

static void context(int dev)
{
    CUcontext c;
    expect("cuCtxCreate_v2", cuCtxCreate_v2(&c, 0, dev), 0);
}

/* Device, pitched, managed, pinned and registered memory, all freed. */
static void alloc(void)
{
    context(0);
    CUdeviceptr a, b, m;
    size_t pitch;
    void *h1, *h2;
    static char buf[2][8192];
    expect("cuMemAlloc_v2", cuMemAlloc_v2(&a, MiB + 1), 0);
    show("a", 0, a);
    expect("cuMemAllocPitch_v2", cuMemAllocPitch_v2(&b, &pitch, 1000, 3, 4), 0);
    show("pitch", 0, pitch);
    expect("cuMemAllocManaged", cuMemAllocManaged(&m, 2 * MiB, 1), 0);
    expect("cuMemHostAlloc", cuMemHostAlloc(&h1, 64 << 10, 0), 0);
    expect("cuMemAllocHost_v2", cuMemAllocHost_v2(&h2, 128 << 10), 0);
    expect("cuMemHostRegister_v2", cuMemHostRegister_v2(buf[0], 8192, 0), 0);
    expect("cuMemHostRegister", cuMemHostRegister(buf[1], 4096, 0), 0);
    /* Failures that are not out-of-memory pass through, unrecorded. */
    expect("cuMemAlloc_v2 odd", cuMemAlloc_v2(&b, FAKE_CUDA_ODD_SIZE), FAKE_CUDA_ODD_RESULT);
    expect("cuMemFree_v2 unknown", cuMemFree_v2(0xbad000), 1);
    expect("cuMemHostUnregister unknown", cuMemHostUnregister(buf[0] + 16), 713);
    expect("cuMemFree_v2 a", cuMemFree_v2(a), 0);
    expect("cuMemFree_v2 b", cuMemFree_v2(b), 0);
    expect("cuMemFree_v2 m", cuMemFree_v2(m), 0);
    expect("cuMemFreeHost", cuMemFreeHost(h1), 0);
    expect("cuMemFreeHost", cuMemFreeHost(h2), 0);
    expect("cuMemHostUnregister", cuMemHostUnregister(buf[0]), 0);
    expect("cuMemHostUnregister", cuMemHostUnregister(buf[1]), 0);
}

/* The virtual memory API as PyTorch's expandable segments use it: a
 * reservation, two 2 MiB pages of device 1 mapped end to end, one unmap of
 * both. */
static void vmm(void)
{
    context(0);
    CUdeviceptr va;
    CUmemGenericAllocationHandle h[2];
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof(prop));
    prop.type = 1;
    prop.location.type = 1;
    prop.location.id = 1;
    expect("cuMemAddressReserve", cuMemAddressReserve(&va, 64 * MiB, 0, 0, 0), 0);
    show("va", 0, va);
    for (int i = 0; i < 2; i++) {
        expect("cuMemCreate", cuMemCreate(&h[i], 2 * MiB, &prop, 0), 0);
        show("handle", 0, h[i]);
        expect("cuMemMap", cuMemMap(va + i * 2 * MiB, 2 * MiB, 0, h[i], 0), 0);
    }
    expect("cuMemUnmap", cuMemUnmap(va, 4 * MiB), 0);
    for (int i = 0; i < 2; i++)
        expect("cuMemRelease", cuMemRelease(h[i]), 0);
    expect("cuMemAddressFree", cuMemAddressFree(va, 64 * MiB), 0);
}

/* Stream-ordered allocations on device 1, freed from a device 0 context. */
static void async(void)
{
    context(1);
    CUdeviceptr p[6];
    CUstream s = (CUstream)0x5a;
    CUmemoryPool pool = (CUmemoryPool)0x900;
    expect("cuMemAllocAsync", cuMemAllocAsync(&p[0], 3 * MiB, s), 0);
    expect("cuMemAllocAsync", cuMemAllocAsync(&p[1], 3 * MiB, s), 0);
    expect("cuMemAllocAsync_ptsz", cuMemAllocAsync_ptsz(&p[2], 3 * MiB, s), 0);
    expect("cuMemAllocFromPoolAsync", cuMemAllocFromPoolAsync(&p[3], 5 * MiB, pool, s), 0);
    expect("cuMemAllocFromPoolAsync_ptsz", cuMemAllocFromPoolAsync_ptsz(&p[4], 5 * MiB, pool, s), 0);
    for (int i = 0; i < 5; i++)
        show("p", 0, p[i]);
    context(0);
    expect("cuMemFreeAsync", cuMemFreeAsync(p[0], s), 0);
    expect("cuMemFreeAsync_ptsz", cuMemFreeAsync_ptsz(p[1], s), 0);
    expect("cuMemFreeAsync", cuMemFreeAsync(p[2], s), 0);
    expect("cuMemFreeAsync", cuMemFreeAsync(p[3], s), 0);
    expect("cuMemFreeAsync_ptsz", cuMemFreeAsync_ptsz(p[4], s), 0);
}

/* Out of memory: 600 MiB fits in the 1 GiB device, a second 600 MiB does
 * not, nor a 2 GiB cuMemCreate. */
static void oom(void)
{
    context(0);
    CUdeviceptr a, b;
    CUmemGenericAllocationHandle h;
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof(prop));
    prop.location.type = 1;
    expect("cuMemAlloc_v2 600", cuMemAlloc_v2(&a, 600 * MiB), 0);
    expect("cuMemAlloc_v2 600 again", cuMemAlloc_v2(&b, 600 * MiB), 2);
    expect("cuMemCreate 2G", cuMemCreate(&h, 2048 * MiB, &prop, 0), 2);
    expect("cuMemFree_v2", cuMemFree_v2(a), 0);
}

int main(int argc, char **argv)
{
    const char *s = argc > 1 ? argv[1] : "";
    expect("cuInit", cuInit(0), 0);
    if (!strcmp(s, "alloc"))
        alloc();
    else if (!strcmp(s, "vmm"))
        vmm();
    else if (!strcmp(s, "async"))
        async();
    else if (!strcmp(s, "oom"))
        oom();
    else if (strcmp(s, "none")) {
        fprintf(stderr, "usage: cuda-direct alloc|vmm|async|oom|none\n");
        return 2;
    }
    return failures ? 1 : 0;
}
