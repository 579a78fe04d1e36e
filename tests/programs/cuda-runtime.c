/* A program linked against the CUDA runtime (in the tests, the stand-in of
 * tests/fake-cuda, which reaches the driver through cuGetProcAddress_v2).
 * `cuda-runtime SCENARIO`:
 *   malloc  the cudaMalloc family, each block freed
 *   entry   driver functions from cudaGetDriverEntryPoint and
 *           cudaGetDriverEntryPointByVersion, called directly
 *   oom     cudaMalloc of more than the device holds
 * Results and device addresses go to stdout.
 */
#include "fake-cuda.h"

#include <stdio.h>
#include <string.h>

#define MiB (1ull << 20)

static int failures;

static void expect(const char *what, int r, int want, unsigned long long value)
{
    printf("%s -> %d 0x%llx\n", what, r, value);
    if (r != want) {
        fprintf(stderr, "%s: %d, expected %d\n", what, r, want);
        failures++;
    }
}

static void malloc_family(void)
{
    void *d, *m, *pitched, *h1, *h2, *a1, *a2;
    size_t pitch;
    int r;
    r = cudaMalloc(&d, 7 * MiB);
    expect("cudaMalloc", r, 0, (uintptr_t)d);
    r = cudaMallocManaged(&m, 9 * MiB, 1);
    expect("cudaMallocManaged", r, 0, (uintptr_t)m);
    r = cudaMallocPitch(&pitched, &pitch, 1000, 5);
    expect("cudaMallocPitch", r, 0, pitch);
    r = cudaHostAlloc(&h1, 96 << 10, 0);
    expect("cudaHostAlloc", r, 0, 0);
    r = cudaMallocHost(&h2, 48 << 10); /* never reaches the driver */
    expect("cudaMallocHost", r, 0, 0);
    r = cudaMallocAsync(&a1, 11 * MiB, (cudaStream_t)0x33);
    expect("cudaMallocAsync", r, 0, (uintptr_t)a1);
    r = cudaMallocAsync_ptsz(&a2, 11 * MiB, (cudaStream_t)0x34);
    expect("cudaMallocAsync_ptsz", r, 0, (uintptr_t)a2);
    expect("cudaMallocHost odd", cudaMallocHost(&h1, FAKE_CUDA_ODD_SIZE), FAKE_CUDA_ODD_RESULT, 0);
    expect("cudaFree NULL", cudaFree(NULL), 0, 0);
    expect("cudaFree d", cudaFree(d), 0, 0);
    expect("cudaFree m", cudaFree(m), 0, 0);
    expect("cudaFree pitched", cudaFree(pitched), 0, 0);
    expect("cudaFreeHost h1", cudaFreeHost(h1), 0, 0);
    expect("cudaFreeHost h2", cudaFreeHost(h2), 0, 0);
    expect("cudaFreeAsync", cudaFreeAsync(a1, (cudaStream_t)0x33), 0, 0);
    expect("cudaFreeAsync_ptsz", cudaFreeAsync_ptsz(a2, (cudaStream_t)0x34), 0, 0);
}

static void entry(void)
{
    CUresult (*alloc)(CUdeviceptr *, size_t), (*release)(CUdeviceptr);
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long);
    CUresult (*rel)(CUmemGenericAllocationHandle);
    int status = -1;
    expect("cudaSetDevice", cudaSetDevice(1), 0, 0);
    expect("cudaGetDriverEntryPoint cuMemAlloc", cudaGetDriverEntryPoint("cuMemAlloc", (void **)&alloc, 0, &status), 0,
           (unsigned long long)status);
    expect("cudaGetDriverEntryPoint cuMemFree", cudaGetDriverEntryPoint("cuMemFree", (void **)&release, 0, &status),
           0, 0);
    expect("cudaGetDriverEntryPointByVersion cuMemCreate",
           cudaGetDriverEntryPointByVersion("cuMemCreate", (void **)&create, 12000, 0, &status), 0, 0);
    expect("cudaGetDriverEntryPointByVersion cuMemRelease",
           cudaGetDriverEntryPointByVersion("cuMemRelease", (void **)&rel, 12000, 0, &status), 0, 0);
    void *nothing;
    expect("cudaGetDriverEntryPoint nothing", cudaGetDriverEntryPoint("cuNoSuchThing", &nothing, 0, &status), 500,
           0);
    CUdeviceptr p;
    CUmemGenericAllocationHandle h;
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof(prop));
    prop.location.type = 1;
    prop.location.id = 1;
    int r = alloc(&p, 13 * MiB);
    expect("alloc", r, 0, p);
    r = create(&h, 2 * MiB, &prop, 0);
    expect("create", r, 0, h);
    expect("free", release(p), 0, 0);
    expect("release", rel(h), 0, 0);
}

static void oom(void)
{
    void *d;
    expect("cudaMalloc 1.5G", cudaMalloc(&d, 1536 * MiB), 2, 0);
}

int main(int argc, char **argv)
{
    const char *s = argc > 1 ? argv[1] : "";
    if (!strcmp(s, "malloc"))
        malloc_family();
    else if (!strcmp(s, "entry"))
        entry();
    else if (!strcmp(s, "oom"))
        oom();
    else {
        fprintf(stderr, "usage: cuda-runtime malloc|entry|oom\n");
        return 2;
    }
    return failures ? 1 : 0;
}
