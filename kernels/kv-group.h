/* kv-group.h: the KV-cache group arithmetic shared by the C kernels and the
 * CUDA ones (compiled as host and device code there), so both compute the
 * same zero point, scale and codes bit for bit.
 *
 * fp16 conversions are done in integer arithmetic (round to nearest even),
 * not through a compiler's half type, for the same reason. A group's zero
 * point is its min rounded down to fp16 and its scale (max - zero) / levels
 * rounded up: the codes then cover [min, max] whatever the rounding.
 */
#ifndef MT_KV_GROUP_H
#define MT_KV_GROUP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define MT_HD __host__ __device__ static inline
#else
#define MT_HD static inline
#endif

MT_HD uint32_t mt_bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

MT_HD float mt_float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

MT_HD uint16_t mt_f16_rne(float f)
{
    uint32_t x = mt_bits_of(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));
    if (x >= 0x477ff000u) /* 65520 and up round to Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (x < 0x38800000u) { /* below 2^-14: a subnormal half */
        if (x < 0x33000000u)
            return sign;
        uint32_t e = x >> 23, m = (x & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e, r = m >> shift, rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = x - 0x38000000u, h = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

MT_HD float mt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        return mt_float_of(sign | 0x7f800000u | (m << 13));
    return mt_float_of(sign | ((e + 112u) << 23) | (m << 13));
}

/* The next fp16 toward -Inf / +Inf (finite inputs). */
MT_HD uint16_t mt_f16_down(uint16_t h)
{
    if ((h & 0x7fffu) == 0)
        return 0x8001u;
    return (uint16_t)((h & 0x8000u) ? h + 1u : h - 1u);
}

MT_HD uint16_t mt_f16_up(uint16_t h)
{
    if ((h & 0x7fffu) == 0)
        return 0x0001u;
    return (uint16_t)((h & 0x8000u) ? h - 1u : h + 1u);
}

/* Zero point and scale of a group with that min and max, as fp16 bits and
 * as the floats they denote. 0, or -1 when one of them overflows fp16. */
MT_HD int mt_kv_group_params(float mn, float mx, unsigned levels, uint16_t *ret_zh,
                             uint16_t *ret_sh, float *ret_z, float *ret_s)
{
    uint16_t zh = mt_f16_rne(mn);
    if (mt_f16_to_f32(zh) > mn)
        zh = mt_f16_down(zh);
    float z = mt_f16_to_f32(zh);
    float want = (mx - z) / (float)levels;
    uint16_t sh = mt_f16_rne(want);
    if (mt_f16_to_f32(sh) < want)
        sh = mt_f16_up(sh);
    float s = mt_f16_to_f32(sh);
    if ((zh & 0x7c00u) == 0x7c00u || (sh & 0x7c00u) == 0x7c00u)
        return -1;
    *ret_zh = zh;
    *ret_sh = sh;
    *ret_z = z;
    *ret_s = s;
    return 0;
}

/* The divisor for a group of scale s: s, or 1 when s == 0 (which happens
 * only when the whole group equals z exactly, and every code is then 0). */
MT_HD float mt_kv_divisor(float s)
{
    return s > 0.0f ? s : 1.0f;
}

/* The code of x in a group (before packing), d = mt_kv_divisor(s). The
 * clamp is on integers so that the C loops vectorize without branches. */
MT_HD int mt_kv_code(float x, float z, float d, int levels)
{
    int q = (int)rintf((x - z) / d);
    q = q < 0 ? 0 : q;
    return q > levels ? levels : q;
}

#endif
