/* q8.c: block-wise int8 absmax quantization of fp32 (the 8-bit optimizer
 * state format), scalar reference and AVX2 / AVX-512 variants.
 *
 * Per block: absmax = max |x| found as the integer max of the sign-cleared
 * bit patterns (for non-negative IEEE floats integer order is float order,
 * Inf and NaN sorting above every finite value, so one compare also finds
 * non-finite blocks, and no variant depends on how max_ps treats NaN);
 * inv = fl(127 / absmax) once per block; code = rne(x * inv) by the
 * conversion instruction under the default rounding mode. Dequantization:
 * code * fl(absmax / 127). Every variant does these same operations, so
 * quantize and dequantize are bit-identical across variants. A block is two
 * passes (absmax, then codes); the second one reads the block from L1.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MTI_X86 1
#endif

#include "kernels-internal.h"

size_t mt_q8_blocks(size_t n, size_t block)
{
    return block ? (n + block - 1) / block : 0;
}

double mt_q8_bytes_per_value(size_t block)
{
    return block ? 1.0 + 4.0 / (double)block : 0.0;
}

double mt_q8_error_bound(double absmax)
{
    return absmax * (1.0 / 254.0 + 5.0 * 0x1p-24);
}

static inline uint32_t abs_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

/* From the block's largest |x| bit pattern: the stored absmax and the
 * multiplier, or 0 when the block is stored as all-zero codes. */
static inline int q8_scale(uint32_t mbits, float *absmax, float *inv)
{
    if (mbits >= 0x7f800000u) {
        *absmax = NAN;
        return 0;
    }
    float a;
    memcpy(&a, &mbits, sizeof a);
    if (a < MT_Q8_TINY) {
        *absmax = 0.0f;
        return 0;
    }
    *absmax = a;
    *inv = 127.0f / a;
    return 1;
}

static inline int8_t q8_code(float y)
{
    /* |y| <= 127 * (1 + 2^-23): rne never leaves [-127, 127]. */
    return (int8_t)lrintf(y);
}

void mti_q8_block_scalar(const float *x, size_t n, int8_t *codes, float *absmax)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = abs_bits(x[i]);
        m = u > m ? u : m;
    }
    float inv;
    if (!q8_scale(m, absmax, &inv)) {
        memset(codes, 0, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        codes[i] = q8_code(x[i] * inv);
}

static void dequant_block_scalar(const int8_t *codes, float absmax, size_t n, float *x, int nt)
{
    (void)nt;
    float s = absmax / 127.0f;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)codes[i] * s;
}

#ifdef MTI_X86
MTI_AVX2 void mti_q8_block_avx2(const float *x, size_t n, int8_t *codes, float *absmax)
{
    const __m256i mask = _mm256_set1_epi32(0x7fffffff);
    __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), mask));
        m1 = _mm256_max_epu32(m1, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 8)), mask));
    }
    for (; i + 8 <= n; i += 8)
        m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)), mask));
    m0 = _mm256_max_epu32(m0, m1);
    __m128i h = _mm_max_epu32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
    uint32_t m = (uint32_t)_mm_cvtsi128_si32(h);
    for (; i < n; i++) {
        uint32_t u = abs_bits(x[i]);
        m = u > m ? u : m;
    }
    float inv;
    if (!q8_scale(m, absmax, &inv)) {
        memset(codes, 0, n);
        return;
    }
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (i = 0; i + 32 <= n; i += 32) {
        __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
        __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vinv));
        __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vinv));
        __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vinv));
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
        _mm256_storeu_si256((__m256i *)(codes + i), _mm256_permutevar8x32_epi32(b, perm));
    }
    for (; i < n; i++)
        codes[i] = q8_code(x[i] * inv);
}

MTI_AVX2 static void dequant_block_avx2(const int8_t *codes, float absmax, size_t n, float *x,
                                        int nt)
{
    (void)nt;
    float s = absmax / 127.0f;
    const __m256 vs = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(codes + i));
        __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), vs));
        _mm256_storeu_ps(x + i + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), vs));
        _mm256_storeu_ps(x + i + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), vs));
        _mm256_storeu_ps(x + i + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), vs));
    }
    for (; i < n; i++)
        x[i] = (float)codes[i] * s;
}

/* nt: codes 16-byte aligned at every 16 values and the whole output large
 * (mti_stream_ok), so the codes go out as non-temporal stores: no read for
 * ownership of the code stream, a quarter more reading otherwise. */
MTI_AVX512 MTI_INLINE void q8_block_avx512(const float *x, size_t n, int8_t *codes, float *absmax,
                                           int nt)
{
    const __m512i mask = _mm512_set1_epi32(0x7fffffff);
    __m512i m0 = _mm512_setzero_si512(), m1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), mask));
        m1 = _mm512_max_epu32(m1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), mask));
    }
    if (i < n) {
        __mmask16 k = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_maskz_loadu_epi32(k, x + i), mask));
        i += 16;
        if (i < n) {
            k = (__mmask16)((1u << (n - i)) - 1);
            m1 = _mm512_max_epu32(m1, _mm512_and_si512(_mm512_maskz_loadu_epi32(k, x + i), mask));
        }
    }
    uint32_t m = _mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1));
    float inv;
    if (!q8_scale(m, absmax, &inv)) {
        memset(codes, 0, n);
        return;
    }
    const __m512 vinv = _mm512_set1_ps(inv);
    for (i = 0; i + 16 <= n; i += 16) {
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
        if (nt)
            _mm_stream_si128((__m128i *)(codes + i), _mm512_cvtsepi32_epi8(q));
        else
            _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtsepi32_epi8(q));
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vinv));
        _mm512_mask_cvtsepi32_storeu_epi8(codes + i, k, q);
    }
}

MTI_AVX512 void mti_q8_block_avx512(const float *x, size_t n, int8_t *codes, float *absmax)
{
    q8_block_avx512(x, n, codes, absmax, 0);
}

MTI_AVX512 static void q8_block_avx512_nt(const float *x, size_t n, int8_t *codes, float *absmax)
{
    q8_block_avx512(x, n, codes, absmax, 1);
}

/* nt: x is 64-byte aligned and the whole output large (mti_stream_ok), so
 * the full vectors go out as non-temporal stores. */
MTI_AVX512 static void dequant_block_avx512(const int8_t *codes, float absmax, size_t n, float *x,
                                            int nt)
{
    float s = absmax / 127.0f;
    const __m512 vs = _mm512_set1_ps(s);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(codes + i));
        __m512 a = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(c))), vs);
        __m512 b = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(c, 1))), vs);
        if (nt) {
            _mm512_stream_ps(x + i, a);
            _mm512_stream_ps(x + i + 16, b);
        } else {
            _mm512_storeu_ps(x + i, a);
            _mm512_storeu_ps(x + i + 16, b);
        }
    }
    for (; i < n; i += 16) {
        __mmask16 k = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m128i c = _mm_maskz_loadu_epi8(k, codes + i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)), vs));
    }
}
#else
void mti_q8_block_avx2(const float *x, size_t n, int8_t *codes, float *absmax)
{
    mti_q8_block_scalar(x, n, codes, absmax);
}
void mti_q8_block_avx512(const float *x, size_t n, int8_t *codes, float *absmax)
{
    mti_q8_block_scalar(x, n, codes, absmax);
}
#define dequant_block_avx2 dequant_block_scalar
#define dequant_block_avx512 dequant_block_scalar
#endif

typedef void (*q8_block_fn)(const float *, size_t, int8_t *, float *);
typedef void (*dq8_block_fn)(const int8_t *, float, size_t, float *, int);

struct q8_job {
    const float *x;
    int8_t *codes;
    float *absmax, *out;
    const int8_t *in;
    const float *scales;
    size_t n, block;
    q8_block_fn quant;
    dq8_block_fn dequant;
    int nt;
};

/* Blocks [b0, b1) of a quantize. */
static int q8_part(void *ctx, size_t b0, size_t b1)
{
    const struct q8_job *j = ctx;
    const float *x = j->x;
    size_t n = j->n < b1 * j->block ? j->n : b1 * j->block, block = j->block;
    size_t ahead = block < 1024 ? (1024 / block + 1) * block : block;
    for (size_t b = b0, i = b0 * block; i < n; b++, i += block) {
        /* A block is two passes, the second from L1: fetch the input at
         * least 4 KiB ahead meanwhile so that the first pass does not wait
         * (one block ahead is too short a distance for small blocks). */
        if (n - i > ahead + block)
            for (size_t k = i + ahead; k < i + ahead + block; k += 16)
                __builtin_prefetch(x + k, 0);
        j->quant(x + i, n - i < block ? n - i : block, j->codes + i, j->absmax + b);
    }
    if (j->nt)
        mti_store_fence();
    return 0;
}

int mt_q8_quantize(const float *x, size_t n, size_t block, int8_t *codes, float *absmax)
{
    static const q8_block_fn fns[MT_ISA_COUNT] = {
        mti_q8_block_scalar, mti_q8_block_avx2, mti_q8_block_avx512};
    if (!block)
        return -EINVAL;
    struct q8_job j = {.x = x, .codes = codes, .absmax = absmax, .n = n, .block = block,
                       .quant = fns[mti_isa()]};
#ifdef MTI_X86
    /* every block's codes start 16-byte aligned when codes does and
     * block % 16 == 0 */
    j.nt = mti_isa() == MT_ISA_AVX512 && block % 16 == 0 && ((uintptr_t)codes & 15) == 0 &&
           n * sizeof *x >= MTI_STREAM_BYTES;
    if (j.nt)
        j.quant = q8_block_avx512_nt;
#endif
    return mti_parallel(mt_q8_blocks(n, block), block * sizeof *x, q8_part, &j);
}

/* Blocks [b0, b1) of a dequantize. */
static int dq8_part(void *ctx, size_t b0, size_t b1)
{
    const struct q8_job *j = ctx;
    size_t n = j->n < b1 * j->block ? j->n : b1 * j->block, block = j->block;
    for (size_t b = b0, i = b0 * block; i < n; b++, i += block)
        j->dequant(j->in + i, j->scales[b], n - i < block ? n - i : block, j->out + i, j->nt);
    if (j->nt)
        mti_store_fence();
    return 0;
}

int mt_q8_dequantize(const int8_t *codes, const float *absmax, size_t n, size_t block, float *x)
{
    static const dq8_block_fn fns[MT_ISA_COUNT] = {
        dequant_block_scalar, dequant_block_avx2, dequant_block_avx512};
    if (!block)
        return -EINVAL;
    /* every block starts 64-byte aligned when x does and block % 16 == 0 */
    struct q8_job j = {.in = codes, .scales = absmax, .out = x, .n = n, .block = block,
                       .dequant = fns[mti_isa()],
                       .nt = mti_stream_ok(x, n * sizeof *x) && block % 16 == 0};
    return mti_parallel(mt_q8_blocks(n, block), block * sizeof *x, dq8_part, &j);
}
