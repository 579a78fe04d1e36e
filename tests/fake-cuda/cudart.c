/* A stand-in for the CUDA runtime, libcudart.so, for tests without a GPU.
 *
 * Like the real one it never links against the driver: on first use it
 * dlopen()s it (FAKE_CUDA_DRIVER, else libcuda.so.1), looks up
 * cuGetProcAddress_v2 with dlsym and asks that for every driver function
 * it calls. Two things differ on purpose, so each of memtrace's paths is
 * exercised: cudaMallocHost and the cudaFreeHost of its blocks never reach
 * the driver (memtrace must record them at the runtime level), and
 * cudaGetDriverEntryPoint(ByVersion) go through a private driver entry
 * point memtrace does not know, as the real runtime's internal pointer is.
 */
#define FAKE_CUDA_NO_PROTOTYPES
#include "fake-cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define API __attribute__((visibility("default")))
#define RUNTIME_VERSION 12080

typedef CUresult (*get_proc_fn)(const char *, void **, int, uint64_t, int *);

static struct {
    CUresult (*ctx_get_device)(CUdevice *);
    CUresult (*ctx_create)(CUcontext *, unsigned, CUdevice);
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*free)(CUdeviceptr);
    CUresult (*alloc_pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
    CUresult (*alloc_managed)(CUdeviceptr *, size_t, unsigned);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*free_host)(void *);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*alloc_async_ptsz)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*free_async_ptsz)(CUdeviceptr, CUstream);
    get_proc_fn private_get_proc;
} drv;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_error;

static void get(get_proc_fn gp, const char *name, void *ret, uint64_t flags)
{
    int status;
    if (gp(name, (void **)ret, RUNTIME_VERSION, flags, &status) != 0) {
        fprintf(stderr, "fake cudart: no %s in the driver\n", name);
        init_error = 3;
    }
}

static void init(void)
{
    const char *path = getenv("FAKE_CUDA_DRIVER");
    void *h = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    get_proc_fn gp = h ? (get_proc_fn)dlsym(h, "cuGetProcAddress_v2") : NULL;
    drv.private_get_proc = h ? (get_proc_fn)dlsym(h, "fakeDriverGetProcAddress") : NULL;
    if (!gp || !drv.private_get_proc) {
        init_error = 35; /* cudaErrorInsufficientDriver */
        return;
    }
    get(gp, "cuCtxGetDevice", &drv.ctx_get_device, 0);
    get(gp, "cuCtxCreate", &drv.ctx_create, 0);
    get(gp, "cuMemAlloc", &drv.alloc, 0);
    get(gp, "cuMemFree", &drv.free, 0);
    get(gp, "cuMemAllocPitch", &drv.alloc_pitch, 0);
    get(gp, "cuMemAllocManaged", &drv.alloc_managed, 0);
    get(gp, "cuMemHostAlloc", &drv.host_alloc, 0);
    get(gp, "cuMemFreeHost", &drv.free_host, 0);
    get(gp, "cuMemAllocAsync", &drv.alloc_async, 0);
    get(gp, "cuMemAllocAsync", &drv.alloc_async_ptsz, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
    get(gp, "cuMemFreeAsync", &drv.free_async, 0);
    get(gp, "cuMemFreeAsync", &drv.free_async_ptsz, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
}

/* Initialises the runtime and makes a context current (device 0 unless
 * cudaSetDevice chose). */
static int ready(void)
{
    pthread_once(&once, init);
    if (init_error)
        return init_error;
    CUdevice d;
    if (drv.ctx_get_device(&d) != 0) {
        CUcontext c;
        return drv.ctx_create(&c, 0, 0);
    }
    return 0;
}

API cudaError_t cudaSetDevice(int dev)
{
    pthread_once(&once, init);
    if (init_error)
        return init_error;
    CUcontext c;
    return drv.ctx_create(&c, 0, dev);
}

API cudaError_t cudaMalloc(void **p, size_t size)
{
    int r = ready();
    return r ? r : drv.alloc((CUdeviceptr *)p, size);
}

API cudaError_t cudaFree(void *p)
{
    int r = ready();
    return r || !p ? r : drv.free((CUdeviceptr)(uintptr_t)p);
}

API cudaError_t cudaMallocAsync(void **p, size_t size, cudaStream_t stream)
{
    int r = ready();
    return r ? r : drv.alloc_async((CUdeviceptr *)p, size, stream);
}

API cudaError_t cudaMallocAsync_ptsz(void **p, size_t size, cudaStream_t stream)
{
    int r = ready();
    return r ? r : drv.alloc_async_ptsz((CUdeviceptr *)p, size, stream);
}

API cudaError_t cudaFreeAsync(void *p, cudaStream_t stream)
{
    int r = ready();
    return r ? r : drv.free_async((CUdeviceptr)(uintptr_t)p, stream);
}

API cudaError_t cudaFreeAsync_ptsz(void *p, cudaStream_t stream)
{
    int r = ready();
    return r ? r : drv.free_async_ptsz((CUdeviceptr)(uintptr_t)p, stream);
}

API cudaError_t cudaMallocManaged(void **p, size_t size, unsigned flags)
{
    int r = ready();
    return r ? r : drv.alloc_managed((CUdeviceptr *)p, size, flags);
}

API cudaError_t cudaMallocPitch(void **p, size_t *pitch, size_t width, size_t height)
{
    int r = ready();
    return r ? r : drv.alloc_pitch((CUdeviceptr *)p, pitch, width, height, 4);
}

API cudaError_t cudaHostAlloc(void **p, size_t size, unsigned flags)
{
    int r = ready();
    return r ? r : drv.host_alloc(p, size, flags);
}

/* The runtime's own pinned blocks: a small table; the driver never sees them. */
static void *own_host[64];

API cudaError_t cudaMallocHost(void **p, size_t size)
{
    int r = ready();
    if (r)
        return r;
    if (size == FAKE_CUDA_ODD_SIZE)
        return FAKE_CUDA_ODD_RESULT;
    for (int i = 0; i < 64; i++) {
        if (!own_host[i]) {
            own_host[i] = *p = malloc(size ? size : 1);
            return *p ? 0 : 2;
        }
    }
    return 2; /* cudaErrorMemoryAllocation */
}

API cudaError_t cudaFreeHost(void *p)
{
    int r = ready();
    if (r || !p)
        return r;
    for (int i = 0; i < 64; i++) {
        if (own_host[i] == p) {
            own_host[i] = NULL;
            free(p);
            return 0;
        }
    }
    return drv.free_host(p);
}

API cudaError_t cudaGetDriverEntryPoint(const char *symbol, void **pfn, unsigned long long flags, int *status)
{
    pthread_once(&once, init);
    if (init_error)
        return init_error;
    return drv.private_get_proc(symbol, pfn, RUNTIME_VERSION, flags, status) ? 500 : 0;
}

API cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **pfn, unsigned version,
                                                 unsigned long long flags, int *status)
{
    pthread_once(&once, init);
    if (init_error)
        return init_error;
    return drv.private_get_proc(symbol, pfn, (int)version, flags, status) ? 500 : 0;
}
