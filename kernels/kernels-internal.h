/* kernels-internal.h: what the kernel files share and callers do not see.
 *
 * Variants: each kernel file defines one function per enum mt_isa and picks
 * it with mti_isa(). The AVX2 and AVX-512 ones carry
 * __attribute__((target(...))) so the library builds with default flags;
 * they are only called when mt_isa_supported() says so.
 */
#ifndef MT_KERNELS_INTERNAL_H
#define MT_KERNELS_INTERNAL_H

#include <stdint.h>

#include "mtkernels.h"

#define MTI_AVX2 __attribute__((target("avx2")))
#define MTI_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2")))
#define MTI_INLINE static inline __attribute__((always_inline))

enum mt_isa mti_isa(void);

/* The q8 block quantizer on one block (n <= block values), per variant;
 * shared by mt_q8_quantize and the AdamW step. */
void mti_q8_block_scalar(const float *x, size_t n, int8_t *codes, float *absmax);
void mti_q8_block_avx2(const float *x, size_t n, int8_t *codes, float *absmax);
void mti_q8_block_avx512(const float *x, size_t n, int8_t *codes, float *absmax);

/* Kernels that move at least this many bytes write their aligned outputs
 * with non-temporal stores in the AVX-512 code (the dequantizers' floats,
 * the quantizers' codes; memcpy does the same above a similar size): a
 * write stream that will not be read back soon then costs no read for
 * ownership, which on a server core halved what a write-bound kernel
 * moves. Smaller outputs stay in cache for the caller. */
#define MTI_STREAM_BYTES (4u << 20)

/* Whether a kernel moving that many bytes may stream its output at p
 * (64-byte aligned). */
static inline int mti_stream_ok(const void *p, size_t bytes)
{
    return bytes >= MTI_STREAM_BYTES && ((uintptr_t)p & 63) == 0;
}

/* Orders the non-temporal stores before whatever the caller does next;
 * called once by a kernel that made any. */
static inline void mti_store_fence(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#endif
}

/* One part of a kernel's work: units [begin, end). 0 or -errno. */
typedef int (*mti_part_fn)(void *ctx, size_t begin, size_t end);

/* A part moves at least this many bytes (parallel.c). */
#define MTI_PART_BYTES (1u << 20)

/* fn over [0, units) cut into up to mt_threads_current() contiguous parts
 * of at least MTI_PART_BYTES (unit_bytes: about what one unit reads), in
 * parallel: 0, or the first failing part's error. */
int mti_parallel(size_t units, size_t unit_bytes, mti_part_fn fn, void *ctx);
/* The same on up to `threads` threads. */
int mti_parallel_on(size_t threads, size_t units, size_t unit_bytes, mti_part_fn fn, void *ctx);

/* memcpy cut into whole units of `unit` bytes (unit > 0) over up to
 * `threads` threads, as mti_parallel_on cuts work. */
void mti_copy(void *dst, const void *src, size_t bytes, size_t unit, size_t threads);
/* memcpy on as many threads as the kernels use: their baseline. */
void mti_memcpy(void *dst, const void *src, size_t bytes);

/* Monotonic seconds. */
double mti_now(void);

#endif
