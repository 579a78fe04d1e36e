/* adamw8.c: an AdamW step whose two moments are stored as int8 codes with
 * one fp32 absmax per block (the q8.c format), fused per block.
 *
 * For each block: dequantize m and v, update the parameters with the fp32
 * moments, keep the new moments in a block-sized scratch (L1-resident for
 * the usual block sizes), then requantize them with the q8 block quantizer.
 * No full-size fp32 copy of the state exists at any time: the transient is
 * 2 * block floats. The element update is the fp32 reference's, operation
 * for operation (built with -ffp-contract=off), so scalar, AVX2 and AVX-512
 * agree bit for bit and p matches mt_adamw32_step given equal moments.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MTI_X86 1
#endif

#include "adamw-consts.h"
#include "kernels-internal.h"

MTI_INLINE void update1(const struct mt_adamw_consts *k, float *p, float g, float *m, float *v)
{
    float pp = *p * k->decay;
    float mm = k->b1 * *m + k->c1 * g;
    float vv = k->b2 * *v + k->c2 * (g * g);
    float denom = sqrtf(vv) / k->bc2_sqrt + k->eps;
    *p = pp - k->step_size * mm / denom;
    *m = mm;
    *v = vv;
}

void mt_adamw32_step(float *param, const float *grad, float *m, float *v, size_t n,
                     const struct mt_adamw_params *hp, long step)
{
    struct mt_adamw_consts k = mt_adamw_consts_of(hp, step);
    for (size_t i = 0; i < n; i++)
        update1(&k, &param[i], grad[i], &m[i], &v[i]);
}

/* One block: codes in, fp32 moments out to mt/vt (the scratch). */
static void block_scalar(const struct mt_adamw_consts *k, float *p, const float *g, const int8_t *mc,
                         float ma, const int8_t *vc, float va, size_t n, float *mt, float *vt)
{
    float sm = ma / 127.0f, sv = va / 127.0f;
    for (size_t i = 0; i < n; i++) {
        mt[i] = (float)mc[i] * sm;
        vt[i] = (float)vc[i] * sv;
        update1(k, &p[i], g[i], &mt[i], &vt[i]);
    }
}

#ifdef MTI_X86
MTI_AVX2 static void block_avx2(const struct mt_adamw_consts *k, float *p, const float *g,
                                const int8_t *mc, float ma, const int8_t *vc, float va,
                                size_t n, float *mt, float *vt)
{
    float sm = ma / 127.0f, sv = va / 127.0f;
    const __m256 vsm = _mm256_set1_ps(sm), vsv = _mm256_set1_ps(sv);
    const __m256 decay = _mm256_set1_ps(k->decay), b1 = _mm256_set1_ps(k->b1),
                 c1 = _mm256_set1_ps(k->c1), b2 = _mm256_set1_ps(k->b2),
                 c2 = _mm256_set1_ps(k->c2), ss = _mm256_set1_ps(k->step_size),
                 bc2 = _mm256_set1_ps(k->bc2_sqrt), eps = _mm256_set1_ps(k->eps);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 m = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                     _mm_loadl_epi64((const __m128i *)(mc + i)))), vsm);
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                     _mm_loadl_epi64((const __m128i *)(vc + i)))), vsv);
        __m256 gg = _mm256_loadu_ps(g + i);
        __m256 pp = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        m = _mm256_add_ps(_mm256_mul_ps(b1, m), _mm256_mul_ps(c1, gg));
        v = _mm256_add_ps(_mm256_mul_ps(b2, v), _mm256_mul_ps(c2, _mm256_mul_ps(gg, gg)));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), bc2), eps);
        pp = _mm256_sub_ps(pp, _mm256_div_ps(_mm256_mul_ps(ss, m), denom));
        _mm256_storeu_ps(p + i, pp);
        _mm256_storeu_ps(mt + i, m);
        _mm256_storeu_ps(vt + i, v);
    }
    for (; i < n; i++) {
        mt[i] = (float)mc[i] * sm;
        vt[i] = (float)vc[i] * sv;
        update1(k, &p[i], g[i], &mt[i], &vt[i]);
    }
}

MTI_AVX512 static void block_avx512(const struct mt_adamw_consts *k, float *p, const float *g,
                                    const int8_t *mc, float ma, const int8_t *vc, float va,
                                    size_t n, float *mt, float *vt)
{
    float sm = ma / 127.0f, sv = va / 127.0f;
    const __m512 vsm = _mm512_set1_ps(sm), vsv = _mm512_set1_ps(sv);
    const __m512 decay = _mm512_set1_ps(k->decay), b1 = _mm512_set1_ps(k->b1),
                 c1 = _mm512_set1_ps(k->c1), b2 = _mm512_set1_ps(k->b2),
                 c2 = _mm512_set1_ps(k->c2), ss = _mm512_set1_ps(k->step_size),
                 bc2 = _mm512_set1_ps(k->bc2_sqrt), eps = _mm512_set1_ps(k->eps);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 km = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m512 m = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(km, mc + i))), vsm);
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(km, vc + i))), vsv);
        __m512 gg = _mm512_maskz_loadu_ps(km, g + i);
        __m512 pp = _mm512_mul_ps(_mm512_maskz_loadu_ps(km, p + i), decay);
        m = _mm512_add_ps(_mm512_mul_ps(b1, m), _mm512_mul_ps(c1, gg));
        v = _mm512_add_ps(_mm512_mul_ps(b2, v), _mm512_mul_ps(c2, _mm512_mul_ps(gg, gg)));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), bc2), eps);
        pp = _mm512_sub_ps(pp, _mm512_div_ps(_mm512_mul_ps(ss, m), denom));
        _mm512_mask_storeu_ps(p + i, km, pp);
        _mm512_mask_storeu_ps(mt + i, km, m);
        _mm512_mask_storeu_ps(vt + i, km, v);
    }
}
#else
#define block_avx2 block_scalar
#define block_avx512 block_scalar
#endif

typedef void (*block_fn)(const struct mt_adamw_consts *, float *, const float *, const int8_t *, float,
                         const int8_t *, float, size_t, float *, float *);
typedef void (*q8_block_fn)(const float *, size_t, int8_t *, float *);

struct adamw8_job {
    float *param;
    const float *grad;
    int8_t *m, *v;
    float *m_absmax, *v_absmax;
    size_t n, block;
    struct mt_adamw_consts k;
    block_fn f;
    q8_block_fn q;
};

/* Blocks [b0, b1) of a step, with their own scratch. */
static int adamw8_part(void *ctx, size_t b0, size_t b1)
{
    const struct adamw8_job *j = ctx;
    size_t n = j->n < b1 * j->block ? j->n : b1 * j->block, block = j->block;
    size_t scratch_n = block < j->n ? block : j->n;
    float *scratch = malloc(2 * (scratch_n ? scratch_n : 1) * sizeof *scratch);
    if (!scratch)
        return -ENOMEM;
    float *param = j->param, *mt = scratch, *vt = scratch + scratch_n;
    const float *grad = j->grad;
    int8_t *m = j->m, *v = j->v;
    for (size_t b = b0, i = b0 * block; i < n; b++, i += block) {
        size_t len = n - i < block ? n - i : block;
        /* The step is compute-bound per block: fetch the next block's
         * parameters, gradients and codes meanwhile (a cache line each). */
        if (n - i > 2 * block)
            for (size_t k = i + block; k < i + 2 * block; k += 16) {
                __builtin_prefetch(param + k, 1);
                __builtin_prefetch(grad + k, 0);
                if ((k - i) % 64 == 0) {
                    __builtin_prefetch(m + k, 1);
                    __builtin_prefetch(v + k, 1);
                }
            }
        j->f(&j->k, param + i, grad + i, m + i, j->m_absmax[b], v + i, j->v_absmax[b], len, mt, vt);
        j->q(mt, len, m + i, &j->m_absmax[b]);
        j->q(vt, len, v + i, &j->v_absmax[b]);
    }
    free(scratch);
    return 0;
}

int mt_adamw8_step(float *param, const float *grad, int8_t *m, float *m_absmax, int8_t *v,
                   float *v_absmax, size_t n, size_t block, const struct mt_adamw_params *hp,
                   long step)
{
    static const block_fn fns[MT_ISA_COUNT] = {block_scalar, block_avx2, block_avx512};
    static const q8_block_fn qfns[MT_ISA_COUNT] = {
        mti_q8_block_scalar, mti_q8_block_avx2, mti_q8_block_avx512};
    if (!block || step < 1)
        return -EINVAL;
    enum mt_isa isa = mti_isa();
    struct adamw8_job j = {param, grad, m, v, m_absmax, v_absmax, n, block,
                           mt_adamw_consts_of(hp, step), fns[isa], qfns[isa]};
    /* a block reads 10 bytes a value: parameter, gradient, two codes */
    return mti_parallel(mt_q8_blocks(n, block), block * 10, adamw8_part, &j);
}
