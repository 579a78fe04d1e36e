/* kv.c: KV-cache quantization, KIVI-style: keys per channel, values per
 * token, 2, 4 or 8 bits, an fp16 zero point and scale per group.
 *
 * The arithmetic of a group (kv-group.h) is shared with the CUDA kernels.
 * The loops here are written once, as always-inline bodies, and compiled
 * three times: plain, and inside functions carrying target("avx2") and
 * target("avx512f,...") where the compiler vectorizes them for that ISA.
 * Without -ffast-math and with -ffp-contract=off the vectorizer may not
 * reorder or fuse any floating-point operation, so the three variants give
 * identical bits; min/max reductions are written with explicit 16 partial
 * lanes so that they too vectorize without reassociation.
 *
 * Layout: each row (token) of codes is channels * bits / 8 bytes, codes
 * packed little-endian within a byte (code j of a byte at bit j * bits).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kernels-internal.h"
#include "kv-group.h"

#define LANES 16

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

MTI_INLINE void minmax(const float *x, size_t n, float *ret_mn, float *ret_mx)
{
    float mn[LANES], mx[LANES];
    size_t i = 0;
    for (size_t l = 0; l < LANES; l++)
        mn[l] = mx[l] = x[0];
    for (; i + LANES <= n; i += LANES)
        for (size_t l = 0; l < LANES; l++) {
            mn[l] = x[i + l] < mn[l] ? x[i + l] : mn[l];
            mx[l] = x[i + l] > mx[l] ? x[i + l] : mx[l];
        }
    for (; i < n; i++) {
        mn[0] = x[i] < mn[0] ? x[i] : mn[0];
        mx[0] = x[i] > mx[0] ? x[i] : mx[0];
    }
    for (size_t l = 1; l < LANES; l++) {
        mn[0] = mn[l] < mn[0] ? mn[l] : mn[0];
        mx[0] = mx[l] > mx[0] ? mx[l] : mx[0];
    }
    *ret_mn = mn[0];
    *ret_mx = mx[0];
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
            memcpy(mn, x0, C * sizeof *mn);
            memcpy(mx, x0, C * sizeof *mx);
            for (size_t t = 1; t < G; t++)
                for (size_t c = 0; c < C; c++) {
                    float v = x0[t * C + c];
                    mn[c] = v < mn[c] ? v : mn[c];
                    mx[c] = v > mx[c] ? v : mx[c];
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

#define KV_VARIANTS(attr, suffix)                                                                \
    attr static int kvq_##suffix(enum mt_kv_kind kind, const float *x, size_t T, size_t C,        \
                                 unsigned bits, size_t G, uint8_t *codes, uint16_t *meta,         \
                                 float *ws, uint8_t *rc)                                          \
    {                                                                                             \
        return kvq_body(kind, x, T, C, bits, G, codes, meta, ws, rc);                             \
    }                                                                                             \
    attr static void kvd_##suffix(enum mt_kv_kind kind, const uint8_t *codes,                     \
                                  const uint16_t *meta, size_t T, size_t C, unsigned bits,        \
                                  size_t G, float *x, float *ws, uint8_t *rc)                     \
    {                                                                                             \
        kvd_body(kind, codes, meta, T, C, bits, G, x, ws, rc);                                    \
    }

KV_VARIANTS(, scalar)
#if defined(__x86_64__) || defined(__i386__)
KV_VARIANTS(MTI_AVX2, avx2)
KV_VARIANTS(MTI_AVX512, avx512)
#else
#define kvq_avx2 kvq_scalar
#define kvq_avx512 kvq_scalar
#define kvd_avx2 kvd_scalar
#define kvd_avx512 kvd_scalar
#endif

typedef int (*kvq_fn)(enum mt_kv_kind, const float *, size_t, size_t, unsigned, size_t, uint8_t *,
                      uint16_t *, float *, uint8_t *);
typedef void (*kvd_fn)(enum mt_kv_kind, const uint8_t *, const uint16_t *, size_t, size_t,
                       unsigned, size_t, float *, float *, uint8_t *);

int mt_kv_quantize(enum mt_kv_kind kind, const float *x, size_t tokens, size_t channels,
                   unsigned bits, size_t group, uint8_t *codes, uint16_t *meta)
{
    static const kvq_fn fns[MT_ISA_COUNT] = {kvq_scalar, kvq_avx2, kvq_avx512};
    struct mt_kv_layout l;
    int r = mt_kv_layout(kind, tokens, channels, bits, group, &l);
    if (r < 0)
        return r;
    float *ws = malloc(4 * channels * sizeof *ws + channels);
    if (!ws)
        return -ENOMEM;
    r = fns[mti_isa()](kind, x, tokens, channels, bits, group, codes, meta, ws,
                       (uint8_t *)(ws + 4 * channels));
    free(ws);
    return r;
}

int mt_kv_dequantize(enum mt_kv_kind kind, const uint8_t *codes, const uint16_t *meta,
                     size_t tokens, size_t channels, unsigned bits, size_t group, float *x)
{
    static const kvd_fn fns[MT_ISA_COUNT] = {kvd_scalar, kvd_avx2, kvd_avx512};
    struct mt_kv_layout l;
    int r = mt_kv_layout(kind, tokens, channels, bits, group, &l);
    if (r < 0)
        return r;
    float *ws = malloc(2 * channels * sizeof *ws + channels);
    if (!ws)
        return -ENOMEM;
    fns[mti_isa()](kind, codes, meta, tokens, channels, bits, group, x, ws,
                   (uint8_t *)(ws + 2 * channels));
    free(ws);
    return 0;
}
