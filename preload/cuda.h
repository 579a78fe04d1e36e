/* CUDA device memory: the driver and runtime entry points that allocate.
 *
 * preload/cuda.c records GPU ALLOC, FREE and OOM records (see the format
 * header) for every allocation a program makes through the CUDA driver
 * (libcuda.so.1) or the runtime (libcudart.so), however it reached the
 * function: bound by the dynamic linker to one of libmemtrace.so's exports,
 * looked up with dlsym/dlvsym, or handed out by cuGetProcAddress(_v2) or
 * cudaGetDriverEntryPoint(ByVersion). docs/RECORDING.md ("GPU memory") has
 * the rules; this header has the types and the two lookup hooks.
 *
 * No CUDA header is used: the handful of driver and runtime types below
 * are declared here with the ABI the CUDA headers give them on 64-bit
 * Linux, so libmemtrace.so builds and runs where CUDA is absent. Nothing
 * here loads a CUDA library: the driver is only ever opened with
 * RTLD_NOLOAD, i.e. when the program loaded it already.
 *
 * Thread safety: everything may be called from any thread.
 */
#ifndef MEMTRACE_PRELOAD_CUDA_H
#define MEMTRACE_PRELOAD_CUDA_H

#include <stddef.h>
#include <stdint.h>

typedef int CUresult;                 /* enum cudaError_enum: 0 success */
typedef int CUdevice;
typedef unsigned long long CUdeviceptr; /* CUdeviceptr_v2 on 64-bit */
typedef void *CUstream;
typedef void *CUmemoryPool;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef uint64_t cuuint64_t;
typedef int CUdriverProcAddressQueryResult;
typedef int cudaError_t;              /* enum cudaError: 0 success */
typedef void *cudaStream_t;
typedef int cudaDriverEntryPointQueryResult;

/* The leading members of CUmemAllocationProp, all that cuMemCreate's
 * wrapper reads (the device the memory lives on). */
struct mti_cu_mem_allocation_prop {
    int type;                   /* CUmemAllocationType */
    int requested_handle_types; /* CUmemAllocationHandleType */
    int location_type;          /* CUmemLocationType: 1 = device */
    int location_id;            /* the device ordinal */
};

#define MTI_CUDA_SUCCESS 0
#define MTI_CUDA_ERROR_OUT_OF_MEMORY 2        /* and cudaErrorMemoryAllocation */
#define MTI_CUDA_ERROR_NOT_INITIALIZED 3      /* and cudaErrorInitializationError */
#define MTI_CU_MEM_LOCATION_TYPE_DEVICE 1
#define MTI_CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM 2 /* and cudaEnablePerThreadDefaultStream */

/* The dlsym/dlvsym hook: fn is what the real dlsym returned for name (not
 * NULL). Returns fn, or the wrapper of libmemtrace.so that records and then
 * calls fn, when name is one of the covered functions (by its exact,
 * versioned name) and recording is on. Never fails, never touches dlerror. */
void *mti_cuda_wrap_symbol(const char *name, void *fn);

/* The cuGetProcAddress hook: fn is what the driver returned for the base
 * name `symbol` at cudaVersion `version` with `flags`. Works out which
 * versioned function fn is (dladdr, else the driver's documented versioning
 * rules) and returns its wrapper, or fn when that function is not covered
 * or its signature is not certain. */
void *mti_cuda_wrap_proc(const char *symbol, void *fn, int version, uint64_t flags);

/* In a forked child: forget the pools' last reserved amounts (the child's
 * trace starts afresh). */
void mti_cuda_after_fork(void);

#endif
