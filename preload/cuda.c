/* CUDA device memory (see cuda.h and docs/RECORDING.md, "GPU memory").
 *
 * Design. Every covered function is known by its exact versioned name
 * (cuMemAlloc_v2, cuMemAllocAsync_ptsz, cudaMalloc, ...) and has one row in
 * `entries` and WRAPPERS wrappers of identical signature. Wrapper 0 is the
 * exported function of that name, which the dynamic linker binds programs
 * to; it calls the function of that name found after libmemtrace.so
 * (dlsym(RTLD_NEXT), else the already-loaded libcuda.so.1). Wrappers 1 to
 * WRAPPERS-1 are handed out in place of pointers that dlsym, dlvsym,
 * cuGetProcAddress(_v2) or cudaGetDriverEntryPoint(ByVersion) returned:
 * each is bound, once, to one distinct real function, so a program that
 * reaches the driver several ways still calls exactly the function it
 * asked for. When all are bound the pointer goes back unwrapped.
 *
 * Each wrapper calls the real function with the guard down (host memory
 * the driver allocates for itself is the program's), passes its result
 * through untouched, and, when recording, writes one GPU record: ALLOC on
 * success (numbered after the call), FREE numbered before the call but
 * written only if it succeeded, OOM with the requested size when the
 * result is out-of-memory (2 in both APIs). Devices: the current
 * context's (cuCtxGetDevice through the real driver), cuMemCreate's
 * location, and for frees and maps the device noted at allocation in a
 * small address table (`amap`), which also gives a free its space.
 *
 * Runtime over driver: a runtime call (cudaMalloc) usually reaches the
 * driver through a pointer the runtime got from cuGetProcAddress, i.e. a
 * wrapper of ours. A thread-local flag notes that a record was written;
 * a runtime wrapper clears it before the call and records itself only if
 * nothing was recorded inside, so one allocation gives one record, from
 * the driver when it was seen there.
 *
 * dlsym and dlvsym: glibc resolves RTLD_NEXT and RTLD_DEFAULT relative to
 * its caller's return address, so those two handles must reach the real
 * function from the program's own call. The entry points are a few
 * instructions of assembly that jump (not call) to the next dlsym for
 * them, and go to C only for explicit handles, where the caller does not
 * matter. The next dlsym is found without dlsym (we replace it) by
 * reading the C library's dynamic symbol table, then asked for
 * RTLD_NEXT's "dlsym" so another interposer after us stays in the chain.
 *
 * Thread safety: entries are bound with compare-and-swap; the address table
 * takes a spin lock. Nothing allocates: the table is one anonymous mapping.
 */
#include "cuda.h"
#include "log.h"
#include "recorder.h"
#include "stack-table.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MT_EXPORT __attribute__((visibility("default")))
#define WRAPPERS 4

/* ---- the covered functions ------------------------------------------------
 *
 * X(name, kind). The kind names the signature (P_ parameters, A_ argument
 * names, R_ result type) and what is recorded (impl_<kind>). */

#define DRIVER_FUNCTIONS(X)                                  \
    X(cuMemAlloc_v2, ALLOC)                                  \
    X(cuMemAllocPitch_v2, ALLOC_PITCH)                       \
    X(cuMemFree_v2, FREE)                                    \
    X(cuMemAllocManaged, ALLOC_MANAGED)                      \
    X(cuMemHostAlloc, HOST_ALLOC)                            \
    X(cuMemAllocHost_v2, ALLOC_HOST)                         \
    X(cuMemFreeHost, FREE_HOST)                              \
    X(cuMemHostRegister, HOST_REGISTER)                      \
    X(cuMemHostRegister_v2, HOST_REGISTER)                   \
    X(cuMemHostUnregister, HOST_UNREGISTER)                  \
    X(cuMemAddressReserve, ADDRESS_RESERVE)                  \
    X(cuMemAddressFree, ADDRESS_FREE)                        \
    X(cuMemCreate, CREATE)                                   \
    X(cuMemRelease, RELEASE)                                 \
    X(cuMemMap, MAP)                                         \
    X(cuMemUnmap, UNMAP)                                     \
    X(cuMemAllocAsync, ALLOC_ASYNC)                          \
    X(cuMemAllocAsync_ptsz, ALLOC_ASYNC)                     \
    X(cuMemFreeAsync, FREE_ASYNC)                            \
    X(cuMemFreeAsync_ptsz, FREE_ASYNC)                       \
    X(cuMemAllocFromPoolAsync, ALLOC_POOL)                   \
    X(cuMemAllocFromPoolAsync_ptsz, ALLOC_POOL)              \
    X(cuGetProcAddress, GET_PROC)                            \
    X(cuGetProcAddress_v2, GET_PROC_V2)                      \
    X(cuGetProcAddress_v2_ptsz, GET_PROC_V2)

#define RUNTIME_FUNCTIONS(X)                                 \
    X(cudaMalloc, CUDA_MALLOC)                               \
    X(cudaFree, CUDA_FREE)                                   \
    X(cudaMallocAsync, CUDA_MALLOC_ASYNC)                    \
    X(cudaMallocAsync_ptsz, CUDA_MALLOC_ASYNC)               \
    X(cudaFreeAsync, CUDA_FREE_ASYNC)                        \
    X(cudaFreeAsync_ptsz, CUDA_FREE_ASYNC)                   \
    X(cudaMallocManaged, CUDA_MALLOC_MANAGED)                \
    X(cudaMallocHost, CUDA_MALLOC_HOST)                      \
    X(cudaHostAlloc, CUDA_HOST_ALLOC)                        \
    X(cudaFreeHost, CUDA_FREE_HOST)                          \
    X(cudaMallocPitch, CUDA_MALLOC_PITCH)                    \
    X(cudaGetDriverEntryPoint, ENTRY_POINT)                  \
    X(cudaGetDriverEntryPointByVersion, ENTRY_POINT_BY_VERSION)

#define ALL_FUNCTIONS(X) DRIVER_FUNCTIONS(X) RUNTIME_FUNCTIONS(X)

#define P_ALLOC CUdeviceptr *dptr, size_t size
#define A_ALLOC dptr, size
#define P_ALLOC_PITCH CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height, unsigned elem
#define A_ALLOC_PITCH dptr, pitch, width, height, elem
#define P_FREE CUdeviceptr dptr
#define A_FREE dptr
#define P_ALLOC_MANAGED CUdeviceptr *dptr, size_t size, unsigned flags
#define A_ALLOC_MANAGED dptr, size, flags
#define P_HOST_ALLOC void **pp, size_t size, unsigned flags
#define A_HOST_ALLOC pp, size, flags
#define P_ALLOC_HOST void **pp, size_t size
#define A_ALLOC_HOST pp, size
#define P_FREE_HOST void *p
#define A_FREE_HOST p
#define P_HOST_REGISTER void *p, size_t size, unsigned flags
#define A_HOST_REGISTER p, size, flags
#define P_HOST_UNREGISTER void *p
#define A_HOST_UNREGISTER p
#define P_ADDRESS_RESERVE CUdeviceptr *ptr, size_t size, size_t align, CUdeviceptr addr, unsigned long long flags
#define A_ADDRESS_RESERVE ptr, size, align, addr, flags
#define P_ADDRESS_FREE CUdeviceptr ptr, size_t size
#define A_ADDRESS_FREE ptr, size
#define P_CREATE CUmemGenericAllocationHandle *handle, size_t size, const struct mti_cu_mem_allocation_prop *prop, unsigned long long flags
#define A_CREATE handle, size, prop, flags
#define P_RELEASE CUmemGenericAllocationHandle handle
#define A_RELEASE handle
#define P_MAP CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle, unsigned long long flags
#define A_MAP ptr, size, offset, handle, flags
#define P_UNMAP CUdeviceptr ptr, size_t size
#define A_UNMAP ptr, size
#define P_ALLOC_ASYNC CUdeviceptr *dptr, size_t size, CUstream stream
#define A_ALLOC_ASYNC dptr, size, stream
#define P_FREE_ASYNC CUdeviceptr dptr, CUstream stream
#define A_FREE_ASYNC dptr, stream
#define P_ALLOC_POOL CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream
#define A_ALLOC_POOL dptr, size, pool, stream
#define P_GET_PROC const char *symbol, void **pfn, int version, cuuint64_t flags
#define A_GET_PROC symbol, pfn, version, flags
#define P_GET_PROC_V2 const char *symbol, void **pfn, int version, cuuint64_t flags, CUdriverProcAddressQueryResult *status
#define A_GET_PROC_V2 symbol, pfn, version, flags, status
#define P_CUDA_MALLOC void **p, size_t size
#define A_CUDA_MALLOC p, size
#define P_CUDA_FREE void *p
#define A_CUDA_FREE p
#define P_CUDA_MALLOC_ASYNC void **p, size_t size, cudaStream_t stream
#define A_CUDA_MALLOC_ASYNC p, size, stream
#define P_CUDA_FREE_ASYNC void *p, cudaStream_t stream
#define A_CUDA_FREE_ASYNC p, stream
#define P_CUDA_MALLOC_MANAGED void **p, size_t size, unsigned flags
#define A_CUDA_MALLOC_MANAGED p, size, flags
#define P_CUDA_MALLOC_HOST void **p, size_t size
#define A_CUDA_MALLOC_HOST p, size
#define P_CUDA_HOST_ALLOC void **p, size_t size, unsigned flags
#define A_CUDA_HOST_ALLOC p, size, flags
#define P_CUDA_FREE_HOST void *p
#define A_CUDA_FREE_HOST p
#define P_CUDA_MALLOC_PITCH void **p, size_t *pitch, size_t width, size_t height
#define A_CUDA_MALLOC_PITCH p, pitch, width, height
#define P_ENTRY_POINT const char *symbol, void **pfn, unsigned long long flags, cudaDriverEntryPointQueryResult *status
#define A_ENTRY_POINT symbol, pfn, flags, status
#define P_ENTRY_POINT_BY_VERSION const char *symbol, void **pfn, unsigned version, unsigned long long flags, cudaDriverEntryPointQueryResult *status
#define A_ENTRY_POINT_BY_VERSION symbol, pfn, version, flags, status

enum entry_id {
#define X(name, kind) E_##name,
    ALL_FUNCTIONS(X)
#undef X
        E_COUNT
};

struct entry {
    const char *name;
    void *wrapper[WRAPPERS];        /* [0] is the export of that name */
    _Atomic(void *) real[WRAPPERS]; /* what each wrapper calls, NULL: unbound */
};

/* ---- finding real functions ----------------------------------------------- */

/* Set by dl_bootstrap(); read by the assembly entry points. */
__attribute__((visibility("hidden"))) void *mti_next_dlsym;
__attribute__((visibility("hidden"))) void *mti_next_dlvsym;

static void *dlsym_missing(void *handle, const char *name)
{
    return NULL;
}

static void *dlvsym_missing(void *handle, const char *name, const char *version)
{
    return NULL;
}

__attribute__((visibility("hidden"))) void mti_dl_bootstrap(void);

static inline void *(*next_dlsym(void))(void *, const char *)
{
    void *f = __atomic_load_n(&mti_next_dlsym, __ATOMIC_ACQUIRE);
    if (!f) {
        mti_dl_bootstrap();
        f = __atomic_load_n(&mti_next_dlsym, __ATOMIC_ACQUIRE);
    }
    return (void *(*)(void *, const char *))f;
}

static const char *const driver_name = "libcuda.so.1";
static _Atomic(void *) driver_handle;

/* The driver, pinned, if the program loaded it; else NULL. */
static void *driver(void)
{
    void *h = atomic_load_explicit(&driver_handle, memory_order_acquire);
    if (h)
        return h;
    h = dlopen(driver_name, RTLD_NOLOAD | RTLD_LAZY);
    if (!h) {
        (void)dlerror(); /* the program did not ask: leave no error behind */
        return NULL;
    }
    void *expected = NULL;
    if (!atomic_compare_exchange_strong(&driver_handle, &expected, h))
        dlclose(h); /* another thread pinned it first */
    return atomic_load(&driver_handle);
}

/* The function `name` of the driver (or, for cuda* names, the runtime) that
 * comes after libmemtrace.so, or NULL. */
static void *find_real(const char *name)
{
    void *(*look)(void *, const char *) = next_dlsym();
    void *p = look(RTLD_NEXT, name);
    if (!p && strncmp(name, "cuda", 4) != 0) {
        void *h = driver();
        if (h)
            p = look(h, name);
    }
    if (!p)
        (void)dlerror();
    return p;
}

static struct entry entries[E_COUNT];

/* What wrapper `slot` of entry `e` calls, or NULL when the function cannot
 * be found (slot 0) or is not bound. */
static inline void *real_of(unsigned e, unsigned slot)
{
    void *p = atomic_load_explicit(&entries[e].real[slot], memory_order_acquire);
    if (__builtin_expect(p == NULL && slot == 0, 0)) {
        p = find_real(entries[e].name);
        if (p)
            atomic_store_explicit(&entries[e].real[0], p, memory_order_release);
    }
    return p;
}

/* ---- where allocations live: address -> (space, device, size) ------------
 *
 * Open addressing with linear probing and backward-shift deletion, in one
 * lazily touched anonymous mapping; keys are (space, address). A full
 * table just stops remembering (frees then fall back to the current
 * device and the DEVICE space). Callers hold the guard. */

struct amap_slot {
    uint64_t addr;
    uint64_t size;
    uint32_t space; /* space + 1; 0: empty */
    uint32_t device;
};

#define AMAP_BITS 18
#define AMAP_SIZE (1u << AMAP_BITS)
#define AMAP_MAX (AMAP_SIZE / 4 * 3)

static struct amap_slot *amap;
static uint32_t amap_count;
static mti_lock_t amap_lock;
static atomic_int amap_failed;

static inline uint32_t amap_hash(uint64_t addr, unsigned space)
{
    uint64_t h = (addr ^ ((uint64_t)space << 56)) * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> (64 - AMAP_BITS));
}

static bool amap_ready(void)
{
    if (amap)
        return true;
    if (atomic_load(&amap_failed))
        return false;
    long r = syscall(SYS_mmap, NULL, (size_t)AMAP_SIZE * sizeof(struct amap_slot), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r < 0 && r > -4096) {
        atomic_store(&amap_failed, 1);
        return false;
    }
    amap = (struct amap_slot *)r;
    return true;
}

static void amap_put(unsigned space, uint64_t addr, uint64_t size, uint32_t device)
{
    mti_lock(&amap_lock);
    if (!amap_ready() || amap_count >= AMAP_MAX) {
        mti_unlock(&amap_lock);
        return;
    }
    uint32_t i = amap_hash(addr, space);
    while (amap[i].space && !(amap[i].space == space + 1 && amap[i].addr == addr))
        i = (i + 1) & (AMAP_SIZE - 1);
    if (!amap[i].space)
        amap_count++;
    amap[i] = (struct amap_slot){ addr, size, space + 1, device };
    mti_unlock(&amap_lock);
}

/* Finds (space, addr); with `remove`, deletes it. Returns false if absent. */
static bool amap_get(unsigned space, uint64_t addr, bool remove, struct amap_slot *ret)
{
    mti_lock(&amap_lock);
    if (!amap) {
        mti_unlock(&amap_lock);
        return false;
    }
    uint32_t i = amap_hash(addr, space);
    while (amap[i].space && !(amap[i].space == space + 1 && amap[i].addr == addr))
        i = (i + 1) & (AMAP_SIZE - 1);
    if (!amap[i].space) {
        mti_unlock(&amap_lock);
        return false;
    }
    *ret = amap[i];
    if (remove) {
        /* Backward shift: move later members of the run into the hole when
         * their home slot does not lie cyclically in (hole, j]. */
        uint32_t hole = i, j = i;
        for (;;) {
            j = (j + 1) & (AMAP_SIZE - 1);
            if (!amap[j].space)
                break;
            uint32_t home = amap_hash(amap[j].addr, amap[j].space - 1);
            if (((j - home) & (AMAP_SIZE - 1)) >= ((j - hole) & (AMAP_SIZE - 1))) {
                amap[hole] = amap[j];
                hole = j;
            }
        }
        amap[hole].space = 0;
        amap_count--;
    }
    mti_unlock(&amap_lock);
    return true;
}

/* ---- recording ------------------------------------------------------------ */

static __thread struct {
    bool recorded; /* a GPU record was written since the innermost runtime call began */
} cu_self __attribute__((tls_model("initial-exec")));

static _Atomic(void *) ctx_get_device;

/* The current context's device, through the real driver; 0 without one.
 * Guard raised. */
static uint32_t current_device(void)
{
    int (*get)(CUdevice *) = atomic_load_explicit(&ctx_get_device, memory_order_acquire);
    if (!get) {
        get = (int (*)(CUdevice *))find_real("cuCtxGetDevice");
        if (!get)
            return 0;
        atomic_store_explicit(&ctx_get_device, (void *)get, memory_order_release);
    }
    CUdevice d = 0;
    if (get(&d) != MTI_CUDA_SUCCESS || d < 0)
        return 0;
    return (uint32_t)d;
}

#define DEVICE_CURRENT (-1)

/* After an allocating call returned r: an ALLOC on success, an OOM for
 * out-of-memory, nothing otherwise. */
__attribute__((noinline)) static void record_alloc(int r, uint64_t addr, uint64_t size, uint64_t stream,
                                                   unsigned api, unsigned space, int device)
{
    if (r != MTI_CUDA_SUCCESS && r != MTI_CUDA_ERROR_OUT_OF_MEMORY)
        return;
    mti_self.guard++;
    cu_self.recorded = true;
    uint32_t dev = device >= 0 ? (uint32_t)device : current_device();
    uint32_t stack = mti_stack_capture();
    uint64_t seq = mti_next_seq();
    if (r == MTI_CUDA_SUCCESS) {
        mti_emit_gpu_alloc(seq, mti_now(), addr, size, dev, stream, api, space, stack);
        amap_put(space, addr, size, dev);
    } else {
        mti_emit_gpu_oom(seq, mti_now(), size, dev, api, space, (uint64_t)r, stack);
    }
    mti_self.guard--;
}

/* A release in two halves: free_begin before the call numbers it and finds
 * what it releases, free_end after the call writes it if the call worked. */
struct pending_free {
    uint64_t seq, time, addr;
    uint32_t device;
    unsigned space;
};

/* space2: a second space to look in when the address is not known in the
 * first (cuMemFree releases DEVICE and MANAGED memory alike), or -1. */
static void free_begin(struct pending_free *f, uint64_t addr, unsigned space, int space2)
{
    mti_self.guard++;
    struct amap_slot s;
    f->addr = addr;
    f->space = space;
    if (amap_get(space, addr, false, &s) || (space2 >= 0 && amap_get((unsigned)space2, addr, false, &s))) {
        f->space = s.space - 1;
        f->device = s.device;
    } else {
        f->device = current_device();
    }
    f->seq = mti_next_seq();
    f->time = mti_now();
    mti_self.guard--;
}

static void free_end(const struct pending_free *f, int r, unsigned api)
{
    if (r != MTI_CUDA_SUCCESS)
        return;
    mti_self.guard++;
    cu_self.recorded = true;
    struct amap_slot s;
    amap_get(f->space, f->addr, true, &s);
    mti_emit_gpu_free(f->seq, f->time, f->addr, f->device, api, f->space);
    mti_self.guard--;
}

/* Runtime calls: record only if nothing was recorded inside (the driver
 * call the runtime made was seen). */
static inline bool runtime_enter(void)
{
    bool outer = cu_self.recorded;
    cu_self.recorded = false;
    return outer;
}

/* Returns true when the runtime wrapper should record the call itself. */
static inline bool runtime_leave(bool outer)
{
    bool inner = cu_self.recorded;
    cu_self.recorded = outer || inner;
    return !inner;
}

/* ---- the wrappers' bodies ---------------------------------------------------
 *
 * impl_<kind>(e, slot, arguments...): call entry e's real function of that
 * slot and record. */

#define REAL(kind) R_##kind (*real)(P_##kind) = (R_##kind (*)(P_##kind))real_of(e, slot)
#define R_ALLOC CUresult
#define R_ALLOC_PITCH CUresult
#define R_FREE CUresult
#define R_ALLOC_MANAGED CUresult
#define R_HOST_ALLOC CUresult
#define R_ALLOC_HOST CUresult
#define R_FREE_HOST CUresult
#define R_HOST_REGISTER CUresult
#define R_HOST_UNREGISTER CUresult
#define R_ADDRESS_RESERVE CUresult
#define R_ADDRESS_FREE CUresult
#define R_CREATE CUresult
#define R_RELEASE CUresult
#define R_MAP CUresult
#define R_UNMAP CUresult
#define R_ALLOC_ASYNC CUresult
#define R_FREE_ASYNC CUresult
#define R_ALLOC_POOL CUresult
#define R_GET_PROC CUresult
#define R_GET_PROC_V2 CUresult
#define R_CUDA_MALLOC cudaError_t
#define R_CUDA_FREE cudaError_t
#define R_CUDA_MALLOC_ASYNC cudaError_t
#define R_CUDA_FREE_ASYNC cudaError_t
#define R_CUDA_MALLOC_MANAGED cudaError_t
#define R_CUDA_MALLOC_HOST cudaError_t
#define R_CUDA_HOST_ALLOC cudaError_t
#define R_CUDA_FREE_HOST cudaError_t
#define R_CUDA_MALLOC_PITCH cudaError_t
#define R_ENTRY_POINT cudaError_t
#define R_ENTRY_POINT_BY_VERSION cudaError_t

/* Both APIs use 3 for "not initialised": what a call gets when the library
 * it was meant for cannot be found. */
#define CALL_REAL(kind)                                  \
    REAL(kind);                                          \
    if (__builtin_expect(!real, 0))                      \
        return MTI_CUDA_ERROR_NOT_INITIALIZED;           \
    if (!mti_recording())                                \
        return real(A_##kind)

static CUresult impl_ALLOC(unsigned e, unsigned slot, P_ALLOC)
{
    CALL_REAL(ALLOC);
    CUresult r = real(A_ALLOC);
    record_alloc(r, r ? 0 : *dptr, size, 0, MT_GPU_API_MEM_ALLOC, MT_GPU_SPACE_DEVICE, DEVICE_CURRENT);
    return r;
}

static CUresult impl_ALLOC_PITCH(unsigned e, unsigned slot, P_ALLOC_PITCH)
{
    CALL_REAL(ALLOC_PITCH);
    CUresult r = real(A_ALLOC_PITCH);
    /* The bytes held are the pitch (the padded row) times the rows. */
    uint64_t bytes = r ? (uint64_t)width * height : (uint64_t)*pitch * height;
    record_alloc(r, r ? 0 : *dptr, bytes, 0, MT_GPU_API_MEM_ALLOC_PITCH, MT_GPU_SPACE_DEVICE, DEVICE_CURRENT);
    return r;
}

/* The driver's releases: numbered before the call, written if it worked
 * (a null or zero argument goes through unrecorded). */
#define DRIVER_FREE(kind, addr_expr, space, space2, api)                                           \
    static CUresult impl_##kind(unsigned e, unsigned slot, P_##kind)                               \
    {                                                                                              \
        CALL_REAL(kind);                                                                           \
        uint64_t addr_ = (uint64_t)(addr_expr);                                                    \
        if (!addr_)                                                                                \
            return real(A_##kind);                                                                 \
        struct pending_free f;                                                                     \
        free_begin(&f, addr_, space, space2);                                                      \
        CUresult r = real(A_##kind);                                                               \
        free_end(&f, r, api);                                                                      \
        return r;                                                                                  \
    }

DRIVER_FREE(FREE, dptr, MT_GPU_SPACE_DEVICE, MT_GPU_SPACE_MANAGED, MT_GPU_API_MEM_FREE)

static CUresult impl_ALLOC_MANAGED(unsigned e, unsigned slot, P_ALLOC_MANAGED)
{
    CALL_REAL(ALLOC_MANAGED);
    CUresult r = real(A_ALLOC_MANAGED);
    record_alloc(r, r ? 0 : *dptr, size, 0, MT_GPU_API_MEM_ALLOC_MANAGED, MT_GPU_SPACE_MANAGED, DEVICE_CURRENT);
    return r;
}

static CUresult impl_HOST_ALLOC(unsigned e, unsigned slot, P_HOST_ALLOC)
{
    CALL_REAL(HOST_ALLOC);
    CUresult r = real(A_HOST_ALLOC);
    record_alloc(r, r ? 0 : (uintptr_t)*pp, size, 0, MT_GPU_API_MEM_HOST_ALLOC, MT_GPU_SPACE_HOST, DEVICE_CURRENT);
    return r;
}

static CUresult impl_ALLOC_HOST(unsigned e, unsigned slot, P_ALLOC_HOST)
{
    CALL_REAL(ALLOC_HOST);
    CUresult r = real(A_ALLOC_HOST);
    record_alloc(r, r ? 0 : (uintptr_t)*pp, size, 0, MT_GPU_API_MEM_ALLOC_HOST, MT_GPU_SPACE_HOST, DEVICE_CURRENT);
    return r;
}

DRIVER_FREE(FREE_HOST, (uintptr_t)p, MT_GPU_SPACE_HOST, -1, MT_GPU_API_MEM_FREE_HOST)

static CUresult impl_HOST_REGISTER(unsigned e, unsigned slot, P_HOST_REGISTER)
{
    CALL_REAL(HOST_REGISTER);
    CUresult r = real(A_HOST_REGISTER);
    record_alloc(r, (uintptr_t)p, size, 0, MT_GPU_API_MEM_HOST_REGISTER, MT_GPU_SPACE_REGISTERED, DEVICE_CURRENT);
    return r;
}

DRIVER_FREE(HOST_UNREGISTER, (uintptr_t)p, MT_GPU_SPACE_REGISTERED, -1, MT_GPU_API_MEM_HOST_UNREGISTER)

static CUresult impl_ADDRESS_RESERVE(unsigned e, unsigned slot, P_ADDRESS_RESERVE)
{
    CALL_REAL(ADDRESS_RESERVE);
    CUresult r = real(A_ADDRESS_RESERVE);
    record_alloc(r, r ? 0 : *ptr, size, 0, MT_GPU_API_MEM_ADDRESS_RESERVE, MT_GPU_SPACE_VA, DEVICE_CURRENT);
    return r;
}

DRIVER_FREE(ADDRESS_FREE, ptr, MT_GPU_SPACE_VA, -1, MT_GPU_API_MEM_ADDRESS_FREE)

static CUresult impl_CREATE(unsigned e, unsigned slot, P_CREATE)
{
    CALL_REAL(CREATE);
    CUresult r = real(A_CREATE);
    int device = DEVICE_CURRENT;
    if (prop && prop->location_type == MTI_CU_MEM_LOCATION_TYPE_DEVICE && prop->location_id >= 0)
        device = prop->location_id;
    record_alloc(r, r ? 0 : *handle, size, 0, MT_GPU_API_MEM_CREATE, MT_GPU_SPACE_PHYSICAL, device);
    return r;
}

DRIVER_FREE(RELEASE, handle, MT_GPU_SPACE_PHYSICAL, -1, MT_GPU_API_MEM_RELEASE)

static CUresult impl_MAP(unsigned e, unsigned slot, P_MAP)
{
    CALL_REAL(MAP);
    CUresult r = real(A_MAP);
    if (r != MTI_CUDA_SUCCESS)
        return r; /* a failed map allocates nothing: no OOM either */
    int device = DEVICE_CURRENT;
    struct amap_slot s;
    mti_self.guard++;
    if (amap_get(MT_GPU_SPACE_PHYSICAL, handle, false, &s))
        device = (int)s.device;
    mti_self.guard--;
    record_alloc(r, ptr, size, 0, MT_GPU_API_MEM_MAP, MT_GPU_SPACE_MAPPED, device);
    return r;
}

/* One cuMemUnmap may cover several maps laid end to end: each known map in
 * the range gets a FREE (up to UNMAP_MAX; the range's start always does). */
#define UNMAP_MAX 64

static CUresult impl_UNMAP(unsigned e, unsigned slot, P_UNMAP)
{
    CALL_REAL(UNMAP);
    struct pending_free f[UNMAP_MAX];
    unsigned n = 0;
    uint64_t a = ptr, end = ptr + size;
    do {
        struct amap_slot s;
        mti_self.guard++;
        bool known = amap_get(MT_GPU_SPACE_MAPPED, a, false, &s);
        mti_self.guard--;
        if (!known && n > 0)
            break;
        free_begin(&f[n++], a, MT_GPU_SPACE_MAPPED, -1);
        if (!known || s.size == 0)
            break;
        a += s.size;
    } while (a < end && n < UNMAP_MAX);
    CUresult r = real(A_UNMAP);
    for (unsigned i = 0; i < n; i++)
        free_end(&f[i], r, MT_GPU_API_MEM_UNMAP);
    return r;
}

/* ---- stream-ordered pools ---------------------------------------------------
 *
 * A pool reserves device memory inside the driver, out of sight of any
 * call: the bytes a stream-ordered allocator holds (what PyTorch's
 * cudaMallocAsync backend calls reserved) are read from the pool
 * (CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT) after each stream-ordered
 * allocation and free, and a change is written as a FREE of the old amount
 * and an ALLOC of the new one in space POOL (address: the pool). The pool
 * grows only inside an allocation, so its peak is seen exactly; it shrinks
 * when trimmed, which is seen at the next free. */

#define POOL_ATTR_RESERVED_MEM_CURRENT 5
#define POOLS 16

static _Atomic(void *) pool_get_of_device, pool_get_attribute;
static struct {
    uint64_t pool;     /* 0: free slot */
    uint64_t reserved; /* last written */
    uint32_t device;
} pools[POOLS];
static mti_lock_t pool_lock;

/* Reads pool's reserved bytes (pool 0: the current device's current pool)
 * and writes the change. Guard raised. */
static void pool_sample(uint64_t pool, uint32_t device, uint32_t stack)
{
    int (*of_device)(uint64_t *, int) = atomic_load_explicit(&pool_get_of_device, memory_order_acquire);
    int (*attr)(uint64_t, int, void *) = atomic_load_explicit(&pool_get_attribute, memory_order_acquire);
    if (!of_device || !attr) {
        of_device = (int (*)(uint64_t *, int))find_real("cuDeviceGetMemPool");
        attr = (int (*)(uint64_t, int, void *))find_real("cuMemPoolGetAttribute");
        if (!of_device || !attr)
            return;
        atomic_store_explicit(&pool_get_of_device, (void *)of_device, memory_order_release);
        atomic_store_explicit(&pool_get_attribute, (void *)attr, memory_order_release);
    }
    if (!pool && of_device(&pool, (int)device) != MTI_CUDA_SUCCESS)
        return;
    uint64_t reserved = 0;
    if (!pool || attr(pool, POOL_ATTR_RESERVED_MEM_CURRENT, &reserved) != MTI_CUDA_SUCCESS)
        return;
    mti_lock(&pool_lock);
    unsigned i = 0;
    while (i < POOLS && pools[i].pool && pools[i].pool != pool)
        i++;
    if (i < POOLS && pools[i].reserved != reserved) {
        if (pools[i].pool)
            mti_emit_gpu_free(mti_next_seq(), mti_now(), pool, pools[i].device, MT_GPU_API_MEM_POOL,
                              MT_GPU_SPACE_POOL);
        pools[i].pool = pool;
        pools[i].device = device;
        pools[i].reserved = reserved;
        if (reserved)
            mti_emit_gpu_alloc(mti_next_seq(), mti_now(), pool, reserved, device, 0, MT_GPU_API_MEM_POOL,
                               MT_GPU_SPACE_POOL, stack);
        else
            pools[i].pool = 0;
    }
    mti_unlock(&pool_lock);
}

/* After a stream-ordered call: the pool's reservation, when recording. */
static void pool_after(int r, uint64_t pool)
{
    if (r != MTI_CUDA_SUCCESS || !mti_recording())
        return;
    mti_self.guard++;
    pool_sample(pool, current_device(), mti_stack_capture());
    mti_self.guard--;
}

void mti_cuda_after_fork(void)
{
    atomic_store(&pool_lock, 0);
    memset(pools, 0, sizeof pools);
}

static CUresult impl_ALLOC_ASYNC(unsigned e, unsigned slot, P_ALLOC_ASYNC)
{
    CALL_REAL(ALLOC_ASYNC);
    CUresult r = real(A_ALLOC_ASYNC);
    record_alloc(r, r ? 0 : *dptr, size, (uintptr_t)stream, MT_GPU_API_MEM_ALLOC_ASYNC, MT_GPU_SPACE_DEVICE,
                 DEVICE_CURRENT);
    pool_after(r, 0);
    return r;
}

static CUresult impl_FREE_ASYNC(unsigned e, unsigned slot, P_FREE_ASYNC)
{
    CALL_REAL(FREE_ASYNC);
    if (!dptr)
        return real(A_FREE_ASYNC);
    struct pending_free f;
    free_begin(&f, dptr, MT_GPU_SPACE_DEVICE, MT_GPU_SPACE_MANAGED);
    CUresult r = real(A_FREE_ASYNC);
    free_end(&f, r, MT_GPU_API_MEM_FREE_ASYNC);
    pool_after(r, 0);
    return r;
}

static CUresult impl_ALLOC_POOL(unsigned e, unsigned slot, P_ALLOC_POOL)
{
    CALL_REAL(ALLOC_POOL);
    CUresult r = real(A_ALLOC_POOL);
    record_alloc(r, r ? 0 : *dptr, size, (uintptr_t)stream, MT_GPU_API_MEM_ALLOC_FROM_POOL_ASYNC,
                 MT_GPU_SPACE_DEVICE, DEVICE_CURRENT);
    pool_after(r, (uintptr_t)pool);
    return r;
}

/* Lookups wrap what they return whenever recording is switched on for the
 * process (a thread's guard says nothing about later calls). */
static inline bool wrapping(void)
{
    return atomic_load_explicit(&mti_state, memory_order_relaxed) == MTI_ON;
}

/* A resolver's answer: the pointer it found, wrapped when it is one of
 * ours and recording is on. */
static inline void wrap_result(int r, void **pfn, const char *symbol, int version, uint64_t flags)
{
    if (r == MTI_CUDA_SUCCESS && pfn && *pfn && symbol && wrapping())
        *pfn = mti_cuda_wrap_proc(symbol, *pfn, version, flags);
}

static CUresult impl_GET_PROC(unsigned e, unsigned slot, P_GET_PROC)
{
    REAL(GET_PROC);
    if (!real)
        return MTI_CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = real(A_GET_PROC);
    wrap_result(r, pfn, symbol, version, flags);
    return r;
}

static CUresult impl_GET_PROC_V2(unsigned e, unsigned slot, P_GET_PROC_V2)
{
    REAL(GET_PROC_V2);
    if (!real)
        return MTI_CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = real(A_GET_PROC_V2);
    wrap_result(r, pfn, symbol, version, flags);
    return r;
}

/* cudaGetDriverEntryPoint asks for the newest ABI the runtime knows. */
#define VERSION_NEWEST 0x7fffffff

static cudaError_t impl_ENTRY_POINT(unsigned e, unsigned slot, P_ENTRY_POINT)
{
    REAL(ENTRY_POINT);
    if (!real)
        return MTI_CUDA_ERROR_NOT_INITIALIZED;
    cudaError_t r = real(A_ENTRY_POINT);
    wrap_result(r, pfn, symbol, VERSION_NEWEST, flags);
    return r;
}

static cudaError_t impl_ENTRY_POINT_BY_VERSION(unsigned e, unsigned slot, P_ENTRY_POINT_BY_VERSION)
{
    REAL(ENTRY_POINT_BY_VERSION);
    if (!real)
        return MTI_CUDA_ERROR_NOT_INITIALIZED;
    cudaError_t r = real(A_ENTRY_POINT_BY_VERSION);
    wrap_result(r, pfn, symbol, (int)version, flags);
    return r;
}

/* The runtime allocators: see "Runtime over driver" above. */
#define RUNTIME_ALLOC(kind, addr_expr, size_expr, stream_expr, api, space)                         \
    static cudaError_t impl_##kind(unsigned e, unsigned slot, P_##kind)                            \
    {                                                                                              \
        CALL_REAL(kind);                                                                           \
        bool outer = runtime_enter();                                                              \
        cudaError_t r = real(A_##kind);                                                            \
        if (runtime_leave(outer))                                                                  \
            record_alloc(r, r ? 0 : (addr_expr), (size_expr), (stream_expr), api, space, DEVICE_CURRENT); \
        return r;                                                                                  \
    }

RUNTIME_ALLOC(CUDA_MALLOC, (uintptr_t)*p, size, 0, MT_GPU_API_CUDA_MALLOC, MT_GPU_SPACE_DEVICE)
RUNTIME_ALLOC(CUDA_MALLOC_ASYNC, (uintptr_t)*p, size, (uintptr_t)stream, MT_GPU_API_CUDA_MALLOC_ASYNC,
              MT_GPU_SPACE_DEVICE)
RUNTIME_ALLOC(CUDA_MALLOC_MANAGED, (uintptr_t)*p, size, 0, MT_GPU_API_CUDA_MALLOC_MANAGED, MT_GPU_SPACE_MANAGED)
RUNTIME_ALLOC(CUDA_MALLOC_HOST, (uintptr_t)*p, size, 0, MT_GPU_API_CUDA_MALLOC_HOST, MT_GPU_SPACE_HOST)
RUNTIME_ALLOC(CUDA_HOST_ALLOC, (uintptr_t)*p, size, 0, MT_GPU_API_CUDA_HOST_ALLOC, MT_GPU_SPACE_HOST)
RUNTIME_ALLOC(CUDA_MALLOC_PITCH, (uintptr_t)*p, r ? (uint64_t)width * height : (uint64_t)*pitch * height, 0,
              MT_GPU_API_CUDA_MALLOC_PITCH, MT_GPU_SPACE_DEVICE)

#define RUNTIME_FREE(kind, space, space2, api)                                                     \
    static cudaError_t impl_##kind(unsigned e, unsigned slot, P_##kind)                            \
    {                                                                                              \
        CALL_REAL(kind);                                                                           \
        if (!p)                                                                                    \
            return real(A_##kind);                                                                 \
        struct pending_free f;                                                                     \
        free_begin(&f, (uintptr_t)p, space, space2);                                               \
        bool outer = runtime_enter();                                                              \
        cudaError_t r = real(A_##kind);                                                            \
        if (runtime_leave(outer))                                                                  \
            free_end(&f, r, api);                                                                  \
        return r;                                                                                  \
    }

RUNTIME_FREE(CUDA_FREE, MT_GPU_SPACE_DEVICE, MT_GPU_SPACE_MANAGED, MT_GPU_API_CUDA_FREE)
RUNTIME_FREE(CUDA_FREE_ASYNC, MT_GPU_SPACE_DEVICE, MT_GPU_SPACE_MANAGED, MT_GPU_API_CUDA_FREE_ASYNC)
RUNTIME_FREE(CUDA_FREE_HOST, MT_GPU_SPACE_HOST, -1, MT_GPU_API_CUDA_FREE_HOST)

/* ---- the wrappers themselves ---------------------------------------------- */

#define X(name, kind)                                                                    \
    MT_EXPORT R_##kind name(P_##kind) { return impl_##kind(E_##name, 0, A_##kind); }     \
    static R_##kind name##_w1(P_##kind) { return impl_##kind(E_##name, 1, A_##kind); }   \
    static R_##kind name##_w2(P_##kind) { return impl_##kind(E_##name, 2, A_##kind); }   \
    static R_##kind name##_w3(P_##kind) { return impl_##kind(E_##name, 3, A_##kind); }
ALL_FUNCTIONS(X)
#undef X

static struct entry entries[E_COUNT] = {
#define X(name, kind) \
    [E_##name] = { #name, { (void *)name, (void *)name##_w1, (void *)name##_w2, (void *)name##_w3 }, { 0 } },
    ALL_FUNCTIONS(X)
#undef X
};

/* ---- handing out wrappers ------------------------------------------------- */

static int entry_of(const char *name)
{
    for (unsigned e = 0; e < E_COUNT; e++)
        if (!strcmp(entries[e].name, name))
            return (int)e;
    return -1;
}

static bool is_wrapper(void *fn)
{
    for (unsigned e = 0; e < E_COUNT; e++)
        for (unsigned s = 0; s < WRAPPERS; s++)
            if (entries[e].wrapper[s] == fn)
                return true;
    return false;
}

/* The wrapper of entry e bound to fn (binding a free one), or fn itself
 * when all are bound to other functions. */
static void *bind(unsigned e, void *fn)
{
    struct entry *en = &entries[e];
    for (unsigned s = 1; s < WRAPPERS; s++) {
        void *cur = atomic_load(&en->real[s]);
        if (!cur && atomic_compare_exchange_strong(&en->real[s], &cur, fn))
            return en->wrapper[s];
        if (cur == fn)
            return en->wrapper[s];
    }
    return fn;
}

void *mti_cuda_wrap_symbol(const char *name, void *fn)
{
    if (!fn || !name || name[0] != 'c' || name[1] != 'u' || !wrapping() || is_wrapper(fn))
        return fn;
    int e = entry_of(name);
    return e < 0 ? fn : bind((unsigned)e, fn);
}

/* Versioned names, as the driver's headers define them: from `since` on,
 * `base` means base + `suffix`; with per-thread default stream semantics
 * the stream-ordered functions are their _ptsz variants. */
static const struct {
    const char *base;
    int since;
    const char *suffix;
    bool ptsz;
} versions[] = {
    { "cuMemAlloc", 3020, "_v2", false },
    { "cuMemAllocPitch", 3020, "_v2", false },
    { "cuMemFree", 3020, "_v2", false },
    { "cuMemAllocHost", 3020, "_v2", false },
    { "cuMemHostRegister", 6050, "_v2", false },
    { "cuGetProcAddress", 12000, "_v2", true },
    { "cuMemAllocAsync", 0, "", true },
    { "cuMemFreeAsync", 0, "", true },
    { "cuMemAllocFromPoolAsync", 0, "", true },
};

/* True when `name` is `base` or one of its versioned forms (base_...). */
static bool same_function(const char *base, const char *name)
{
    size_t n = strlen(base);
    return !strncmp(base, name, n) && (name[n] == 0 || name[n] == '_');
}

void *mti_cuda_wrap_proc(const char *symbol, void *fn, int version, uint64_t flags)
{
    if (!fn || !symbol || symbol[0] != 'c' || symbol[1] != 'u' || is_wrapper(fn))
        return fn;
    /* The driver's own name for fn, when it is an exported symbol. */
    mti_self.guard++;
    Dl_info info;
    const char *exact = NULL;
    if (dladdr(fn, &info) && info.dli_saddr == fn && info.dli_sname && same_function(symbol, info.dli_sname))
        exact = info.dli_sname;
    mti_self.guard--;
    if (exact) {
        /* A versioned function we do not cover (cuMemAlloc, the 32-bit
         * one of before 3.2) stays unwrapped. */
        int e = entry_of(exact);
        return e < 0 ? fn : bind((unsigned)e, fn);
    }
    char name[96];
    size_t n = strlen(symbol);
    if (n + 12 > sizeof(name))
        return fn;
    memcpy(name, symbol, n + 1);
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        if (strcmp(versions[i].base, symbol))
            continue;
        if (version >= versions[i].since)
            strcat(name, versions[i].suffix);
        if (versions[i].ptsz && (flags & MTI_CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
            strcat(name, "_ptsz");
        break;
    }
    int e = entry_of(name);
    /* Only driver entries: a runtime name asked of the driver is not one. */
    return e < 0 || !strncmp(name, "cuda", 4) ? fn : bind((unsigned)e, fn);
}

/* ---- dlsym and dlvsym --------------------------------------------------------
 *
 * The exported entry points (assembly below) jump straight to the next
 * dlsym/dlvsym for RTLD_NEXT and RTLD_DEFAULT and call these for explicit
 * handles. */

__attribute__((visibility("hidden"), used)) void *mti_dlsym_handle(void *handle, const char *name)
{
    void *p = ((void *(*)(void *, const char *))mti_next_dlsym)(handle, name);
    return p ? mti_cuda_wrap_symbol(name, p) : p;
}

__attribute__((visibility("hidden"), used)) void *mti_dlvsym_handle(void *handle, const char *name,
                                                                    const char *version)
{
    void *p = ((void *(*)(void *, const char *, const char *))mti_next_dlvsym)(handle, name, version);
    return p ? mti_cuda_wrap_symbol(name, p) : p;
}

/* Looks `name` up in the dynamic symbol table of a loaded C library
 * (libc.so.6, or libdl.so.2 where dlsym lived before glibc 2.34). */
struct elf_find {
    const char *name;
    void *found;
};

static int elf_find_in(struct dl_phdr_info *info, size_t size, void *data)
{
    struct elf_find *f = data;
    const char *path = info->dlpi_name, *slash = strrchr(path, '/');
    const char *file = slash ? slash + 1 : path;
    if (strncmp(file, "libc.so", 7) && strncmp(file, "libdl.so", 8))
        return 0;
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!dyn)
        return 0;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const uint32_t *gnu_hash = NULL, *hash = NULL;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        /* The loader relocates these in place on most targets, not all. */
        ElfW(Addr) v = dyn->d_un.d_ptr;
        if (v < info->dlpi_addr)
            v += info->dlpi_addr;
        switch (dyn->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)v; break;
        case DT_STRTAB: strtab = (const char *)v; break;
        case DT_GNU_HASH: gnu_hash = (const uint32_t *)v; break;
        case DT_HASH: hash = (const uint32_t *)v; break;
        }
    }
    if (!symtab || !strtab)
        return 0;
    const ElfW(Sym) *hit = NULL;
    if (gnu_hash) {
        uint32_t h = 5381;
        for (const unsigned char *c = (const unsigned char *)f->name; *c; c++)
            h = h * 33 + *c;
        uint32_t nbuckets = gnu_hash[0], symoffset = gnu_hash[1], bloom_size = gnu_hash[2];
        const uint32_t *buckets = (const uint32_t *)((const ElfW(Addr) *)(gnu_hash + 4) + bloom_size);
        const uint32_t *chain = buckets + nbuckets;
        uint32_t i = buckets[h % nbuckets];
        if (i >= symoffset) {
            for (;; i++) {
                uint32_t c = chain[i - symoffset];
                const ElfW(Sym) *s = &symtab[i];
                if ((c | 1) == (h | 1) && s->st_shndx != SHN_UNDEF && !strcmp(strtab + s->st_name, f->name)) {
                    hit = s;
                    break;
                }
                if (c & 1)
                    break;
            }
        }
    } else if (hash) {
        for (uint32_t i = 0; i < hash[1]; i++) {
            const ElfW(Sym) *s = &symtab[i];
            if (s->st_shndx != SHN_UNDEF && !strcmp(strtab + s->st_name, f->name)) {
                hit = s;
                break;
            }
        }
    }
    if (!hit || ELF64_ST_TYPE(hit->st_info) != STT_FUNC)
        return 0;
    f->found = (void *)(info->dlpi_addr + hit->st_value);
    return 1;
}

static void *elf_find(const char *name)
{
    struct elf_find f = { name, NULL };
    dl_iterate_phdr(elf_find_in, &f);
    return f.found;
}

/* Sets mti_next_dlsym and mti_next_dlvsym (never to NULL). Idempotent; a
 * race only computes the same values twice. */
__attribute__((visibility("hidden"), used)) void mti_dl_bootstrap(void)
{
    if (__atomic_load_n(&mti_next_dlsym, __ATOMIC_ACQUIRE))
        return;
    void *(*libc_dlsym)(void *, const char *) = (void *(*)(void *, const char *))elf_find("dlsym");
    void *s = NULL, *v = NULL;
    if (libc_dlsym) {
        /* Called from here, RTLD_NEXT means "after libmemtrace.so". */
        s = libc_dlsym(RTLD_NEXT, "dlsym");
        v = libc_dlsym(RTLD_NEXT, "dlvsym");
        if (!s)
            s = (void *)libc_dlsym;
    }
    if (!v)
        v = elf_find("dlvsym");
    if (!s) {
        mti_log("cannot find the C library's dlsym; dlsym will fail");
        s = (void *)dlsym_missing;
    }
    if (!v)
        v = (void *)dlvsym_missing;
    __atomic_store_n(&mti_next_dlvsym, v, __ATOMIC_RELEASE);
    __atomic_store_n(&mti_next_dlsym, s, __ATOMIC_RELEASE);
}

/* dlsym(handle, name) and dlvsym(handle, name, version). The first three
 * argument registers survive the bootstrap call. */
#if defined(__x86_64__)
#define DL_ENTRY(fn, next, handle_fn)                              \
    "    .globl " #fn "\n"                                         \
    "    .type " #fn ", @function\n"                               \
    "    .p2align 4\n"                                             \
    #fn ":\n"                                                      \
    "    .cfi_startproc\n"                                         \
    "    movq " #next "(%rip), %rax\n"                             \
    "    testq %rax, %rax\n"                                       \
    "    jnz 1f\n"                                                 \
    "    pushq %rdi\n"                                             \
    "    .cfi_adjust_cfa_offset 8\n"                               \
    "    pushq %rsi\n"                                             \
    "    .cfi_adjust_cfa_offset 8\n"                               \
    "    pushq %rdx\n"                                             \
    "    .cfi_adjust_cfa_offset 8\n"                               \
    "    call mti_dl_bootstrap\n"                                  \
    "    popq %rdx\n"                                              \
    "    .cfi_adjust_cfa_offset -8\n"                              \
    "    popq %rsi\n"                                              \
    "    .cfi_adjust_cfa_offset -8\n"                              \
    "    popq %rdi\n"                                              \
    "    .cfi_adjust_cfa_offset -8\n"                              \
    "    movq " #next "(%rip), %rax\n"                             \
    "1:  cmpq $-1, %rdi\n"                                         \
    "    je 2f\n"                                                  \
    "    testq %rdi, %rdi\n"                                       \
    "    je 2f\n"                                                  \
    "    jmp " #handle_fn "\n"                                     \
    "2:  jmp *%rax\n"                                              \
    "    .cfi_endproc\n"                                           \
    "    .size " #fn ", .-" #fn "\n"
#elif defined(__aarch64__)
#define DL_ENTRY(fn, next, handle_fn)                              \
    "    .globl " #fn "\n"                                         \
    "    .type " #fn ", %function\n"                               \
    "    .p2align 4\n"                                             \
    #fn ":\n"                                                      \
    "    .cfi_startproc\n"                                         \
    "    adrp x16, " #next "\n"                                    \
    "    ldr x16, [x16, :lo12:" #next "]\n"                        \
    "    cbnz x16, 1f\n"                                           \
    "    stp x29, x30, [sp, -32]!\n"                               \
    "    .cfi_def_cfa_offset 32\n"                                 \
    "    .cfi_offset 29, -32\n"                                    \
    "    .cfi_offset 30, -24\n"                                    \
    "    mov x29, sp\n"                                            \
    "    stp x0, x1, [sp, 16]\n"                                   \
    "    str x2, [sp, 8]\n"                                        \
    "    bl mti_dl_bootstrap\n"                                    \
    "    ldr x2, [sp, 8]\n"                                        \
    "    ldp x0, x1, [sp, 16]\n"                                   \
    "    ldp x29, x30, [sp], 32\n"                                 \
    "    .cfi_restore 29\n"                                        \
    "    .cfi_restore 30\n"                                        \
    "    .cfi_def_cfa_offset 0\n"                                  \
    "    adrp x16, " #next "\n"                                    \
    "    ldr x16, [x16, :lo12:" #next "]\n"                        \
    "1:  cmn x0, #1\n"                                             \
    "    b.eq 2f\n"                                                \
    "    cbz x0, 2f\n"                                             \
    "    b " #handle_fn "\n"                                       \
    "2:  br x16\n"                                                 \
    "    .cfi_endproc\n"                                           \
    "    .size " #fn ", .-" #fn "\n"
#else
#error "dlsym entry points: no assembly for this architecture (x86-64 and aarch64 only)"
#endif

__asm__(".pushsection .text\n"
        DL_ENTRY(dlsym, mti_next_dlsym, mti_dlsym_handle)
        DL_ENTRY(dlvsym, mti_next_dlvsym, mti_dlvsym_handle)
        ".popsection\n");
