/* test-kernels.c: the measurement kernels (kernels/) against their scalar
 * reference and their stated error bounds.
 *
 * Every SIMD variant this CPU runs must give the scalar variant's bits
 * (quantize, dequantize, AdamW, KV, latent); errors are checked against
 * the bounds derived in docs/KERNELS.md, per block or group, never against
 * loose constants. Offload copies must come back byte-identical.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>

#include "kernels-internal.h"
#include "kv-group.h"
#include "mtkernels.h"

#define U 0x1p-24 /* unit roundoff of fp32 */

static uint64_t rng_state = 42;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1) times a per-call magnitude spread over decades. */
static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(((double)(rnd() >> 11) * 0x1p-52 - 1.0) * scale);
}

static void fill_mixed(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double mag = pow(10.0, (double)(rnd() % 9) - 4.0);
        x[i] = (float)(((double)(rnd() >> 11) * 0x1p-52 - 1.0) * mag);
    }
}

static void use(enum mt_isa isa)
{
    cr_assert_eq(mt_isa_use(isa), 0);
}

static void fini(void)
{
    mt_isa_use(mt_isa_best());
    mt_threads_use(1);
}

TestSuite(kernels, .fini = fini);

/* ---- q8 ---------------------------------------------------------------- */

static const size_t q8_sizes[] = {1, 7, 15, 16, 17, 31, 32, 33, 100, 255, 256, 257, 1000, 4099};
static const size_t q8_blocks[] = {1, 2, 3, 8, 16, 17, 64, 256, 2048, 4096};

Test(kernels, q8_variants_bit_exact_and_within_bound)
{
    size_t nmax = 4099;
    float *x = malloc(nmax * 4), *y = malloc(nmax * 4), *y2 = malloc(nmax * 4);
    int8_t *c = malloc(nmax), *c2 = malloc(nmax);
    float *a = malloc(nmax * 4), *a2 = malloc(nmax * 4);
    for (size_t si = 0; si < sizeof q8_sizes / sizeof *q8_sizes; si++)
        for (size_t bi = 0; bi < sizeof q8_blocks / sizeof *q8_blocks; bi++) {
            size_t n = q8_sizes[si], block = q8_blocks[bi], nb = mt_q8_blocks(n, block);
            fill_mixed(x, n);
            use(MT_ISA_SCALAR);
            cr_assert_eq(mt_q8_quantize(x, n, block, c, a), 0);
            cr_assert_eq(mt_q8_dequantize(c, a, n, block, y), 0);
            for (size_t i = 0; i < n; i++) {
                size_t b = i / block;
                double exact = (double)x[i] * 127.0 / a[b];
                /* code = rne of x * fl(127/a) rounded: within 0.5 of the
                 * exact ratio plus two roundings of a value <= 127 */
                cr_assert_leq(fabs(c[i] - exact), 0.5 + 127.0 * 2.0 * U * 1.0001,
                              "n %zu block %zu i %zu", n, block, i);
                cr_assert_leq(fabs((double)x[i] - y[i]), mt_q8_error_bound(a[b]),
                              "n %zu block %zu i %zu: %g vs %g (absmax %g)", n, block, i, x[i],
                              y[i], a[b]);
            }
            for (size_t b = 0; b < nb; b++) {
                float m = 0;
                for (size_t i = b * block; i < n && i < (b + 1) * block; i++)
                    m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
                cr_assert_eq(a[b], m);
            }
            for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
                if (!mt_isa_supported((enum mt_isa)isa))
                    continue;
                use((enum mt_isa)isa);
                memset(c2, 0x55, n);
                cr_assert_eq(mt_q8_quantize(x, n, block, c2, a2), 0);
                cr_assert_eq(memcmp(c, c2, n), 0, "%s codes n %zu block %zu",
                             mt_isa_name((enum mt_isa)isa), n, block);
                cr_assert_eq(memcmp(a, a2, nb * 4), 0, "%s absmax", mt_isa_name((enum mt_isa)isa));
                cr_assert_eq(mt_q8_dequantize(c, a, n, block, y2), 0);
                cr_assert_eq(memcmp(y, y2, n * 4), 0, "%s dequant n %zu block %zu",
                             mt_isa_name((enum mt_isa)isa), n, block);
            }
        }
    free(x), free(y), free(y2), free(c), free(c2), free(a), free(a2);
}

Test(kernels, q8_edge_cases)
{
    enum { N = 96, B = 32 };
    float x[N], y[N], a[3];
    int8_t c[N];
    for (int isa = 0; isa < MT_ISA_COUNT; isa++) {
        if (!mt_isa_supported((enum mt_isa)isa))
            continue;
        use((enum mt_isa)isa);
        fill(x, N, 3.0f);
        memset(x, 0, B * 4);       /* block 0: zeros */
        x[B + 5] = INFINITY;       /* block 1: an Inf */
        x[2 * B] = 0.5f;
        x[2 * B + 1] = 2.5f;       /* block 2: +-absmax map to +-127 */
        x[2 * B + 2] = -2.5f;
        for (int i = 2 * B + 3; i < N; i++)
            x[i] = 1.0f;
        cr_assert_eq(mt_q8_quantize(x, N, B, c, a), 0);
        cr_assert_eq(a[0], 0.0f);
        cr_assert(isnan(a[1]));
        cr_assert_eq(a[2], 2.5f);
        cr_assert_eq(c[2 * B + 1], 127);
        cr_assert_eq(c[2 * B + 2], -127);
        for (int i = 0; i < 2 * B; i++)
            cr_assert_eq(c[i], 0);
        mt_q8_dequantize(c, a, N, B, y);
        for (int i = 0; i < B; i++)
            cr_assert_eq(y[i], 0.0f);
        for (int i = B; i < 2 * B; i++)
            cr_assert(isnan(y[i]), "an Inf block dequantizes to NaN");
        x[B + 5] = NAN;
        mt_q8_quantize(x, N, B, c, a);
        cr_assert(isnan(a[1]));
        /* below MT_Q8_TINY: stored as zero */
        for (int i = 0; i < B; i++)
            x[i] = 1e-37f;
        mt_q8_quantize(x, N, B, c, a);
        cr_assert_eq(a[0], 0.0f);
        /* just above: a normal block */
        for (int i = 0; i < B; i++)
            x[i] = (i & 1 ? -1 : 1) * 0x1p-119f * (float)(i + 1) / B;
        mt_q8_quantize(x, N, B, c, a);
        mt_q8_dequantize(c, a, N, B, y);
        for (int i = 0; i < B; i++)
            cr_assert_leq(fabs((double)x[i] - y[i]), mt_q8_error_bound(a[0]));
    }
    cr_assert_eq(mt_q8_quantize(x, N, 0, c, a), -EINVAL);
    cr_assert_eq(mt_q8_dequantize(c, a, N, 0, y), -EINVAL);
    cr_assert_eq(mt_q8_blocks(257, 256), 2);
    cr_assert_float_eq(mt_q8_bytes_per_value(128), 1.03125, 1e-12);
}

/* ---- AdamW ------------------------------------------------------------- */

static const struct mt_adamw_params hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};

Test(kernels, adamw8_one_step_matches_fp32_given_equal_state)
{
    enum { N = 3000, B = 256 };
    size_t nb = mt_q8_blocks(N, B);
    static float p0[N], g[N], m[N], v[N], p8[N], p32[N], m32[N], v32[N], mq[N], vq[N];
    static int8_t mc[N], vc[N], mc0[N], vc0[N], mcs[N], vcs[N];
    static float ma[64], va[64], ma0[64], va0[64], mas[64], vas[64], ps[N];
    fill(p0, N, 0.1f);
    fill(g, N, 1e-2f);
    fill(m, N, 1e-3f);
    fill(v, N, 1e-5f);
    for (int i = 0; i < N; i++)
        v[i] = fabsf(v[i]);
    mt_q8_quantize(m, N, B, mc0, ma0);
    mt_q8_quantize(v, N, B, vc0, va0);
    for (int isa = 0; isa < MT_ISA_COUNT; isa++) {
        if (!mt_isa_supported((enum mt_isa)isa))
            continue;
        use((enum mt_isa)isa);
        memcpy(mc, mc0, N), memcpy(vc, vc0, N), memcpy(ma, ma0, nb * 4), memcpy(va, va0, nb * 4);
        memcpy(p8, p0, sizeof p8);
        memcpy(p32, p0, sizeof p32);
        mt_q8_dequantize(mc, ma, N, B, m32);
        mt_q8_dequantize(vc, va, N, B, v32);
        cr_assert_eq(mt_adamw8_step(p8, g, mc, ma, vc, va, N, B, &hp, 5), 0);
        mt_adamw32_step(p32, g, m32, v32, N, &hp, 5);
        cr_assert_eq(memcmp(p8, p32, sizeof p8), 0, "%s: p differs from the fp32 reference",
                     mt_isa_name((enum mt_isa)isa));
        mt_q8_dequantize(mc, ma, N, B, mq);
        mt_q8_dequantize(vc, va, N, B, vq);
        for (int i = 0; i < N; i++) {
            cr_assert_leq(fabs((double)mq[i] - m32[i]), mt_q8_error_bound(ma[i / B]));
            cr_assert_leq(fabs((double)vq[i] - v32[i]), mt_q8_error_bound(va[i / B]));
        }
        if (isa == 0) {
            memcpy(mcs, mc, N), memcpy(vcs, vc, N), memcpy(mas, ma, nb * 4);
            memcpy(vas, va, nb * 4), memcpy(ps, p8, sizeof ps);
        } else {
            cr_assert_eq(memcmp(mcs, mc, N), 0);
            cr_assert_eq(memcmp(vcs, vc, N), 0);
            cr_assert_eq(memcmp(mas, ma, nb * 4), 0);
            cr_assert_eq(memcmp(vas, va, nb * 4), 0);
            cr_assert_eq(memcmp(ps, p8, sizeof ps), 0);
        }
    }
    cr_assert_eq(mt_adamw8_step(p8, g, mc, ma, vc, va, N, B, &hp, 0), -EINVAL);
    cr_assert_eq(mt_adamw8_step(p8, g, mc, ma, vc, va, N, 0, &hp, 1), -EINVAL);
}

/* Over many steps from zero state the stored moments drift from the fp32
 * ones by at most e_t = b * e_{t-1} * (1 + 2u) + q_t + 3u * (b |m_{t-1}| +
 * (1-b) |g|), q_t the q8 bound of the block: the previous error shrunk by
 * the decay, the new quantization error, and the rounding of the update. */
Test(kernels, adamw8_moments_drift_within_derived_bound)
{
    enum { N = 1000, B = 128, STEPS = 30 };
    size_t nb = mt_q8_blocks(N, B);
    static float p8[N], p32[N], g[N], m32[N], v32[N], mq[N], vq[N], ma[16], va[16];
    static int8_t mc[N], vc[N];
    static double em[N], ev[N];
    fill(p8, N, 0.1f);
    memcpy(p32, p8, sizeof p8);
    memset(mc, 0, N), memset(vc, 0, N), memset(ma, 0, nb * 4), memset(va, 0, nb * 4);
    for (int t = 1; t <= STEPS; t++) {
        fill_mixed(g, N);
        for (int i = 0; i < N; i++) {
            double g2 = (double)g[i] * g[i];
            em[i] = hp.beta1 * em[i] * (1 + 2 * U) + 3 * U * (hp.beta1 * fabs(m32[i]) + (1 - hp.beta1) * fabs(g[i]));
            ev[i] = hp.beta2 * ev[i] * (1 + 2 * U) + 3 * U * (hp.beta2 * fabs(v32[i]) + (1 - hp.beta2) * g2 * (1 + U));
        }
        cr_assert_eq(mt_adamw8_step(p8, g, mc, ma, vc, va, N, B, &hp, t), 0);
        mt_adamw32_step(p32, g, m32, v32, N, &hp, t);
        mt_q8_dequantize(mc, ma, N, B, mq);
        mt_q8_dequantize(vc, va, N, B, vq);
        for (int i = 0; i < N; i++) {
            em[i] += mt_q8_error_bound(ma[i / B]);
            ev[i] += mt_q8_error_bound(va[i / B]);
            cr_assert_leq(fabs((double)mq[i] - m32[i]), em[i], "step %d i %d", t, i);
            cr_assert_leq(fabs((double)vq[i] - v32[i]), ev[i], "step %d i %d", t, i);
        }
    }
}

/* ---- KV ---------------------------------------------------------------- */

static unsigned code_at(const uint8_t *codes, size_t row_bytes, size_t t, size_t c, unsigned bits)
{
    size_t bit = c * bits;
    return (codes[t * row_bytes + bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
}

Test(kernels, kv_round_trip_bounds_packing_and_variants)
{
    enum { T = 64, C = 96 };
    static float x[T * C], y[T * C], y2[T * C];
    static uint8_t codes[T * C], codes2[T * C];
    static uint16_t meta[2 * T * C], meta2[2 * T * C];
    static const unsigned bits_list[] = {2, 4, 8};
    static const size_t groups[] = {1, 8, 32};
    for (int kind = 0; kind < 2; kind++)
        for (size_t bi = 0; bi < 3; bi++)
            for (size_t gi = 0; gi < 3; gi++) {
                unsigned bits = bits_list[bi];
                size_t G = groups[gi];
                struct mt_kv_layout l;
                cr_assert_eq(mt_kv_layout((enum mt_kv_kind)kind, T, C, bits, G, &l), 0);
                cr_assert_eq(l.code_bytes, (size_t)T * C * bits / 8);
                cr_assert_float_eq(l.bits_per_value, bits + 32.0 / G, 1e-12);
                fill_mixed(x, T * C);
                x[7] = 0.0f;
                use(MT_ISA_SCALAR);
                cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes, meta), 0);
                cr_assert_eq(mt_kv_dequantize((enum mt_kv_kind)kind, codes, meta, T, C, bits, G, y), 0);
                double levels = (double)((1u << bits) - 1u);
                for (size_t t = 0; t < T; t++)
                    for (size_t c = 0; c < C; c++) {
                        size_t grp = kind == MT_KV_KEYS ? (t / G) * C + c : t * (C / G) + c / G;
                        float z = mt_f32_from_f16(meta[2 * grp]), s = mt_f32_from_f16(meta[2 * grp + 1]);
                        double xv = x[t * C + c];
                        cr_assert_leq(z, xv, "zero point above a value");
                        cr_assert_geq((double)z + s * levels, xv * (1 - 4 * U) - 4 * U * fabs(z),
                                      "codes do not reach the group max");
                        cr_assert_leq(fabs(xv - y[t * C + c]), mt_kv_error_bound(z, s, bits),
                                      "kind %d bits %u G %zu t %zu c %zu", kind, bits, G, t, c);
                        /* the packed code is the nearest level, recomputed here */
                        unsigned code = code_at(codes, C * bits / 8, t, c, bits);
                        double want = s > 0 ? ((double)xv - z) / s : 0;
                        cr_assert_leq(fabs(code - fmin(fmax(want, 0), levels)), 0.5 + 4 * U * levels + 1e-9,
                                      "packed code %u, want %g", code, want);
                        cr_assert_eq(y[t * C + c], (float)code * s + z);
                    }
                for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
                    if (!mt_isa_supported((enum mt_isa)isa))
                        continue;
                    use((enum mt_isa)isa);
                    cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes2, meta2), 0);
                    cr_assert_eq(memcmp(codes, codes2, l.code_bytes), 0, "%s codes",
                                 mt_isa_name((enum mt_isa)isa));
                    cr_assert_eq(memcmp(meta, meta2, l.meta_bytes), 0);
                    mt_kv_dequantize((enum mt_kv_kind)kind, codes, meta, T, C, bits, G, y2);
                    cr_assert_eq(memcmp(y, y2, sizeof y), 0, "%s dequant", mt_isa_name((enum mt_isa)isa));
                }
            }
}

/* Wide shapes reach the SIMD variants' full tiles (128 channels of 32 rows
 * for keys) and their 64-code packing, and ragged ones their tails: every
 * variant must give the scalar's bits. */
Test(kernels, kv_variants_on_wide_shapes)
{
    static const size_t chans[] = {1024, 1040, 160};
    static const unsigned bits_list[] = {2, 4, 8};
    enum { T = 64 };
    for (size_t ci = 0; ci < 3; ci++) {
        size_t C = chans[ci];
        float *x = malloc(sizeof *x * T * C);
        uint8_t *codes = malloc(T * C), *codes2 = malloc(T * C);
        uint16_t *meta = malloc(sizeof *meta * 2 * T * C), *meta2 = malloc(sizeof *meta2 * 2 * T * C);
        cr_assert(x && codes && codes2 && meta && meta2);
        fill_mixed(x, T * C);
        for (int kind = 0; kind < 2; kind++)
            for (size_t bi = 0; bi < 3; bi++)
                for (size_t G = 16; G <= 32; G += 16) {
                    unsigned bits = bits_list[bi];
                    if (kind == MT_KV_VALUES && C % G)
                        continue; /* values group along the channels */
                    struct mt_kv_layout l;
                    cr_assert_eq(mt_kv_layout((enum mt_kv_kind)kind, T, C, bits, G, &l), 0);
                    use(MT_ISA_SCALAR);
                    cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes, meta), 0);
                    for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
                        if (!mt_isa_supported((enum mt_isa)isa))
                            continue;
                        use((enum mt_isa)isa);
                        cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes2, meta2), 0);
                        cr_assert_eq(memcmp(codes, codes2, l.code_bytes), 0, "%s codes, C %zu kind %d bits %u G %zu",
                                     mt_isa_name((enum mt_isa)isa), C, kind, bits, G);
                        cr_assert_eq(memcmp(meta, meta2, l.meta_bytes), 0, "%s meta, C %zu",
                                     mt_isa_name((enum mt_isa)isa), C);
                    }
                }
        free(x);
        free(codes);
        free(codes2);
        free(meta);
        free(meta2);
    }
}

/* Outputs of 4 MiB and more (q8 codes: of 4 MiB of input), aligned, take
 * the non-temporal stores of the AVX-512 q8 quantizer and dequantizers;
 * unaligned ones of that size do not. Both must give the scalar bits. */
Test(kernels, dequantize_large_outputs_same_bits_streamed_or_not)
{
    enum { T = 2048, C = 1024, N = T * C }; /* 8 MiB of fp32 */
    float *x = aligned_alloc(64, sizeof *x * N), *ref = aligned_alloc(64, sizeof *ref * (N + 16));
    float *out = aligned_alloc(64, sizeof *out * (N + 16));
    uint8_t *codes = malloc(N);
    uint16_t *meta = malloc(sizeof *meta * 2 * N);
    float *absmax = malloc(sizeof *absmax * N / 256);
    int8_t *q = malloc(N);
    cr_assert(x && ref && out && codes && meta && absmax && q);
    fill_mixed(x, N);
    for (int shift = 0; shift < 2; shift++) { /* 0: aligned, 1: one float off */
        use(MT_ISA_SCALAR);
        cr_assert_eq(mt_q8_quantize(x, N, 256, q, absmax), 0);
        cr_assert_eq(mt_q8_dequantize(q, absmax, N, 256, ref + shift), 0);
        for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
            if (!mt_isa_supported((enum mt_isa)isa))
                continue;
            use((enum mt_isa)isa);
            /* codes streamed when aligned (shift 0), stored when not */
            int8_t *q2 = (int8_t *)out + shift;
            float *absmax2 = malloc(sizeof *absmax2 * N / 256);
            cr_assert(absmax2);
            cr_assert_eq(mt_q8_quantize(x, N, 256, q2, absmax2), 0);
            cr_assert_eq(memcmp(q, q2, N), 0, "%s q8 codes, shift %d", mt_isa_name((enum mt_isa)isa), shift);
            cr_assert_eq(memcmp(absmax, absmax2, sizeof *absmax2 * N / 256), 0);
            free(absmax2);
            memset(out, 0xff, sizeof *out * (N + 16));
            cr_assert_eq(mt_q8_dequantize(q, absmax, N, 256, out + shift), 0);
            cr_assert_eq(memcmp(ref + shift, out + shift, sizeof *out * N), 0, "%s q8, shift %d",
                         mt_isa_name((enum mt_isa)isa), shift);
        }
        for (int kind = 0; kind < 2; kind++) {
            use(MT_ISA_SCALAR);
            cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, 4, 32, codes, meta), 0);
            cr_assert_eq(mt_kv_dequantize((enum mt_kv_kind)kind, codes, meta, T, C, 4, 32, ref + shift), 0);
            for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
                if (!mt_isa_supported((enum mt_isa)isa))
                    continue;
                use((enum mt_isa)isa);
                /* codes streamed when 64-byte aligned (shift 0), stored when not */
                uint8_t *c2 = (uint8_t *)out + shift;
                uint16_t *m2 = malloc(sizeof *m2 * 2 * N);
                cr_assert(m2);
                cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, 4, 32, c2, m2), 0);
                cr_assert_eq(memcmp(codes, c2, N / 2), 0, "%s kv codes kind %d, shift %d",
                             mt_isa_name((enum mt_isa)isa), kind, shift);
                cr_assert_eq(memcmp(meta, m2, N / 32 * 2 * sizeof *m2), 0);
                free(m2);
                memset(out, 0xff, sizeof *out * (N + 16));
                cr_assert_eq(mt_kv_dequantize((enum mt_kv_kind)kind, codes, meta, T, C, 4, 32, out + shift), 0);
                cr_assert_eq(memcmp(ref + shift, out + shift, sizeof *out * N), 0, "%s kv kind %d, shift %d",
                             mt_isa_name((enum mt_isa)isa), kind, shift);
            }
        }
    }
    use(mt_isa_best());
    free(x), free(ref), free(out), free(codes), free(meta), free(absmax), free(q);
}

Test(kernels, kv_edge_cases)
{
    enum { T = 8, C = 16 };
    float x[T * C], y[T * C];
    uint8_t codes[T * C];
    uint16_t meta[2 * T * C];
    struct mt_kv_layout l;
    cr_assert_eq(mt_kv_layout(MT_KV_KEYS, 7, C, 2, 4, &l), -EINVAL, "tokens not a multiple of G");
    cr_assert_eq(mt_kv_layout(MT_KV_VALUES, T, C, 2, 5, &l), -EINVAL);
    cr_assert_eq(mt_kv_layout(MT_KV_VALUES, T, C, 3, 4, &l), -EINVAL);
    cr_assert_eq(mt_kv_layout(MT_KV_VALUES, T, 2, 2, 2, &l), -EINVAL, "row not whole bytes");
    memset(x, 0, sizeof x);
    cr_assert_eq(mt_kv_quantize(MT_KV_VALUES, x, T, C, 2, 4, codes, meta), 0);
    mt_kv_dequantize(MT_KV_VALUES, codes, meta, T, C, 2, 4, y);
    for (int i = 0; i < T * C; i++)
        cr_assert_eq(y[i], 0.0f, "zeros are exact");
    for (int i = 0; i < T * C; i++)
        x[i] = 0.3f;
    cr_assert_eq(mt_kv_quantize(MT_KV_KEYS, x, T, C, 4, 4, codes, meta), 0);
    mt_kv_dequantize(MT_KV_KEYS, codes, meta, T, C, 4, 4, y);
    for (int i = 0; i < T * C; i++)
        cr_assert_leq(fabs(y[i] - 0.3), mt_kv_error_bound(mt_f32_from_f16(meta[0]), mt_f32_from_f16(meta[1]), 4));
    x[5] = NAN;
    cr_assert_eq(mt_kv_quantize(MT_KV_KEYS, x, T, C, 4, 4, codes, meta), -EDOM);
    x[5] = INFINITY;
    cr_assert_eq(mt_kv_quantize(MT_KV_VALUES, x, T, C, 4, 4, codes, meta), -EDOM);
    x[5] = 1e6f;
    cr_assert_eq(mt_kv_quantize(MT_KV_VALUES, x, T, C, 4, 4, codes, meta), -ERANGE);
    /* fp16 helpers: exact values, ties to even, overflow, subnormals */
    cr_assert_eq(mt_f16_from_f32(1.0f), 0x3c00);
    cr_assert_eq(mt_f16_from_f32(-2.0f), 0xc000);
    cr_assert_eq(mt_f16_from_f32(65504.0f), 0x7bff);
    cr_assert_eq(mt_f16_from_f32(65520.0f), 0x7c00);
    cr_assert_eq(mt_f16_from_f32(1.0f + 0x1p-11f), 0x3c00, "tie to even");
    cr_assert_eq(mt_f16_from_f32(1.0f + 3 * 0x1p-11f), 0x3c02);
    cr_assert_eq(mt_f16_from_f32(0x1p-24f), 0x0001);
    cr_assert_eq(mt_f16_from_f32(0x1p-25f), 0x0000);
    for (uint32_t h = 0; h < 0x7c00; h++)
        cr_assert_eq(mt_f16_from_f32(mt_f32_from_f16((uint16_t)h)), h);
}

/* Signed zeros (min and max in the order -0 < +0, whatever the reduction
 * order), groups that are all one value, tiny and fp16-subnormal ranges,
 * and the errors, through the hand-written AVX-512 shapes (keys with
 * channels % 16 == 0, values with group % 16 == 0) and the generic ones:
 * every variant gives the scalar bits and return value. */
Test(kernels, kv_variants_on_edge_values)
{
    enum { T = 32, C = 64 };
    static float x[T * C], y[T * C], y2[T * C];
    static uint8_t codes[T * C], codes2[T * C];
    static uint16_t meta[2 * T * C], meta2[2 * T * C];
    static const size_t groups[] = {16, 32, 8};
    for (int kind = 0; kind < 2; kind++)
        for (unsigned bits = 2; bits <= 8; bits *= 2)
            for (size_t gi = 0; gi < 3; gi++)
                for (int edit = 0; edit < 4; edit++) {
                    size_t G = groups[gi];
                    fill_mixed(x, T * C);
                    for (size_t i = 0; i < T * C; i++) {
                        if (i % 7 == 0)
                            x[i] = (i / 7) % 2 ? -0.0f : 0.0f;
                        if ((i / 64) % 5 == 1)
                            x[i] = (i % 3) ? 0.0f : -0.0f; /* groups of zeros only */
                        if ((i / 64) % 5 == 2)
                            x[i] = 3e-6f * (float)(i % 13) - 1e-5f; /* fp16 subnormals */
                        if ((i / 64) % 5 == 3)
                            x[i] = 0.25f;
                    }
                    int want = 0;
                    if (edit == 1) {
                        x[T * C - 3] = NAN;
                        want = -EDOM;
                    } else if (edit == 2) {
                        x[T * C / 2 + 5] = 3e7f;
                        want = -ERANGE;
                    } else if (edit == 3) {
                        /* both errors: which comes first depends on the
                         * shape; every variant must report the scalar's */
                        x[5] = 3e7f;
                        x[T * C - 1] = -INFINITY;
                        want = kind == MT_KV_VALUES || G < T ? -ERANGE : -EDOM;
                    }
                    struct mt_kv_layout l;
                    cr_assert_eq(mt_kv_layout((enum mt_kv_kind)kind, T, C, bits, G, &l), 0);
                    use(MT_ISA_SCALAR);
                    int r = mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes, meta);
                    cr_assert_eq(r, want, "kind %d bits %u G %zu edit %d: %d", kind, bits, G, edit, r);
                    if (!want)
                        mt_kv_dequantize((enum mt_kv_kind)kind, codes, meta, T, C, bits, G, y);
                    for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
                        if (!mt_isa_supported((enum mt_isa)isa))
                            continue;
                        use((enum mt_isa)isa);
                        cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes2,
                                                    meta2),
                                     want, "%s", mt_isa_name((enum mt_isa)isa));
                        if (want)
                            continue;
                        cr_assert_eq(memcmp(codes, codes2, l.code_bytes), 0, "%s codes kind %d bits %u G %zu",
                                     mt_isa_name((enum mt_isa)isa), kind, bits, G);
                        cr_assert_eq(memcmp(meta, meta2, l.meta_bytes), 0, "%s meta kind %d bits %u G %zu",
                                     mt_isa_name((enum mt_isa)isa), kind, bits, G);
                        mt_kv_dequantize((enum mt_kv_kind)kind, codes, meta, T, C, bits, G, y2);
                        cr_assert_eq(memcmp(y, y2, sizeof y), 0, "%s dequant", mt_isa_name((enum mt_isa)isa));
                    }
                    if (want)
                        continue;
                    /* a group mixing -0 and +0 with min 0 has zero point -0 */
                    if (kind == MT_KV_VALUES && G == 16) {
                        size_t grp = 64 / G; /* row 1: groups of zeros only */
                        cr_assert_eq(meta[2 * grp], 0x8000);
                        cr_assert_eq(meta[2 * grp + 1], 0x0000);
                    }
                }
    use(mt_isa_best());
}

/* Values exactly halfway between two codes, in groups whose scale has no
 * exact reciprocal (0.75 and 0.625 times a power of two): every variant
 * must round each tie as the scalar division does (to even); a variant
 * that multiplied by the reciprocal instead would miss some. */
Test(kernels, kv_variants_round_ties_as_the_division)
{
    enum { T = 64, C = 64 };
    static float x[T * C];
    static uint8_t codes[T * C], codes2[T * C];
    static uint16_t meta[2 * T * C], meta2[2 * T * C];
    static const float scales[] = {0.75f / 16, 0.625f / 8, 0.75f * 4};
    for (int kind = 0; kind < 2; kind++)
        for (unsigned bits = 2; bits <= 8; bits *= 2)
            for (size_t si = 0; si < 3; si++)
                for (size_t G = 16; G <= 32; G += 16) {
                    unsigned levels = (1u << bits) - 1u;
                    float sc = scales[si];
                    /* every group (G rows of a channel, or G channels of a
                     * row) holds 0 and levels * sc, the rest on ties */
                    for (size_t t = 0; t < T; t++)
                        for (size_t c = 0; c < C; c++) {
                            size_t k = (t + c) % G, j = (t * C + c) * 7919u % levels;
                            x[t * C + c] = k == 0   ? 0.0f
                                           : k == 1 ? (float)levels * sc
                                                    : ((float)j + 0.5f) * sc;
                        }
                    struct mt_kv_layout l;
                    cr_assert_eq(mt_kv_layout((enum mt_kv_kind)kind, T, C, bits, G, &l), 0);
                    use(MT_ISA_SCALAR);
                    cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes, meta), 0);
                    /* the ties really are ties: code j or j + 1, the even one */
                    size_t row_bytes = C * bits / 8;
                    unsigned q = code_at(codes, row_bytes, 2, 1, bits);
                    size_t j = (2 * C + 1) * 7919u % levels;
                    if ((3 % G) > 1)
                        cr_assert_eq(q, (j % 2) ? j + 1 : j, "kind %d bits %u: code %u for %zu.5", kind, bits, q, j);
                    for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
                        if (!mt_isa_supported((enum mt_isa)isa))
                            continue;
                        use((enum mt_isa)isa);
                        cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, G, codes2, meta2), 0);
                        cr_assert_eq(memcmp(codes, codes2, l.code_bytes), 0, "%s codes kind %d bits %u scale %g G %zu",
                                     mt_isa_name((enum mt_isa)isa), kind, bits, (double)sc, G);
                        cr_assert_eq(memcmp(meta, meta2, l.meta_bytes), 0, "%s meta", mt_isa_name((enum mt_isa)isa));
                    }
                }
    use(mt_isa_best());
}

/* The CUDA KV quantizers code without a division (kernels/cuda/kernels.cu,
 * kv_code_d): q0 = a * r with r = RN(1/d), one residual step by FMA, round
 * to nearest even by adding 1.5 * 2^23, the code the low bits. The same
 * IEEE operations here must give mt_kv_code's code at every rounding tie
 * between two of the 256 levels, and the 4 floats either side, for every
 * positive fp16 scale (the device checks 16 either side, on itself). */
Test(kernels, kv_division_free_code_matches_the_division)
{
    long bad = 0, n = 0;
    for (uint32_t h = 1; h < 0x7c00; h++) {
        float d = mt_f32_from_f16((uint16_t)h), r = 1.0f / d;
        for (unsigned k = 0; k < 255; k++) {
            uint32_t tb;
            float t = ((float)k + 0.5f) * d;
            memcpy(&tb, &t, sizeof tb);
            for (int off = -4; off <= 4; off++) {
                if (off < 0 && tb < (uint32_t)-off)
                    continue;
                uint32_t xb = tb + (uint32_t)off, qb;
                float x, q0, q;
                memcpy(&x, &xb, sizeof x);
                q0 = x * r;
                q = fmaf(fmaf(-q0, d, x), r, q0) + 12582912.0f;
                memcpy(&qb, &q, sizeof qb);
                bad += (qb & 255u) != (uint32_t)mt_kv_code(x, 0.0f, d, 255);
                n++;
            }
        }
    }
    cr_assert_eq(bad, 0, "%ld of %ld codes differ from the division's", bad, n);
    cr_assert_gt(n, 70000000L);
}

/* ---- latent ------------------------------------------------------------ */

/* What mti_parallel handed each part: its range and its thread. */
struct seen {
    pthread_mutex_t mu;
    size_t n, begin[16], end[16];
    pthread_t who[16];
};

static int record_part(void *ctx, size_t begin, size_t end)
{
    struct seen *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->n < 16) {
        s->begin[s->n] = begin;
        s->end[s->n] = end;
        s->who[s->n] = pthread_self();
    }
    s->n++;
    pthread_mutex_unlock(&s->mu);
    return begin == 0 ? 0 : -(int)begin; /* later parts fail with their start */
}

Test(kernels, parallel_cuts_contiguous_parts_on_their_own_threads)
{
    cr_assert_geq(mt_threads_available(), 1u);
    cr_assert_eq(mt_threads_use(0), -EINVAL);
    cr_assert_eq(mt_threads_use(MT_THREADS_MAX + 1), -EINVAL);
    cr_assert_eq(mt_threads_current(), 1u);
    /* units of 64 KiB: 100 of them make at most 6 parts of 1 MiB */
    static const struct { unsigned threads; size_t units, unit_bytes, parts; } cases[] = {
        {1, 100, 65536, 1}, {4, 100, 65536, 4}, {8, 100, 65536, 6}, {8, 15, 65536, 0},
        {3, 7, 4u << 20, 3}, {16, 2, 4u << 20, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
        cr_assert_eq(mt_threads_use(cases[c].threads), 0);
        size_t want = cases[c].parts ? cases[c].parts : 1;
        int r = mti_parallel(cases[c].units, cases[c].unit_bytes, record_part, &s);
        cr_assert_eq(s.n, want, "case %zu: %zu parts", c, s.n);
        /* sorted by start, the parts tile [0, units) */
        for (size_t i = 0; i < s.n; i++)
            for (size_t k = i + 1; k < s.n; k++)
                if (s.begin[k] < s.begin[i]) {
                    size_t b = s.begin[i], e = s.end[i];
                    pthread_t w = s.who[i];
                    s.begin[i] = s.begin[k], s.end[i] = s.end[k], s.who[i] = s.who[k];
                    s.begin[k] = b, s.end[k] = e, s.who[k] = w;
                }
        size_t at = 0;
        for (size_t i = 0; i < s.n; i++) {
            cr_assert_eq(s.begin[i], at, "case %zu part %zu", c, i);
            cr_assert_gt(s.end[i], s.begin[i]);
            at = s.end[i];
            /* the first part on the caller, each other on a thread of its own */
            cr_assert_eq(pthread_equal(s.who[i], pthread_self()) != 0, i == 0);
            for (size_t k = 0; k < i; k++)
                cr_assert(!pthread_equal(s.who[i], s.who[k]));
        }
        cr_assert_eq(at, cases[c].units);
        /* the error of the first failing part in unit order */
        cr_assert_eq(r, s.n > 1 ? -(int)s.begin[1] : 0, "case %zu", c);
    }
    /* a forked child of a process whose pool has workers gets a pool of
     * its own (else its call would wait for workers it does not have) */
    cr_assert_eq(mt_threads_use(4), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(20);
        struct seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
        int r = mti_parallel(100, 65536, record_part, &s);
        _exit(s.n == 4 && r < 0 ? 0 : 1);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child's call failed (status %#x)", st);
    mt_threads_use(1);
}

/* Two threads calling kernels at once: one has the pool, the other runs
 * alone; both get their bits. */
struct q8_call {
    const float *x;
    size_t n;
    int8_t *codes;
    float *absmax;
    int ret;
};

static void *q8_call_main(void *arg)
{
    struct q8_call *c = arg;
    for (int i = 0; i < 20 && !c->ret; i++)
        c->ret = mt_q8_quantize(c->x, c->n, 256, c->codes, c->absmax);
    return NULL;
}

Test(kernels, parallel_calls_from_two_threads_at_once)
{
    enum { N = 1 << 21 };
    float *x = malloc(sizeof *x * N), *a0 = malloc(sizeof *a0 * N / 256);
    int8_t *c0 = malloc(N);
    struct q8_call calls[2];
    cr_assert(x && a0 && c0);
    fill_mixed(x, N);
    cr_assert_eq(mt_q8_quantize(x, N, 256, c0, a0), 0);
    mt_threads_use(3);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        calls[i] = (struct q8_call){x, N, malloc(N), malloc(sizeof(float) * N / 256), 0};
        cr_assert(calls[i].codes && calls[i].absmax);
        cr_assert_eq(pthread_create(&t[i], NULL, q8_call_main, &calls[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(calls[i].ret, 0);
        cr_assert_eq(memcmp(calls[i].codes, c0, N), 0);
        cr_assert_eq(memcmp(calls[i].absmax, a0, sizeof *a0 * N / 256), 0);
        free(calls[i].codes), free(calls[i].absmax);
    }
    mt_threads_use(1);
    free(x), free(a0), free(c0);
}

/* Every kernel that splits its work gives the same bits, and the same
 * error, on any number of threads. */
Test(kernels, threads_change_no_bit_and_no_error)
{
    enum { T = 2048, C = 1024, N = T * C, NQ = N - 37 }; /* 8 MiB of fp32; q8 with a short last block */
    float *x = aligned_alloc(64, sizeof *x * N), *y = aligned_alloc(64, sizeof *y * N);
    float *y1 = aligned_alloc(64, sizeof *y1 * N);
    uint8_t *c1 = aligned_alloc(64, N), *c = aligned_alloc(64, N);
    uint16_t *m1 = malloc(sizeof *m1 * N / 16), *m = malloc(sizeof *m * N / 16);
    float *a1 = malloc(sizeof *a1 * N / 16), *a = malloc(sizeof *a * N / 16);
    cr_assert(x && y && y1 && c1 && c && m1 && m && a1 && a);
    fill_mixed(x, N);
    static const unsigned counts[] = {2, 3, 7};
    for (int isa = 0; isa < MT_ISA_COUNT; isa++) {
        if (!mt_isa_supported((enum mt_isa)isa))
            continue;
        use((enum mt_isa)isa);
        const char *in = mt_isa_name((enum mt_isa)isa);
        for (size_t block = 100; block <= 256; block += 156) {
            size_t nb = mt_q8_blocks(NQ, block);
            mt_threads_use(1);
            cr_assert_eq(mt_q8_quantize(x, NQ, block, (int8_t *)c1, a1), 0);
            cr_assert_eq(mt_q8_dequantize((int8_t *)c1, a1, NQ, block, y1), 0);
            for (size_t k = 0; k < 3; k++) {
                mt_threads_use(counts[k]);
                memset(c, 0, N), memset(y, 0, sizeof *y * N);
                cr_assert_eq(mt_q8_quantize(x, NQ, block, (int8_t *)c, a), 0);
                cr_assert_eq(mt_q8_dequantize((int8_t *)c1, a1, NQ, block, y), 0);
                cr_assert_eq(memcmp(c1, c, NQ), 0, "%s q8 block %zu, %u threads", in, block, counts[k]);
                cr_assert_eq(memcmp(a1, a, nb * sizeof *a), 0);
                cr_assert_eq(memcmp(y1, y, NQ * sizeof *y), 0);
            }
        }
        for (int kind = 0; kind < 2; kind++)
            for (unsigned bits = 2; bits <= 8; bits *= 2) {
                size_t cb = (size_t)N * bits / 8, mb = (size_t)N / 32 * 2 * sizeof *m;
                mt_threads_use(1);
                cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, 32, c1, m1), 0);
                cr_assert_eq(mt_kv_dequantize((enum mt_kv_kind)kind, c1, m1, T, C, bits, 32, y1), 0);
                for (size_t k = 0; k < 3; k++) {
                    mt_threads_use(counts[k]);
                    memset(c, 0, cb), memset(m, 0, mb), memset(y, 0, sizeof *y * N);
                    cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, x, T, C, bits, 32, c, m), 0);
                    cr_assert_eq(mt_kv_dequantize((enum mt_kv_kind)kind, c1, m1, T, C, bits, 32, y), 0);
                    cr_assert_eq(memcmp(c1, c, cb), 0, "%s kv kind %d %u-bit, %u threads", in, kind,
                                 bits, counts[k]);
                    cr_assert_eq(memcmp(m1, m, mb), 0);
                    cr_assert_eq(memcmp(y1, y, sizeof *y * N), 0);
                }
            }
        /* two bad groups in different parts: the first in token order wins,
         * as it does on one thread */
        for (int first_nan = 0; first_nan < 2; first_nan++)
            for (int kind = 0; kind < 2; kind++) {
                float *bad = y;
                memcpy(bad, x, sizeof *x * N);
                bad[(first_nan ? 100 : 1900) * C + 5] = NAN;
                bad[(first_nan ? 1900 : 100) * C + 7] = -1e6f; /* its zero point overflows fp16 */
                int want = first_nan ? -EDOM : -ERANGE;
                for (unsigned t = 1; t <= 7; t += 3) {
                    mt_threads_use(t);
                    cr_assert_eq(mt_kv_quantize((enum mt_kv_kind)kind, bad, T, C, 4, 32, c, m), want,
                                 "%s kind %d, %u threads", in, kind, t);
                }
            }
    }
    /* AdamW on 3 and 7 threads against 1, from the same state */
    {
        enum { B = 256 };
        size_t nb = mt_q8_blocks(NQ, B);
        float *p1 = y1, *p = y, *g = malloc(sizeof *g * N);
        int8_t *mv1 = malloc(2 * (size_t)N), *mv = malloc(2 * (size_t)N);
        float *s1 = malloc(sizeof *s1 * 2 * nb), *s = malloc(sizeof *s * 2 * nb);
        cr_assert(g && mv1 && mv && s1 && s);
        fill(g, N, 1e-2f);
        use(mt_isa_best());
        for (unsigned t = 1; t <= 7; t += 2) {
            mt_threads_use(t);
            float *pp = t == 1 ? p1 : p, *ss = t == 1 ? s1 : s;
            int8_t *mm = t == 1 ? mv1 : mv;
            memcpy(pp, x, sizeof *x * NQ);
            memset(mm, 0, 2 * (size_t)N), memset(ss, 0, sizeof *ss * 2 * nb);
            for (long step = 1; step <= 2; step++)
                cr_assert_eq(mt_adamw8_step(pp, g, mm, ss, mm + N, ss + nb, NQ, B, &hp, step), 0);
            if (t > 1) {
                cr_assert_eq(memcmp(p1, p, sizeof *p * NQ), 0, "adamw8 params, %u threads", t);
                cr_assert_eq(memcmp(mv1, mv, 2 * (size_t)N), 0);
                cr_assert_eq(memcmp(s1, s, sizeof *s * 2 * nb), 0);
            }
        }
        free(g), free(mv1), free(mv), free(s1), free(s);
    }
    /* offload copies on 3 threads (a short last chunk), byte for byte */
    for (unsigned t = 1; t <= 3; t += 2) {
        mt_threads_use(t);
        memset(y, 0, sizeof *y * N);
        cr_assert_eq(mt_offload_copy(y, x, sizeof *x * N - 100, 65536), 0);
        cr_assert_eq(memcmp(y, x, sizeof *x * N - 100), 0, "offload copy, %u threads", t);
        cr_assert_eq(((char *)y)[sizeof *x * N - 100], 0);
    }
    mt_threads_use(1);
    use(mt_isa_best());
    free(x), free(y), free(y1), free(c1), free(c), free(m1), free(m), free(a1), free(a);
}

Test(kernels, latent_exact_rank_and_pythagoras)
{
    enum { R = 200, D = 64, K = 8 };
    static float a[R * K], b[K * D], x[R * D], basis[D * K], z[R * K], xh[R * D];
    static float basis2[D * K], z2[R * K], xh2[R * D];
    fill(a, R * K, 1.0f);
    fill(b, K * D, 1.0f);
    use(MT_ISA_SCALAR);
    mt_matmul(a, b, x, R, K, D);
    cr_assert_eq(mt_latent_basis(x, R, D, K, 2, 1, basis), 0);
    cr_assert_eq(mt_latent_project(x, R, D, basis, K, z), 0);
    cr_assert_eq(mt_latent_reconstruct(z, R, K, basis, D, xh), 0);
    /* orthonormal columns: Gram-Schmidt in double leaves only the float
     * rounding of each entry, |B^T B - I| <= D * 2u per entry */
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) {
            double dot = 0;
            for (int d = 0; d < D; d++)
                dot += (double)basis[d * K + i] * basis[d * K + j];
            cr_assert_leq(fabs(dot - (i == j)), D * 2 * U);
        }
    /* x has rank K: the basis spans its rows, so x_hat = x up to the
     * rounding of the basis (relative D * 2u per entry, above) and of the
     * two matmuls (gamma_D and gamma_K times the sums of |terms|) */
    double d2 = 0, x2 = 0, z2n = 0;
    for (int i = 0; i < R * D; i++) {
        d2 += ((double)x[i] - xh[i]) * ((double)x[i] - xh[i]);
        x2 += (double)x[i] * x[i];
    }
    for (int i = 0; i < R * K; i++)
        z2n += (double)z[i] * z[i];
    double tol = (2.0 * D * 2 * U + (D + K) * U) * sqrt((double)D * K);
    cr_assert_leq(sqrt(d2 / x2), tol, "rank-%d data reconstructs with rel err %g", K, sqrt(d2 / x2));
    /* Pythagoras: ||x||^2 = ||z||^2 + ||x - x_hat||^2 for an orthonormal
     * basis, up to the same rounding */
    cr_assert_leq(fabs(x2 - z2n - d2) / x2, 2 * tol);
    for (int isa = 1; isa < MT_ISA_COUNT; isa++) {
        if (!mt_isa_supported((enum mt_isa)isa))
            continue;
        use((enum mt_isa)isa);
        mt_latent_basis(x, R, D, K, 2, 1, basis2);
        mt_latent_project(x, R, D, basis2, K, z2);
        mt_latent_reconstruct(z2, R, K, basis2, D, xh2);
        cr_assert_eq(memcmp(basis, basis2, sizeof basis), 0, "%s basis", mt_isa_name((enum mt_isa)isa));
        cr_assert_eq(memcmp(z, z2, sizeof z), 0);
        cr_assert_eq(memcmp(xh, xh2, sizeof xh), 0);
    }
    cr_assert_eq(mt_latent_basis(x, R, D, D + 1, 1, 1, basis), -EINVAL);
}

Test(kernels, latent_iterated_basis_beats_random)
{
    enum { R = 300, D = 48, K = 6 };
    static float x[R * D], b0[D * K], b2[D * K], z[R * K], xh[R * D];
    fill(x, R * D, 1.0f);
    for (int i = 0; i < R; i++) /* a dominant 3-dim subspace */
        for (int d = 0; d < 3; d++)
            x[i * D + d] *= 20.0f;
    mt_latent_basis(x, R, D, K, 0, 3, b0);
    mt_latent_basis(x, R, D, K, 4, 3, b2);
    double e[2];
    float *bs[2] = {b0, b2};
    for (int k = 0; k < 2; k++) {
        mt_latent_project(x, R, D, bs[k], K, z);
        mt_latent_reconstruct(z, R, K, bs[k], D, xh);
        double d2 = 0;
        for (int i = 0; i < R * D; i++)
            d2 += ((double)x[i] - xh[i]) * ((double)x[i] - xh[i]);
        e[k] = d2;
    }
    cr_assert_lt(e[1], e[0] / 10, "subspace iteration: %g, random: %g", e[1], e[0]);
}

/* ---- offload ----------------------------------------------------------- */

Test(kernels, offload_copy_and_pinned)
{
    size_t bytes = (3u << 20) + 123;
    struct mt_pinned pin = {0};
    cr_assert_eq(mt_pinned_alloc(bytes, &pin), 0);
    char *src = malloc(bytes);
    fill((float *)src, bytes / 4, 1.0f);
    cr_assert_eq(mt_offload_copy(pin.ptr, src, bytes, 65536), 0);
    cr_assert_eq(memcmp(pin.ptr, src, bytes), 0);
    cr_assert_eq(mt_offload_copy(pin.ptr, src, bytes, 0), -EINVAL);
    mt_pinned_free(&pin);
    mt_pinned_free(&pin);
    mt_pinned_free(NULL);
    free(src);
}

static void file_round_trip(const char *dir)
{
    static const size_t sizes[] = {1, 4096, 65536 * 3, (5u << 20) + 4097};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t bytes = sizes[k];
        char path[512];
        snprintf(path, sizeof path, "%s/mt-offload-test-%d-%zu", dir, (int)getpid(), k);
        char *src = malloc(bytes), *back = malloc(bytes);
        for (size_t i = 0; i < bytes; i++)
            src[i] = (char)(rnd() & 0xff);
        memset(back, 0, bytes);
        int direct = -1;
        cr_assert_eq(mt_offload_file_write(path, src, bytes, 65536, &direct), 0, "write %s", path);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0);
        cr_assert_eq((size_t)st.st_size, bytes, "file size");
        cr_assert_eq(mt_offload_file_read(path, back, bytes, 65536, &direct), 0);
        cr_assert_eq(memcmp(src, back, bytes), 0, "%zu bytes through %s (direct %d)", bytes, dir, direct);
        /* asking for more than the file holds */
        char *more = malloc(bytes + 10);
        cr_assert_eq(mt_offload_file_read(path, more, bytes + 10, 65536, NULL), -EIO);
        free(more);
        unlink(path);
        free(src);
        free(back);
    }
}

Test(kernels, offload_file_round_trip)
{
    char tmpl[] = "/tmp/mt-kernels-XXXXXX";
    char *dir = mkdtemp(tmpl);
    cr_assert_not_null(dir);
    file_round_trip(dir); /* often tmpfs: buffered */
    file_round_trip(".");  /* the build tree: O_DIRECT where it is taken */
    rmdir(dir);
    char path[64];
    snprintf(path, sizeof path, "%s/none", tmpl);
    char b[8];
    cr_assert_eq(mt_offload_file_read(path, b, sizeof b, 4096, NULL), -ENOENT);
}

/* ---- measurements ------------------------------------------------------ */

Test(kernels, measure_functions_report)
{
    struct mt_measure m;
    cr_assert_eq(mt_measure_q8(100000, 256, 2, &m), 0);
    cr_assert_float_eq(m.bytes_per_value, mt_q8_bytes_per_value(256), 1e-3);
    cr_assert_gt(m.gbps, 0);
    cr_assert_gt(m.baseline_gbps, 0);
    cr_assert_eq(mt_measure_adamw8(100000, 256, 2, &m), 0);
    cr_assert_float_eq(m.aux, 2 * mt_q8_bytes_per_value(256), 1e-3);
    cr_assert_eq(mt_measure_kv(MT_KV_KEYS, 256, 128, 2, 32, 2, &m), 0);
    cr_assert_float_eq(m.bytes_per_value * 8, 3.0, 1e-9);
    cr_assert_eq(mt_measure_latent(512, 128, 16, 1, &m), 0);
    cr_assert_float_eq(m.bytes_after, 4.0 * (512 * 16 + 128 * 16), 1e-9);
    cr_assert_eq(mt_measure_offload_pinned(1 << 20, 1 << 16, 2, &m), 0);
    cr_assert_eq(m.max_abs_err, 0);
    cr_assert_eq(mt_measure_offload_file(".", 1 << 20, 1 << 16, &m), 0);
    cr_assert_eq(m.max_abs_err, 0);
    cr_assert_eq(mt_measure_recompute(64, 64, 64, 2, &m), 0);
    cr_assert_gt(m.aux, 0);
    cr_assert_eq(mt_measure_q8(0, 256, 2, &m), -EINVAL);
}
