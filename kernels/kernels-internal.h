/* kernels-internal.h: what the kernel files share and callers do not see.
 *
 * Variants: each kernel file defines one function per enum mt_isa and picks
 * it with mti_isa(). The AVX2 and AVX-512 ones carry
 * __attribute__((target(...))) so the library builds with default flags;
 * they are only called when mt_isa_supported() says so.
 */
#ifndef MT_KERNELS_INTERNAL_H
#define MT_KERNELS_INTERNAL_H

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

/* Monotonic seconds. */
double mti_now(void);

#endif
