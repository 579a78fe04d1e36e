/* kv.c: KV-cache quantization, KIVI-style: keys per channel, values per
 * token, 2, 4 or 8 bits, an fp16 zero point and scale per group.
 *
 * The arithmetic of a group (kv-group.h) is shared with the CUDA kernels.
 * The generic loops are written once, as always-inline bodies, and compiled
 * three times: plain (the scalar reference), and inside functions carrying
 * target("avx2") and target("avx512f,...") where the compiler vectorizes
 * them. Without -ffast-math and with -ffp-contract=off the vectorizer may
 * not reorder or fuse any floating-point operation, so they give identical
 * bits. min and max are order-independent (order_key), so they vectorize
 * as integer reductions.
 *
 * The AVX-512 variant is hand-written for the usual shapes (keys with
 * channels % 16 == 0, values with group % 16 == 0; the generic body
 * otherwise): the group parameters 16 groups at a time, with vcvtps2ph
 * (round to nearest even) and vcvtph2ps for the fp16 conversions, which
 * equal mt_f16_rne and mt_f16_to_f32 on every finite float (checked
 * exhaustively over all 2^32 bit patterns), the same subtraction, a
 * quotient by the group's reciprocal and one fused residual step, which
 * rounds to the same integer as the division (quotient16), the conversion
 * (rne under the default rounding mode, as rintf) and integer clamp per
 * value, and the packing of 16 codes at a time with byte
 * multiply-adds. Keys are taken 128 channels x G rows at a time (in L1
 * between the min/max and the codes pass, min/max in registers, the tile
 * two on prefetched), and 64 codes are packed per saturating pack where a
 * tile is a multiple of 64 channels. Dequantization is one shuffle, variable shift and mask per
 * 16 codes, then the same multiply and add.
 *
 * Layout: each row (token) of codes is channels * bits / 8 bytes, codes
 * packed little-endian within a byte (code j of a byte at bit j * bits).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "kernels-internal.h"
#include "kv-group.h"

uint16_t mt_f16_from_f32(float f)
{
    return mt_f16_rne(f);
}

float mt_f32_from_f16(uint16_t h)
{
    return mt_f16_to_f32(h);
}

double mt_kv_error_bound(double zero, double scale, unsigned bits)
{
    double levels = (double)((1u << bits) - 1u);
    return scale / 2.0 + 0x1p-21 * (__builtin_fabs(zero) + scale * levels);
}

int mt_kv_layout(enum mt_kv_kind kind, size_t tokens, size_t channels, unsigned bits,
                 size_t group, struct mt_kv_layout *ret)
{
    if ((bits != 2 && bits != 4 && bits != 8) || !group || !channels || (channels * bits) % 8)
        return -EINVAL;
    if (kind == MT_KV_KEYS ? tokens % group : channels % group)
        return -EINVAL;
    if (kind != MT_KV_KEYS && kind != MT_KV_VALUES)
        return -EINVAL;
    size_t groups = tokens * channels / group;
    ret->code_bytes = tokens * channels * bits / 8;
    ret->groups = groups;
    ret->meta_bytes = groups * 2 * sizeof(uint16_t);
    ret->bits_per_value = (double)bits + 32.0 / (double)group;
    return 0;
}

MTI_INLINE void pack_row(const uint8_t *c, size_t n, unsigned bits, uint8_t *out)
{
    if (bits == 8) {
        memcpy(out, c, n);
    } else if (bits == 4) {
        for (size_t j = 0; j < n / 2; j++)
            out[j] = (uint8_t)(c[2 * j] | c[2 * j + 1] << 4);
    } else {
        for (size_t j = 0; j < n / 4; j++)
            out[j] = (uint8_t)(c[4 * j] | c[4 * j + 1] << 2 | c[4 * j + 2] << 4 | c[4 * j + 3] << 6);
    }
}

MTI_INLINE void unpack_row(const uint8_t *in, size_t n, unsigned bits, uint8_t *c)
{
    if (bits == 8) {
        memcpy(c, in, n);
    } else if (bits == 4) {
        for (size_t j = 0; j < n / 2; j++) {
            c[2 * j] = in[j] & 15;
            c[2 * j + 1] = in[j] >> 4;
        }
    } else {
        for (size_t j = 0; j < n / 4; j++) {
            c[4 * j] = in[j] & 3;
            c[4 * j + 1] = (in[j] >> 2) & 3;
            c[4 * j + 2] = (in[j] >> 4) & 3;
            c[4 * j + 3] = in[j] >> 6;
        }
    }
}

/* Nonzero when x[0..n) holds an Inf or NaN. */
MTI_INLINE int any_nonfinite(const float *x, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad != 0;
}

/* d: the divisors (mt_kv_divisor of each scale). */
MTI_INLINE void row_codes(const float *x, const float *z, const float *d, size_t n, int levels,
                          uint8_t *c)
{
    for (size_t i = 0; i < n; i++)
        c[i] = (uint8_t)mt_kv_code(x[i], z[i], d[i], levels);
}

/* min and max are taken in the total order of the key below, where -0 < +0
 * (otherwise the integer order of the float values): then neither depends
 * on the order of the comparisons, and the AVX-512 tree reductions give the
 * bits of these sequential loops. The key is its own inverse. */
MTI_INLINE int32_t order_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (int32_t)(u ^ ((uint32_t)((int32_t)u >> 31) >> 1));
}

MTI_INLINE float of_key(int32_t k)
{
    uint32_t u = (uint32_t)k ^ ((uint32_t)(k >> 31) >> 1);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

MTI_INLINE void minmax(const float *x, size_t n, float *ret_mn, float *ret_mx)
{
    int32_t mn = order_key(x[0]), mx = mn;
    for (size_t i = 1; i < n; i++) {
        int32_t k = order_key(x[i]);
        mn = k < mn ? k : mn;
        mx = k > mx ? k : mx;
    }
    *ret_mn = of_key(mn);
    *ret_mx = of_key(mx);
}

/* Scratch: z, s, mn, mx (channels floats each) and one row of codes. */
MTI_INLINE int kvq_body(enum mt_kv_kind kind, const float *x, size_t T, size_t C, unsigned bits,
                        size_t G, uint8_t *codes, uint16_t *meta, float *ws, uint8_t *rc)
{
    float levels = (float)((1u << bits) - 1u);
    size_t row_bytes = C * bits / 8;
    float *z = ws, *s = ws + C, *mn = ws + 2 * C, *mx = ws + 3 * C;
    if (kind == MT_KV_KEYS) {
        for (size_t tg = 0; tg < T / G; tg++) {
            const float *x0 = x + tg * G * C;
            if (any_nonfinite(x0, G * C))
                return -EDOM;
            int32_t *kn = (int32_t *)mn, *kx = (int32_t *)mx;
            for (size_t c = 0; c < C; c++)
                kn[c] = kx[c] = order_key(x0[c]);
            for (size_t t = 1; t < G; t++)
                for (size_t c = 0; c < C; c++) {
                    int32_t k = order_key(x0[t * C + c]);
                    kn[c] = k < kn[c] ? k : kn[c];
                    kx[c] = k > kx[c] ? k : kx[c];
                }
            for (size_t c = 0; c < C; c++) {
                mn[c] = of_key(kn[c]);
                mx[c] = of_key(kx[c]);
            }
            uint16_t *mt = meta + 2 * tg * C;
            for (size_t c = 0; c < C; c++)
                if (mt_kv_group_params(mn[c], mx[c], (unsigned)levels, &mt[2 * c], &mt[2 * c + 1],
                                       &z[c], &s[c]))
                    return -ERANGE;
            for (size_t c = 0; c < C; c++)
                s[c] = mt_kv_divisor(s[c]);
            for (size_t t = 0; t < G; t++) {
                row_codes(x0 + t * C, z, s, C, (int)levels, rc);
                pack_row(rc, C, bits, codes + (tg * G + t) * row_bytes);
            }
        }
    } else {
        size_t ng = C / G;
        for (size_t t = 0; t < T; t++) {
            const float *xr = x + t * C;
            if (any_nonfinite(xr, C))
                return -EDOM;
            uint16_t *mt = meta + 2 * t * ng;
            for (size_t g = 0; g < ng; g++) {
                float lo, hi, zg, sg;
                minmax(xr + g * G, G, &lo, &hi);
                if (mt_kv_group_params(lo, hi, (unsigned)levels, &mt[2 * g], &mt[2 * g + 1], &zg, &sg))
                    return -ERANGE;
                for (size_t i = 0; i < G; i++) {
                    z[g * G + i] = zg;
                    s[g * G + i] = mt_kv_divisor(sg);
                }
            }
            row_codes(xr, z, s, C, (int)levels, rc);
            pack_row(rc, C, bits, codes + t * row_bytes);
        }
    }
    return 0;
}

MTI_INLINE void kvd_body(enum mt_kv_kind kind, const uint8_t *codes, const uint16_t *meta, size_t T,
                         size_t C, unsigned bits, size_t G, float *x, float *ws, uint8_t *rc)
{
    size_t row_bytes = C * bits / 8;
    float *z = ws, *s = ws + C;
    for (size_t t = 0; t < T; t++) {
        if (kind == MT_KV_KEYS) {
            if (t % G == 0) {
                const uint16_t *mt = meta + 2 * (t / G) * C;
                for (size_t c = 0; c < C; c++) {
                    z[c] = mt_f16_to_f32(mt[2 * c]);
                    s[c] = mt_f16_to_f32(mt[2 * c + 1]);
                }
            }
        } else {
            const uint16_t *mt = meta + 2 * t * (C / G);
            for (size_t g = 0; g < C / G; g++) {
                float zg = mt_f16_to_f32(mt[2 * g]), sg = mt_f16_to_f32(mt[2 * g + 1]);
                for (size_t i = 0; i < G; i++) {
                    z[g * G + i] = zg;
                    s[g * G + i] = sg;
                }
            }
        }
        unpack_row(codes + t * row_bytes, C, bits, rc);
        float *xr = x + t * C;
        for (size_t c = 0; c < C; c++)
            xr[c] = (float)rc[c] * s[c] + z[c];
    }
}

#define KV_VARIANTS(attr, suffix)                                                                 \
    attr static int kvq_##suffix(enum mt_kv_kind kind, const float *x, size_t T, size_t C,        \
                                 unsigned bits, size_t G, uint8_t *codes, uint16_t *meta,         \
                                 float *ws, uint8_t *rc, size_t call_bytes)                       \
    {                                                                                             \
        (void)call_bytes;                                                                         \
        return kvq_body(kind, x, T, C, bits, G, codes, meta, ws, rc);                             \
    }                                                                                             \
    attr static void kvd_##suffix(enum mt_kv_kind kind, const uint8_t *codes,                     \
                                  const uint16_t *meta, size_t T, size_t C, unsigned bits,        \
                                  size_t G, float *x, float *ws, uint8_t *rc, size_t call_bytes)  \
    {                                                                                             \
        (void)call_bytes;                                                                         \
        kvd_body(kind, codes, meta, T, C, bits, G, x, ws, rc);                                    \
    }

KV_VARIANTS(, scalar)
#if defined(__x86_64__) || defined(__i386__)
KV_VARIANTS(MTI_AVX2, avx2)
KV_VARIANTS(MTI_AVX512, avx512g)

/* order_key of 16 lanes (also its inverse). */
MTI_AVX512 MTI_INLINE __m512i key16(__m512i u)
{
    return _mm512_xor_si512(u, _mm512_srli_epi32(_mm512_srai_epi32(u, 31), 1));
}

/* Lanes holding an Inf or NaN. */
/* Lane j of the result: the min (max when is_max) of the 16 lanes of v[j].
 * Four rounds, each halving the vectors and the lanes a group holds (128-
 * bit blocks, then 64-bit pairs, then dwords), and one permutation that
 * puts group j back in lane j. */
MTI_AVX512 MTI_INLINE __m512i reduce16(__m512i *v, int is_max)
{
#define OP(a, b) (is_max ? _mm512_max_epi32((a), (b)) : _mm512_min_epi32((a), (b)))
    __m512i w[8], x[4], y[2];
    for (int i = 0; i < 8; i++) /* lanes 0-7: v[2i], 8-15: v[2i + 1] */
        w[i] = OP(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0x44),
                  _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0xee));
    for (int i = 0; i < 4; i++) /* block k: group 4i + k */
        x[i] = OP(_mm512_shuffle_i32x4(w[2 * i], w[2 * i + 1], 0x88),
                  _mm512_shuffle_i32x4(w[2 * i], w[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; i++) /* block k: groups 8i + k, 8i + 4 + k, two lanes each */
        y[i] = OP(_mm512_unpacklo_epi64(x[2 * i], x[2 * i + 1]),
                  _mm512_unpackhi_epi64(x[2 * i], x[2 * i + 1]));
    __m512 p0 = _mm512_castsi512_ps(y[0]), p1 = _mm512_castsi512_ps(y[1]);
    __m512i r = OP(_mm512_castps_si512(_mm512_shuffle_ps(p0, p1, 0x88)),
                   _mm512_castps_si512(_mm512_shuffle_ps(p0, p1, 0xdd)));
#undef OP
    /* lane 4k + j holds group k + 4j */
    return _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

MTI_AVX512 MTI_INLINE __mmask16 nonfinite16(__m512i u)
{
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    return _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, e), e);
}

/* mt_f16_down / mt_f16_up of 16 halves in 32-bit lanes. */
MTI_AVX512 MTI_INLINE __m512i f16_step16(__m512i h, int up)
{
    const __m512i one = _mm512_set1_epi32(1);
    __mmask16 zero = _mm512_testn_epi32_mask(h, _mm512_set1_epi32(0x7fff));
    __mmask16 neg = _mm512_test_epi32_mask(h, _mm512_set1_epi32(0x8000));
    __m512i inc = _mm512_add_epi32(h, one), dec = _mm512_sub_epi32(h, one);
    __m512i r = up ? _mm512_mask_blend_epi32(neg, inc, dec) : _mm512_mask_blend_epi32(neg, dec, inc);
    return _mm512_mask_mov_epi32(r, zero, _mm512_set1_epi32(up ? 0x0001 : 0x8001));
}

/* mt_kv_group_params of the groups in the lanes of km: (zero, scale) pairs
 * to meta, z, mt_kv_divisor(s) and its reciprocal (rounded, as 1.0f / d)
 * to zo, dout and rout. 0, or -1 when one of them overflows fp16. */
MTI_AVX512 MTI_INLINE int params16(__m512 mn, __m512 mx, __m512 levels, __mmask16 km,
                                   uint16_t *meta, float *zo, float *dout, float *rout)
{
    const int rn = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m512i inf = _mm512_set1_epi32(0x7c00);
    __m512i zh = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(mn, rn));
    __mmask16 fix = _mm512_cmp_ps_mask(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(zh)), mn, _CMP_GT_OQ);
    zh = _mm512_mask_mov_epi32(zh, fix, f16_step16(zh, 0));
    __m512 z = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(zh));
    __m512 want = _mm512_div_ps(_mm512_sub_ps(mx, z), levels);
    __m512i sh = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(want, rn));
    fix = _mm512_cmp_ps_mask(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(sh)), want, _CMP_LT_OQ);
    sh = _mm512_mask_mov_epi32(sh, fix, f16_step16(sh, 1));
    __m512 sc = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(sh));
    __mmask16 bad = _mm512_cmpeq_epi32_mask(_mm512_and_si512(zh, inf), inf) |
                    _mm512_cmpeq_epi32_mask(_mm512_and_si512(sh, inf), inf);
    if (bad & km)
        return -1;
    _mm512_mask_storeu_epi32(meta, km, _mm512_or_si512(zh, _mm512_slli_epi32(sh, 16)));
    _mm512_mask_storeu_ps(zo, km, z);
    __mmask16 pos = _mm512_cmp_ps_mask(sc, _mm512_setzero_ps(), _CMP_GT_OQ);
    __m512 d = _mm512_mask_blend_ps(pos, _mm512_set1_ps(1.0f), sc);
    _mm512_mask_storeu_ps(dout, km, d);
    _mm512_mask_storeu_ps(rout, km, _mm512_div_ps(_mm512_set1_ps(1.0f), d));
    return 0;
}

/* The quotient (x - z) / d without a division, r = 1.0f / d: q0 = a * r,
 * then one residual step by fused multiply-adds (Markstein). It need not
 * be the correctly rounded quotient everywhere, only round to the same
 * integer as it: kernels/kv_division_free_code_matches_the_division checks
 * that at every tie of every fp16 scale, +-4 ulps (73M cases), and the CUDA
 * self-test likewise on the device. Measured on one Xeon core (512 MiB):
 * keys quantize 9-12 -> 10-14 GB/s, values within noise; no change on an
 * EPYC, whose division is faster. */
MTI_AVX512 MTI_INLINE __m512 quotient16(__m512 x, __m512 z, __m512 d, __m512 r)
{
    __m512 a = _mm512_sub_ps(x, z), q0 = _mm512_mul_ps(a, r);
    return _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, d, a), r, q0);
}

/* mt_kv_code of 16 values. */
MTI_AVX512 MTI_INLINE __m512i codes16(__m512 x, __m512 z, __m512 d, __m512 r, __m512i lv)
{
    __m512i q = _mm512_cvtps_epi32(quotient16(x, z, d, r));
    return _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), lv);
}

/* 16 codes (32-bit lanes) packed to 2 * bits bytes at out. */
MTI_AVX512 MTI_INLINE void pack16(__m512i q, unsigned bits, uint8_t *out)
{
    __m128i b = _mm512_cvtepi32_epi8(q);
    if (bits == 8) {
        _mm_storeu_si128((__m128i *)out, b);
    } else if (bits == 4) {
        __m128i w = _mm_maddubs_epi16(b, _mm_set1_epi16(0x1001)); /* c0 + 16 c1 */
        _mm_storel_epi64((__m128i *)out, _mm_cvtepi16_epi8(w));
    } else {
        __m128i w = _mm_maddubs_epi16(b, _mm_set1_epi16(0x0401)); /* c0 + 4 c1 */
        __m128i d = _mm_madd_epi16(w, _mm_set1_epi32(0x00100001));  /* w0 + 16 w1 */
        uint32_t v = (uint32_t)_mm_cvtsi128_si32(_mm_cvtepi32_epi8(d));
        memcpy(out, &v, sizeof v);
    }
}

/* mt_kv_code of 64 values (4 vectors, zero points z[k] and divisors d[k])
 * packed to 8 * bits bytes at out: the saturating packs clamp to [0, 255]
 * as the integer clamp does (for 2 and 4 bits a byte min then clamps to
 * the levels), and one dword permutation puts the 64 codes back in order. */
MTI_AVX512 MTI_INLINE void codes64(const float *x, const __m512 *z, const __m512 *d,
                                   const __m512 *r, unsigned bits, uint8_t *out, int nt)
{
    __m512i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm512_cvtps_epi32(quotient16(_mm512_loadu_ps(x + 16 * k), z[k], d[k], r[k]));
    __m512i b = _mm512_packus_epi16(_mm512_packus_epi32(q[0], q[1]), _mm512_packus_epi32(q[2], q[3]));
    /* dword 4i + k holds codes 16k + 4i .. 16k + 4i + 3 */
    b = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), b);
    if (bits == 8) {
        if (nt)
            _mm512_stream_si512((__m512i *)out, b);
        else
            _mm512_storeu_si512(out, b);
    } else if (bits == 4) {
        b = _mm512_min_epu8(b, _mm512_set1_epi8(15));
        __m512i w = _mm512_maddubs_epi16(b, _mm512_set1_epi16(0x1001)); /* c0 + 16 c1 */
        if (nt)
            _mm256_stream_si256((__m256i *)out, _mm512_cvtepi16_epi8(w));
        else
            _mm256_storeu_si256((__m256i *)out, _mm512_cvtepi16_epi8(w));
    } else {
        /* never streamed (16-byte pieces: see KV_VALUES_STREAM_BITS) */
        b = _mm512_min_epu8(b, _mm512_set1_epi8(3));
        __m512i w = _mm512_maddubs_epi16(b, _mm512_set1_epi16(0x0401)); /* c0 + 4 c1 */
        __m512i dw = _mm512_madd_epi16(w, _mm512_set1_epi32(0x00100001)); /* w0 + 16 w1 */
        _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(dw));
    }
}

/* The shuffle, shifts and mask that unpack 16 codes of that width. */
struct unpacker {
    __m128i idx;
    __m512i shift, mask;
};

MTI_AVX512 MTI_INLINE struct unpacker unpacker_of(unsigned bits)
{
    uint8_t idx[16];
    uint32_t sh[16];
    unsigned per = 8 / bits;
    for (unsigned k = 0; k < 16; k++) {
        idx[k] = (uint8_t)(k / per);
        sh[k] = (k % per) * bits;
    }
    struct unpacker u;
    u.idx = _mm_loadu_si128((const __m128i *)idx);
    u.shift = _mm512_loadu_si512(sh);
    u.mask = _mm512_set1_epi32((int)((1u << bits) - 1u));
    return u;
}

MTI_AVX512 MTI_INLINE __m512 unpack16(const uint8_t *in, unsigned bits, const struct unpacker *u)
{
    __m128i b;
    if (bits == 8) {
        b = _mm_loadu_si128((const __m128i *)in);
    } else if (bits == 4) {
        b = _mm_loadl_epi64((const __m128i *)in);
    } else {
        uint32_t v;
        memcpy(&v, in, sizeof v);
        b = _mm_cvtsi32_si128((int)v);
    }
    b = _mm_shuffle_epi8(b, u->idx);
    __m512i q = _mm512_and_si512(_mm512_srlv_epi32(_mm512_cvtepu8_epi32(b), u->shift), u->mask);
    return _mm512_cvtepi32_ps(q);
}

/* Whether codes64 may write codes with non-temporal stores: a large call
 * (call_bytes: the fp32 bytes of the whole call, of which this may be one
 * part; as mti_stream_ok), and every 64 values' codes at an offset aligned
 * to their own size (codes 64-byte aligned, rows a multiple of 64 bytes).
 * Each part fences at its end (kv_part). */
MTI_INLINE int codes_stream_ok(const uint8_t *codes, size_t call_bytes, size_t row_bytes)
{
    return mti_stream_ok(codes, call_bytes) && row_bytes % 64 == 0;
}

/* Keys, channels % 16 == 0: the group (G rows of C channels) is taken a
 * tile of KEY_TILE channels at a time, so that the tile's G rows stay in
 * L1 between its min/max pass and its codes pass and the min/max
 * accumulators stay in registers; the next tile is fetched during the
 * codes pass. One tile of nv (a constant once inlined) vectors of 16
 * channels from c0: 0, -EDOM or -ERANGE as kvq_body would return for the
 * group (an overflow is reported only once the whole group is known to be
 * finite). The codes pass fetches the tile KEY_TILE_AHEAD tiles on (into
 * the next group at the end of this one). */
#define KEY_TILE 128
#define KEY_TILE_AHEAD 2

MTI_AVX512 MTI_INLINE int keys_tile(const float *x0, const float *next, size_t C, size_t G,
                                    size_t c0, size_t nv, unsigned bits, __m512 levels,
                                    __m512i lvi, uint16_t *mt, float *z, float *d, float *rc,
                                    uint8_t *out, size_t row_bytes, int nt)
{
    __m512i kn[KEY_TILE / 16], kx[KEY_TILE / 16];
    for (size_t v = 0; v < nv; v++)
        kn[v] = kx[v] = key16(_mm512_loadu_si512(x0 + c0 + 16 * v));
    for (size_t t = 1; t < G; t++)
        for (size_t v = 0; v < nv; v++) {
            __m512i k = key16(_mm512_loadu_si512(x0 + t * C + c0 + 16 * v));
            kn[v] = _mm512_min_epi32(kn[v], k);
            kx[v] = _mm512_max_epi32(kx[v], k);
        }
    /* a tile holds an Inf or NaN iff its extremes do */
    __mmask16 bad = 0;
    for (size_t v = 0; v < nv; v++)
        bad |= nonfinite16(key16(kn[v])) | nonfinite16(key16(kx[v]));
    if (bad)
        return -EDOM;
    __m512 zv[KEY_TILE / 16], dv[KEY_TILE / 16], rv[KEY_TILE / 16];
    for (size_t v = 0; v < nv; v++) {
        size_t c = c0 + 16 * v;
        if (params16(_mm512_castsi512_ps(key16(kn[v])), _mm512_castsi512_ps(key16(kx[v])), levels,
                     0xffff, mt + 2 * c, z + c, d + c, rc + c)) {
            for (size_t t = 0; t < G; t++)
                for (size_t c1 = c0 + 16 * nv; c1 < C; c1 += 16)
                    if (nonfinite16(_mm512_loadu_si512(x0 + t * C + c1)))
                        return -EDOM;
            return -ERANGE;
        }
        zv[v] = _mm512_loadu_ps(z + c);
        dv[v] = _mm512_loadu_ps(d + c);
        rv[v] = _mm512_loadu_ps(rc + c);
    }
    for (size_t t = 0; t < G; t++) {
        const float *xr = x0 + t * C + c0;
        uint8_t *o = out + t * row_bytes + c0 * bits / 8;
        if (next)
            for (size_t v = 0; v < nv; v++)
                _mm_prefetch((const char *)(next + t * C + 16 * v), _MM_HINT_T0);
        if (nv % 4 == 0)
            for (size_t v = 0; v < nv; v += 4)
                codes64(xr + 16 * v, zv + v, dv + v, rv + v, bits, o + 16 * v * bits / 8, nt);
        else
            for (size_t v = 0; v < nv; v++)
                pack16(codes16(_mm512_loadu_ps(xr + 16 * v), zv[v], dv[v], rv[v], lvi), bits,
                       o + 16 * v * bits / 8);
    }
    return 0;
}

/* Keys, channels % 16 == 0. Scratch: z, d, 1 / d (C floats each). */
MTI_AVX512 static int kvq_keys_avx512(const float *x, size_t T, size_t C, unsigned bits, size_t G,
                                      uint8_t *codes, uint16_t *meta, float *ws, size_t call_bytes)
{
    const unsigned lv = (1u << bits) - 1u;
    const __m512 levels = _mm512_set1_ps((float)lv);
    const __m512i lvi = _mm512_set1_epi32((int)lv);
    size_t row_bytes = C * bits / 8, full = C - C % KEY_TILE;
    float *z = ws, *d = ws + C, *rc = ws + 2 * C;
    /* a tile writes KEY_TILE * bits / 8 bytes of each of G rows: streamed
     * only when those are whole lines (not at 2 bits: 32-byte pieces of 32
     * rows overflow the write-combining buffers, measured 44% -> 25% of
     * memcpy on a Xeon) */
    int nt = codes_stream_ok(codes, call_bytes, row_bytes) && KEY_TILE * bits / 8 % 64 == 0;
    for (size_t tg = 0; tg < T / G; tg++) {
        const float *x0 = x + tg * G * C;
        const float *xnext = tg + 1 < T / G ? x0 + G * C : NULL;
        uint16_t *mt = meta + 2 * tg * C;
        uint8_t *out = codes + tg * G * row_bytes;
        int r = 0;
        for (size_t c0 = 0; c0 < full && !r; c0 += KEY_TILE) {
            /* the next tile: the next channels, or the next group's first */
            size_t ahead = c0 + KEY_TILE_AHEAD * KEY_TILE;
            const float *next = ahead < C                          ? x0 + ahead
                                : xnext && ahead - C < G * C ? xnext + (ahead - C)
                                                             : NULL;
            r = keys_tile(x0, next, C, G, c0, KEY_TILE / 16, bits, levels, lvi, mt, z, d, rc, out,
                          row_bytes, nt);
        }
        for (size_t c0 = full; c0 < C && !r; c0 += 16)
            r = keys_tile(x0, c0 + 16 < C ? x0 + c0 + 16 : xnext, C, G, c0, 1, bits, levels, lvi,
                          mt, z, d, rc, out, row_bytes, 0);
        if (r)
            return r;
    }
    return 0;
}

#define PREFETCH_ROWS 2
/* Values stream their codes from 4 bits up (32- and 64-byte pieces). The
 * 2-bit codes' 16-byte pieces, streamed, cut a Xeon core's values quantize
 * from 10.5 to 6.6 GB/s (no change on an EPYC); 4 bits: no change; 8 bits:
 * 11.1 -> 12.5-13.1 GB/s. */
#define KV_VALUES_STREAM_BITS 4

/* Values, group % 16 == 0. Scratch: z, d, mn, mx, 1 / d (one per group). */
MTI_AVX512 static int kvq_values_avx512(const float *x, size_t T, size_t C, unsigned bits,
                                        size_t G, uint8_t *codes, uint16_t *meta, float *ws,
                                        size_t call_bytes)
{
    const unsigned lv = (1u << bits) - 1u;
    const __m512 levels = _mm512_set1_ps((float)lv);
    const __m512i lvi = _mm512_set1_epi32((int)lv);
    size_t row_bytes = C * bits / 8, ng = C / G;
    float *z = ws, *d = ws + C, *mn = ws + 2 * C, *mx = ws + 3 * C, *rc = ws + 4 * C;
    int nt = codes_stream_ok(codes, call_bytes, row_bytes) && bits >= KV_VALUES_STREAM_BITS;
    for (size_t t = 0; t < T; t++) {
        const float *xr = x + t * C;
        __mmask16 bad = 0;
        for (size_t g0 = 0; g0 < ng; g0 += 16) {
            /* 16 groups: each folded to one vector, then the 16 reduced
             * together (padding past the row's end: the identities) */
            __m512i kn[16], kx[16];
            size_t nh = ng - g0 < 16 ? ng - g0 : 16;
            for (size_t j = 0; j < 16; j++) {
                if (j >= nh) {
                    kn[j] = _mm512_set1_epi32(INT32_MAX);
                    kx[j] = _mm512_set1_epi32(INT32_MIN);
                    continue;
                }
                const float *xg = xr + (g0 + j) * G;
                kn[j] = kx[j] = key16(_mm512_loadu_si512(xg));
                for (size_t i = 16; i < G; i += 16) {
                    __m512i k = key16(_mm512_loadu_si512(xg + i));
                    kn[j] = _mm512_min_epi32(kn[j], k);
                    kx[j] = _mm512_max_epi32(kx[j], k);
                }
            }
            __mmask16 km = (__mmask16)(nh == 16 ? 0xffff : (1u << nh) - 1u);
            __m512i vmin = key16(reduce16(kn, 0)), vmax = key16(reduce16(kx, 1));
            /* a group holds an Inf or NaN iff its extremes do */
            bad |= (nonfinite16(vmin) | nonfinite16(vmax)) & km;
            _mm512_mask_storeu_ps(mn + g0, km, _mm512_castsi512_ps(vmin));
            _mm512_mask_storeu_ps(mx + g0, km, _mm512_castsi512_ps(vmax));
        }
        if (bad)
            return -EDOM;
        uint16_t *mt = meta + 2 * t * ng;
        for (size_t g = 0; g < ng; g += 16) {
            __mmask16 km = (__mmask16)(ng - g >= 16 ? 0xffff : (1u << (ng - g)) - 1u);
            if (params16(_mm512_maskz_loadu_ps(km, mn + g), _mm512_maskz_loadu_ps(km, mx + g),
                         levels, km, mt + 2 * g, z + g, d + g, rc + g))
                return -ERANGE;
        }
        /* as in kvq_keys_avx512: fetch a later row during the codes pass */
        uint8_t *out = codes + t * row_bytes;
        const float *ahead = t + PREFETCH_ROWS < T ? xr + PREFETCH_ROWS * C : NULL;
        /* 64 values at a time (each vector of 16 within one group, as G is
         * a multiple of 16) with codes64's wide packing; the rest by 16 */
        size_t i = 0;
        for (; i + 64 <= C; i += 64) {
            __m512 zv[4], dv[4], rv[4];
            for (int k = 0; k < 4; k++) {
                size_t g = (i + 16 * (size_t)k) / G;
                zv[k] = _mm512_set1_ps(z[g]);
                dv[k] = _mm512_set1_ps(d[g]);
                rv[k] = _mm512_set1_ps(rc[g]);
            }
            if (ahead)
                for (int k = 0; k < 4; k++)
                    _mm_prefetch((const char *)(ahead + i + 16 * k), _MM_HINT_T0);
            codes64(xr + i, zv, dv, rv, bits, out + i * bits / 8, nt);
        }
        for (; i < C; i += 16) {
            size_t g = i / G;
            if (ahead)
                _mm_prefetch((const char *)(ahead + i), _MM_HINT_T0);
            pack16(codes16(_mm512_loadu_ps(xr + i), _mm512_set1_ps(z[g]), _mm512_set1_ps(d[g]),
                           _mm512_set1_ps(rc[g]), lvi),
                   bits, out + i * bits / 8);
        }
    }
    return 0;
}

MTI_AVX512 static int kvq_avx512(enum mt_kv_kind kind, const float *x, size_t T, size_t C,
                                 unsigned bits, size_t G, uint8_t *codes, uint16_t *meta,
                                 float *ws, uint8_t *rc, size_t call_bytes)
{
    if (kind == MT_KV_KEYS && C % 16 == 0)
        return kvq_keys_avx512(x, T, C, bits, G, codes, meta, ws, call_bytes);
    if (kind == MT_KV_VALUES && G % 16 == 0)
        return kvq_values_avx512(x, T, C, bits, G, codes, meta, ws, call_bytes);
    return kvq_avx512g(kind, x, T, C, bits, G, codes, meta, ws, rc, call_bytes);
}

/* (zero, scale) pairs of n <= 16 groups to floats. */
MTI_AVX512 MTI_INLINE void meta16(const uint16_t *mt, size_t n, float *z, float *s)
{
    __mmask16 km = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1u);
    __m512i v = _mm512_maskz_loadu_epi32(km, mt);
    _mm512_mask_storeu_ps(z, km, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)));
    _mm512_mask_storeu_ps(s, km, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16))));
}

/* 16 floats to p (64-byte aligned when nt): non-temporal when nt. */
MTI_AVX512 MTI_INLINE void store16(float *p, __m512 v, int nt)
{
    if (nt)
        _mm512_stream_ps(p, v);
    else
        _mm512_storeu_ps(p, v);
}

MTI_AVX512 static void kvd_avx512(enum mt_kv_kind kind, const uint8_t *codes, const uint16_t *meta,
                                  size_t T, size_t C, unsigned bits, size_t G, float *x, float *ws,
                                  uint8_t *rc, size_t call_bytes)
{
    int keys = kind == MT_KV_KEYS;
    if (keys ? C % 16 : G % 16) {
        kvd_avx512g(kind, codes, meta, T, C, bits, G, x, ws, rc, call_bytes);
        return;
    }
    struct unpacker u = unpacker_of(bits);
    size_t row_bytes = C * bits / 8, ng = C / G;
    float *z = ws, *s = ws + C;
    /* rows start 64-byte aligned when x does (C % 16 == 0 on this path) */
    int nt = mti_stream_ok(x, call_bytes);
    for (size_t t = 0; t < T; t++) {
        const uint8_t *in = codes + t * row_bytes;
        float *xr = x + t * C;
        if (keys) {
            if (t % G == 0)
                for (size_t c = 0; c < C; c += 16)
                    meta16(meta + 2 * (t / G) * C + 2 * c, 16, z + c, s + c);
            for (size_t c = 0; c < C; c += 16) {
                __m512 q = unpack16(in + c * bits / 8, bits, &u);
                store16(xr + c, _mm512_add_ps(_mm512_mul_ps(q, _mm512_loadu_ps(s + c)),
                                              _mm512_loadu_ps(z + c)),
                        nt);
            }
        } else {
            for (size_t g = 0; g < ng; g += 16)
                meta16(meta + 2 * t * ng + 2 * g, ng - g, z + g, s + g);
            for (size_t g = 0; g < ng; g++) {
                __m512 zg = _mm512_set1_ps(z[g]), sg = _mm512_set1_ps(s[g]);
                for (size_t i = g * G; i < (g + 1) * G; i += 16) {
                    __m512 q = unpack16(in + i * bits / 8, bits, &u);
                    store16(xr + i, _mm512_add_ps(_mm512_mul_ps(q, sg), zg), nt);
                }
            }
        }
    }
}
#else
#define kvq_avx2 kvq_scalar
#define kvq_avx512 kvq_scalar
#define kvd_avx2 kvd_scalar
#define kvd_avx512 kvd_scalar
#endif

typedef int (*kvq_fn)(enum mt_kv_kind, const float *, size_t, size_t, unsigned, size_t, uint8_t *,
                      uint16_t *, float *, uint8_t *, size_t);
typedef void (*kvd_fn)(enum mt_kv_kind, const uint8_t *, const uint16_t *, size_t, size_t,
                       unsigned, size_t, float *, float *, uint8_t *, size_t);

/* A whole call; its parts are runs of units: keys' token groups, values'
 * tokens (rows_per rows each). */
struct kv_job {
    enum mt_kv_kind kind;
    const float *xin;
    float *xout;
    const uint8_t *cin;
    uint8_t *cout;
    const uint16_t *min;
    uint16_t *mout;
    size_t C, G, rows_per;
    unsigned bits;
    size_t call_bytes; /* fp32 bytes of the whole call */
    kvq_fn q;
    kvd_fn d;
};

/* Units [u0, u1) of a quantize (or of a dequantize when j->d), with their
 * own scratch: z, s, mn, mx, 1 / s (C floats each) and one row of codes. A
 * row holds C / G groups' metadata either way (keys: C per G rows). */
static int kv_part(void *ctx, size_t u0, size_t u1)
{
    const struct kv_job *j = ctx;
    size_t C = j->C, r0 = u0 * j->rows_per, T = (u1 - u0) * j->rows_per;
    size_t row_bytes = C * j->bits / 8, meta0 = 2 * r0 * C / j->G;
    float *ws = malloc(5 * C * sizeof *ws + C);
    if (!ws)
        return -ENOMEM;
    uint8_t *rc = (uint8_t *)(ws + 5 * C);
    int r = 0;
    if (j->d)
        j->d(j->kind, j->cin + r0 * row_bytes, j->min + meta0, T, C, j->bits, j->G,
             j->xout + r0 * C, ws, rc, j->call_bytes);
    else
        r = j->q(j->kind, j->xin + r0 * C, T, C, j->bits, j->G, j->cout + r0 * row_bytes,
                 j->mout + meta0, ws, rc, j->call_bytes);
    mti_store_fence(); /* the AVX-512 code may have streamed its output */
    free(ws);
    return r;
}

/* Runs a checked call's parts. */
static int kv_run(struct kv_job *j, size_t tokens)
{
    j->rows_per = j->kind == MT_KV_KEYS ? j->G : 1;
    j->call_bytes = tokens * j->C * sizeof(float);
    return mti_parallel(tokens / j->rows_per, j->rows_per * j->C * sizeof(float), kv_part, j);
}

int mt_kv_quantize(enum mt_kv_kind kind, const float *x, size_t tokens, size_t channels,
                   unsigned bits, size_t group, uint8_t *codes, uint16_t *meta)
{
    static const kvq_fn fns[MT_ISA_COUNT] = {kvq_scalar, kvq_avx2, kvq_avx512};
    struct mt_kv_layout l;
    int r = mt_kv_layout(kind, tokens, channels, bits, group, &l);
    if (r < 0)
        return r;
    struct kv_job j = {.kind = kind, .xin = x, .cout = codes, .mout = meta, .C = channels,
                       .G = group, .bits = bits, .q = fns[mti_isa()]};
    return kv_run(&j, tokens);
}

int mt_kv_dequantize(enum mt_kv_kind kind, const uint8_t *codes, const uint16_t *meta,
                     size_t tokens, size_t channels, unsigned bits, size_t group, float *x)
{
    static const kvd_fn fns[MT_ISA_COUNT] = {kvd_scalar, kvd_avx2, kvd_avx512};
    struct mt_kv_layout l;
    int r = mt_kv_layout(kind, tokens, channels, bits, group, &l);
    if (r < 0)
        return r;
    struct kv_job j = {.kind = kind, .xout = x, .cin = codes, .min = meta, .C = channels,
                       .G = group, .bits = bits, .d = fns[mti_isa()]};
    return kv_run(&j, tokens);
}
