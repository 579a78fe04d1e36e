/* The stand-in CUDA driver (libcuda.so.1, cuda.c) and runtime
 * (libcudart.so.12, cudart.c) the tests build: the declarations their
 * users (tests/programs/cuda-*.c) need, with the ABI of the real headers on
 * 64-bit Linux, and the stand-in's rules.
 *
 * Rules of the stand-in driver. Two devices (0 and 1), 1 GiB each; device
 * addresses come from a range per device and are never reused; a request
 * that does not fit fails with CUDA_ERROR_OUT_OF_MEMORY (2); a request of
 * FAKE_CUDA_ODD_SIZE bytes fails with 999 (a result only the driver gives);
 * a free of an address it did not hand out fails with 1. cuMemCreate
 * handles count from FAKE_CUDA_HANDLE_BASE. The current device is per
 * thread (cuCtxCreate_v2 / cuCtxSetCurrent); without one, allocations use
 * device 0 and cuCtxGetDevice fails. cuGetProcAddress(_v2) follows the real
 * driver's versioning (cuMemAlloc from 3020 on is cuMemAlloc_v2, the
 * per-thread flag picks _ptsz) except that cuMemAllocManaged is handed out
 * as an internal function with no symbol of its own.
 */
#ifndef MEMTRACE_TESTS_FAKE_CUDA_H
#define MEMTRACE_TESTS_FAKE_CUDA_H

#include <stddef.h>
#include <stdint.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;
typedef void *CUstream;
typedef void *CUmemoryPool;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct {
    int type;
    int requestedHandleTypes;
    struct {
        int type; /* 1: device */
        int id;
    } location;
    void *win32HandleMetaData;
    unsigned char reserved[8];
} CUmemAllocationProp;
typedef int cudaError_t;
typedef void *cudaStream_t;

#define FAKE_CUDA_CAPACITY (1ull << 30)
#define FAKE_CUDA_ODD_SIZE 777u
#define FAKE_CUDA_ODD_RESULT 999
#define FAKE_CUDA_HANDLE_BASE 0x4a000ull
/* Device d's current stream-ordered pool; a pool's reserved bytes
 * (CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT) are all it ever handed out,
 * rounded up to 2 MiB. */
#define FAKE_CUDA_POOL_BASE 0x800ull
#define CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM 2

/* The stand-ins define these themselves (as aliases) and skip them. */
#ifndef FAKE_CUDA_NO_PROTOTYPES

CUresult cuInit(unsigned flags);
CUresult cuCtxCreate_v2(CUcontext *ctx, unsigned flags, CUdevice dev);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuCtxGetDevice(CUdevice *dev);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size);
CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height, unsigned elem);
CUresult cuMemFree_v2(CUdeviceptr dptr);
CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t size, unsigned flags);
CUresult cuMemHostAlloc(void **pp, size_t size, unsigned flags);
CUresult cuMemAllocHost_v2(void **pp, size_t size);
CUresult cuMemFreeHost(void *p);
CUresult cuMemHostRegister(void *p, size_t size, unsigned flags);
CUresult cuMemHostRegister_v2(void *p, size_t size, unsigned flags);
CUresult cuMemHostUnregister(void *p);
CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t align, CUdeviceptr addr, unsigned long long flags);
CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size);
CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                     unsigned long long flags);
CUresult cuMemRelease(CUmemGenericAllocationHandle handle);
CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags);
CUresult cuMemUnmap(CUdeviceptr ptr, size_t size);
CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream stream);
CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev);
CUresult cuMemPoolGetAttribute(CUmemoryPool pool, int attr, void *value);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream stream);
CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream);
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream);
CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream);
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream);
CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags);
CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags, int *status);

cudaError_t cudaMalloc(void **p, size_t size);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocAsync(void **p, size_t size, cudaStream_t stream);
cudaError_t cudaMallocAsync_ptsz(void **p, size_t size, cudaStream_t stream);
cudaError_t cudaFreeAsync(void *p, cudaStream_t stream);
cudaError_t cudaFreeAsync_ptsz(void *p, cudaStream_t stream);
cudaError_t cudaMallocManaged(void **p, size_t size, unsigned flags);
cudaError_t cudaMallocHost(void **p, size_t size);
cudaError_t cudaHostAlloc(void **p, size_t size, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMallocPitch(void **p, size_t *pitch, size_t width, size_t height);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDriverEntryPoint(const char *symbol, void **pfn, unsigned long long flags, int *status);
cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **pfn, unsigned version,
                                             unsigned long long flags, int *status);
#endif

#endif
