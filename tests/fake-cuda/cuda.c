/* A stand-in for the CUDA driver, libcuda.so.1, for tests without a GPU.
 * Its rules are in fake-cuda.h. Device memory is bookkeeping only: the
 * addresses it hands out are never backed (pinned host memory is, with
 * malloc). Every exported entry point is an alias of a hidden function, so
 * the addresses the library uses for itself (cuGetProcAddress's table) are
 * its own even when a preloaded library exports the same names. Thread
 * safety: one mutex around the bookkeeping.
 */
#define FAKE_CUDA_NO_PROTOTYPES
#include "fake-cuda.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) extern __typeof(f_##name) name __attribute__((alias("f_" #name), visibility("default")));

enum { K_DEVICE, K_HOST, K_REGISTERED, K_VA, K_HANDLE };

static struct block {
    uint64_t addr, size;
    int dev, kind;
    bool live;
} blocks[8192];
static unsigned nblocks;
static uint64_t used[2], next_addr[2] = { 0xd000000000ull, 0xd800000000ull };
static uint64_t next_va = 0xe000000000ull, next_handle = FAKE_CUDA_HANDLE_BASE;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int current = -1;

static int dev_now(void)
{
    return current < 0 ? 0 : current;
}

static CUresult take(int kind, int dev, uint64_t addr, uint64_t size)
{
    if (nblocks == sizeof(blocks) / sizeof(blocks[0]))
        return 2;
    blocks[nblocks++] = (struct block){ addr, size, dev, kind, true };
    return 0;
}

/* Device memory (and handles): capacity checked, address from the device's range. */
static CUresult dev_alloc(int kind, int dev, uint64_t size, unsigned long long *ret)
{
    if (size == FAKE_CUDA_ODD_SIZE)
        return FAKE_CUDA_ODD_RESULT;
    if (size == 0)
        return 1;
    pthread_mutex_lock(&lock);
    CUresult r = 2;
    if (used[dev] + size <= FAKE_CUDA_CAPACITY) {
        uint64_t addr = kind == K_HANDLE ? next_handle++ : next_addr[dev];
        r = take(kind, dev, addr, size);
        if (!r) {
            used[dev] += size;
            if (kind != K_HANDLE)
                next_addr[dev] += (size + 0xfff) & ~0xfffull;
            *ret = addr;
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static CUresult release(int kind, uint64_t addr, CUresult not_found)
{
    pthread_mutex_lock(&lock);
    CUresult r = not_found;
    for (unsigned i = 0; i < nblocks; i++) {
        struct block *b = &blocks[i];
        if (b->live && b->kind == kind && b->addr == addr) {
            b->live = false;
            if (kind == K_DEVICE || kind == K_HANDLE)
                used[b->dev] -= b->size;
            r = 0;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static CUresult f_cuInit(unsigned flags) { return 0; }
static CUresult f_cuCtxCreate_v2(CUcontext *ctx, unsigned flags, CUdevice dev)
{
    if (dev < 0 || dev > 1)
        return 101; /* CUDA_ERROR_INVALID_DEVICE */
    current = dev;
    *ctx = (CUcontext)(uintptr_t)(0xc0 + dev);
    return 0;
}
static CUresult f_cuCtxSetCurrent(CUcontext ctx)
{
    current = ctx ? (int)((uintptr_t)ctx - 0xc0) : -1;
    return 0;
}
static CUresult f_cuCtxGetDevice(CUdevice *dev)
{
    if (current < 0)
        return 201; /* CUDA_ERROR_INVALID_CONTEXT */
    *dev = current;
    return 0;
}
static CUresult f_cuMemAlloc_v2(CUdeviceptr *dptr, size_t size)
{
    return dev_alloc(K_DEVICE, dev_now(), size, dptr);
}
/* The 32-bit allocator of before CUDA 3.2: not one memtrace may wrap. */
static CUresult f_cuMemAlloc(unsigned *dptr, unsigned size)
{
    unsigned long long a;
    CUresult r = dev_alloc(K_DEVICE, dev_now(), size, &a);
    if (!r)
        *dptr = (unsigned)a;
    return r;
}
static CUresult f_cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height, unsigned elem)
{
    size_t p = (width + 511) & ~(size_t)511;
    CUresult r = dev_alloc(K_DEVICE, dev_now(), p * height, dptr);
    if (!r)
        *pitch = p;
    return r;
}
static CUresult f_cuMemFree_v2(CUdeviceptr dptr) { return release(K_DEVICE, dptr, 1); }
static CUresult f_cuMemAllocManaged(CUdeviceptr *dptr, size_t size, unsigned flags)
{
    return dev_alloc(K_DEVICE, dev_now(), size, dptr);
}
/* What cuGetProcAddress hands out for cuMemAllocManaged: no symbol of its own. */
static CUresult managed_internal(CUdeviceptr *dptr, size_t size, unsigned flags)
{
    return dev_alloc(K_DEVICE, dev_now(), size, dptr);
}
static CUresult f_cuMemHostAlloc(void **pp, size_t size, unsigned flags)
{
    if (size == FAKE_CUDA_ODD_SIZE)
        return FAKE_CUDA_ODD_RESULT;
    void *p = malloc(size);
    if (!p)
        return 2;
    pthread_mutex_lock(&lock);
    CUresult r = take(K_HOST, dev_now(), (uintptr_t)p, size);
    pthread_mutex_unlock(&lock);
    if (r)
        free(p);
    else
        *pp = p;
    return r;
}
static CUresult f_cuMemAllocHost_v2(void **pp, size_t size) { return f_cuMemHostAlloc(pp, size, 0); }
static CUresult f_cuMemFreeHost(void *p)
{
    CUresult r = release(K_HOST, (uintptr_t)p, 1);
    if (!r)
        free(p);
    return r;
}
static CUresult f_cuMemHostRegister_v2(void *p, size_t size, unsigned flags)
{
    pthread_mutex_lock(&lock);
    CUresult r = take(K_REGISTERED, dev_now(), (uintptr_t)p, size);
    pthread_mutex_unlock(&lock);
    return r;
}
static CUresult f_cuMemHostRegister(void *p, size_t size, unsigned flags)
{
    return f_cuMemHostRegister_v2(p, size, flags);
}
static CUresult f_cuMemHostUnregister(void *p)
{
    return release(K_REGISTERED, (uintptr_t)p, 713); /* CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED */
}
static CUresult f_cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t align, CUdeviceptr addr,
                                      unsigned long long flags)
{
    pthread_mutex_lock(&lock);
    *ptr = next_va;
    CUresult r = take(K_VA, 0, next_va, size);
    next_va += (size + 0xfffff) & ~0xfffffull;
    pthread_mutex_unlock(&lock);
    return r;
}
static CUresult f_cuMemAddressFree(CUdeviceptr ptr, size_t size) { return release(K_VA, ptr, 1); }
static CUresult f_cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                              unsigned long long flags)
{
    int dev = prop && prop->location.type == 1 ? prop->location.id : 0;
    if (dev < 0 || dev > 1)
        return 101;
    return dev_alloc(K_HANDLE, dev, size, handle);
}
static CUresult f_cuMemRelease(CUmemGenericAllocationHandle handle) { return release(K_HANDLE, handle, 1); }
static CUresult f_cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                           unsigned long long flags)
{
    return 0;
}
static CUresult f_cuMemUnmap(CUdeviceptr ptr, size_t size) { return 0; }
/* Stream-ordered pools: device d's current pool is FAKE_CUDA_POOL_BASE + d;
 * a pool's reserved bytes are what was ever allocated from it, rounded up
 * to 2 MiB (it never shrinks: no trimming here). */
static struct {
    uint64_t pool, used;
} pools[8];

static void pool_grow(uint64_t pool, uint64_t size)
{
    pthread_mutex_lock(&lock);
    for (unsigned i = 0; i < 8; i++) {
        if (!pools[i].pool || pools[i].pool == pool) {
            pools[i].pool = pool;
            pools[i].used += size;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
}

static CUresult f_cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    if (dev < 0 || dev > 1)
        return 101;
    *pool = (CUmemoryPool)(uintptr_t)(FAKE_CUDA_POOL_BASE + (unsigned)dev);
    return 0;
}

static CUresult f_cuMemPoolGetAttribute(CUmemoryPool pool, int attr, void *value)
{
    if (attr != 5) /* CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT */
        return 1;
    uint64_t v = 0;
    pthread_mutex_lock(&lock);
    for (unsigned i = 0; i < 8; i++)
        if (pools[i].pool == (uintptr_t)pool)
            v = (pools[i].used + (2u << 20) - 1) & ~((uint64_t)(2u << 20) - 1);
    pthread_mutex_unlock(&lock);
    memcpy(value, &v, sizeof v);
    return 0;
}

static CUresult f_cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream stream)
{
    CUresult r = dev_alloc(K_DEVICE, dev_now(), size, dptr);
    if (!r)
        pool_grow(FAKE_CUDA_POOL_BASE + (unsigned)dev_now(), size);
    return r;
}
static CUresult f_cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream stream)
{
    return f_cuMemAllocAsync(dptr, size, stream);
}
static CUresult f_cuMemFreeAsync(CUdeviceptr dptr, CUstream stream) { return release(K_DEVICE, dptr, 1); }
static CUresult f_cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream) { return release(K_DEVICE, dptr, 1); }
static CUresult f_cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream)
{
    CUresult r = dev_alloc(K_DEVICE, dev_now(), size, dptr);
    if (!r)
        pool_grow((uintptr_t)pool, size);
    return r;
}
static CUresult f_cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream)
{
    return f_cuMemAllocFromPoolAsync(dptr, size, pool, stream);
}

static CUresult f_cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags, int *status);
static CUresult f_cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags)
{
    return f_cuGetProcAddress_v2(symbol, pfn, version, flags, NULL);
}

/* Base name -> the function for old versions, from `since` on, and with
 * per-thread default stream semantics. */
static const struct proc {
    const char *name;
    void *old;
    int since;
    void *now, *ptsz;
} procs[] = {
#define P(name, old, since, now, ptsz) { name, (void *)(old), since, (void *)(now), (void *)(ptsz) }
    P("cuInit", f_cuInit, 0, f_cuInit, NULL),
    P("cuCtxGetDevice", f_cuCtxGetDevice, 0, f_cuCtxGetDevice, NULL),
    P("cuCtxCreate", NULL, 3020, f_cuCtxCreate_v2, NULL),
    P("cuCtxSetCurrent", f_cuCtxSetCurrent, 0, f_cuCtxSetCurrent, NULL),
    P("cuMemAlloc", f_cuMemAlloc, 3020, f_cuMemAlloc_v2, NULL),
    P("cuMemAllocPitch", NULL, 3020, f_cuMemAllocPitch_v2, NULL),
    P("cuMemFree", NULL, 3020, f_cuMemFree_v2, NULL),
    P("cuMemAllocManaged", managed_internal, 0, managed_internal, NULL),
    P("cuMemHostAlloc", f_cuMemHostAlloc, 0, f_cuMemHostAlloc, NULL),
    P("cuMemAllocHost", NULL, 3020, f_cuMemAllocHost_v2, NULL),
    P("cuMemFreeHost", f_cuMemFreeHost, 0, f_cuMemFreeHost, NULL),
    P("cuMemHostRegister", f_cuMemHostRegister, 6050, f_cuMemHostRegister_v2, NULL),
    P("cuMemHostUnregister", f_cuMemHostUnregister, 0, f_cuMemHostUnregister, NULL),
    P("cuMemAddressReserve", f_cuMemAddressReserve, 0, f_cuMemAddressReserve, NULL),
    P("cuMemAddressFree", f_cuMemAddressFree, 0, f_cuMemAddressFree, NULL),
    P("cuMemCreate", f_cuMemCreate, 0, f_cuMemCreate, NULL),
    P("cuMemRelease", f_cuMemRelease, 0, f_cuMemRelease, NULL),
    P("cuMemMap", f_cuMemMap, 0, f_cuMemMap, NULL),
    P("cuMemUnmap", f_cuMemUnmap, 0, f_cuMemUnmap, NULL),
    P("cuMemAllocAsync", f_cuMemAllocAsync, 0, f_cuMemAllocAsync, f_cuMemAllocAsync_ptsz),
    P("cuMemFreeAsync", f_cuMemFreeAsync, 0, f_cuMemFreeAsync, f_cuMemFreeAsync_ptsz),
    P("cuMemAllocFromPoolAsync", f_cuMemAllocFromPoolAsync, 0, f_cuMemAllocFromPoolAsync,
      f_cuMemAllocFromPoolAsync_ptsz),
    P("cuGetProcAddress", f_cuGetProcAddress, 12000, f_cuGetProcAddress_v2, NULL),
#undef P
};

static CUresult f_cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags, int *status)
{
    for (size_t i = 0; i < sizeof(procs) / sizeof(procs[0]); i++) {
        const struct proc *p = &procs[i];
        if (strcmp(p->name, symbol))
            continue;
        void *f = version >= p->since ? p->now : p->old;
        if (p->ptsz && (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
            f = p->ptsz;
        if (!f)
            break;
        *pfn = f;
        if (status)
            *status = 0;
        return 0;
    }
    *pfn = NULL;
    if (status)
        *status = 1; /* CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND */
    return 500;      /* CUDA_ERROR_NOT_FOUND */
}

/* The runtime's private way in (cudart.c): one memtrace does not know. */
static CUresult f_fakeDriverGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags,
                                           int *status)
{
    return f_cuGetProcAddress_v2(symbol, pfn, version, flags, status);
}

EXPORT(cuInit)
EXPORT(cuCtxCreate_v2)
EXPORT(cuCtxSetCurrent)
EXPORT(cuCtxGetDevice)
EXPORT(cuMemAlloc)
EXPORT(cuMemAlloc_v2)
EXPORT(cuMemAllocPitch_v2)
EXPORT(cuMemFree_v2)
EXPORT(cuMemAllocManaged)
EXPORT(cuMemHostAlloc)
EXPORT(cuMemAllocHost_v2)
EXPORT(cuMemFreeHost)
EXPORT(cuMemHostRegister)
EXPORT(cuMemHostRegister_v2)
EXPORT(cuMemHostUnregister)
EXPORT(cuMemAddressReserve)
EXPORT(cuMemAddressFree)
EXPORT(cuMemCreate)
EXPORT(cuMemRelease)
EXPORT(cuMemMap)
EXPORT(cuMemUnmap)
EXPORT(cuMemAllocAsync)
EXPORT(cuDeviceGetMemPool)
EXPORT(cuMemPoolGetAttribute)
EXPORT(cuMemAllocAsync_ptsz)
EXPORT(cuMemFreeAsync)
EXPORT(cuMemFreeAsync_ptsz)
EXPORT(cuMemAllocFromPoolAsync)
EXPORT(cuMemAllocFromPoolAsync_ptsz)
EXPORT(cuGetProcAddress)
EXPORT(cuGetProcAddress_v2)
EXPORT(fakeDriverGetProcAddress)
