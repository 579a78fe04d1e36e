/* measure.c: one call per technique that runs its kernel at given sizes on
 * synthetic data and reports the numbers the simulator assumes (bytes
 * after compression, error, throughput, time), for `memtrace verify` and
 * the benchmark.
 *
 * Data: seeded, approximately normal (sum of four uniforms), so runs are
 * repeatable. Times are the best of `reps` runs after one untimed run that
 * faults the pages in; the memcpy baseline is timed in the same call on the
 * kernel's own input buffer, best of as many runs (for q8, AdamW and KV
 * each memcpy run right before a kernel run, so both see the same moments
 * of a shared machine). The baseline memcpy runs on as many threads as the
 * kernels (mti_memcpy), so kernel and limit use the same cores.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels-internal.h"

/* Buffers as a framework hands them over: 64-byte aligned (PyTorch's CPU
 * allocator aligns to 64), so the kernels see the alignment they would in
 * use (the dequantizers stream large aligned outputs). free() releases it. */
static void *buf(size_t bytes)
{
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_normal(float *x, size_t n, uint64_t seed, float sigma)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = mix(&seed);
        float u = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
                  (float)(r >> 48);
        /* sum of 4 uniforms on [0, 65536): mean 131070, sd 37837 */
        x[i] = (u - 131070.0f) * (sigma / 37837.0f);
    }
}

/* Best time of mti_memcpy(dst, src, bytes) over reps runs. */
static double time_memcpy(void *dst, const void *src, size_t bytes, unsigned reps)
{
    double best = INFINITY;
    mti_memcpy(dst, src, bytes);
    for (unsigned r = 0; r < reps; r++) {
        double t0 = mti_now();
        mti_memcpy(dst, src, bytes);
        double t = mti_now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

static void errors(const float *x, const float *y, size_t n, struct mt_measure *m)
{
    double mx = 0, sum = 0, d2 = 0, x2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - y[i]);
        mx = d > mx ? d : mx;
        sum += d;
        d2 += d * d;
        x2 += (double)x[i] * x[i];
    }
    m->max_abs_err = mx;
    m->mean_abs_err = n ? sum / (double)n : 0;
    m->rel_err = x2 > 0 ? sqrt(d2 / x2) : 0;
}

/* BEST, each run of stmt right after a timed mti_memcpy(dst, src, bytes) whose
 * best time goes to mc (not reset: several kernels of one call share it).
 * Alternating the two puts kernel and limit in the same moments of a
 * machine whose other load comes and goes. */
#define BEST_BESIDE_MEMCPY(reps, best, mc, dst, src, bytes, stmt)                                  \
    do {                                                                                          \
        (best) = INFINITY;                                                                        \
        for (unsigned r_ = 0; r_ < (reps); r_++) {                                                \
            double m0_ = mti_now();                                                               \
            mti_memcpy((dst), (src), (bytes));                                                    \
            double m_ = mti_now() - m0_;                                                          \
            (mc) = m_ < (mc) ? m_ : (mc);                                                         \
            double t0_ = mti_now();                                                               \
            stmt;                                                                                 \
            double t_ = mti_now() - t0_;                                                          \
            (best) = t_ < (best) ? t_ : (best);                                                   \
        }                                                                                         \
    } while (0)

#define BEST(reps, best, stmt)                                                                    \
    do {                                                                                          \
        (best) = INFINITY;                                                                        \
        for (unsigned r_ = 0; r_ < (reps); r_++) {                                                \
            double t0_ = mti_now();                                                               \
            stmt;                                                                                 \
            double t_ = mti_now() - t0_;                                                          \
            (best) = t_ < (best) ? t_ : (best);                                                   \
        }                                                                                         \
    } while (0)

/* A codec's figures: `before` bytes of fp32 in, `after` bytes stored,
 * quantize in tq and dequantize in td seconds, memcpy of the input in tm;
 * GB/s count bytes read plus written. */
static void codec_figures(struct mt_measure *m, double before, double after, double tq, double td,
                          double tm, size_t n)
{
    m->bytes_before = before;
    m->bytes_after = after;
    m->bytes_per_value = after / (double)n;
    m->seconds = tq;
    m->gbps = (before + after) / tq / 1e9;
    m->aux = (before + after) / td / 1e9;
    m->baseline_gbps = 2.0 * before / tm / 1e9;
}

int mt_measure_q8(size_t n, size_t block, unsigned reps, struct mt_measure *ret)
{
    if (!n || !block || !reps)
        return -EINVAL;
    size_t nb = mt_q8_blocks(n, block);
    float *x = buf(n * sizeof *x), *y = buf(n * sizeof *y), *a = malloc(nb * sizeof *a);
    int8_t *c = buf(n);
    int r = -ENOMEM;
    if (!x || !y || !a || !c)
        goto out;
    fill_normal(x, n, 1, 1.0f);
    struct mt_measure m = {0};
    double tq, td, tm = INFINITY;
    mt_q8_quantize(x, n, block, c, a);
    memcpy(y, x, n * sizeof *x);
    BEST_BESIDE_MEMCPY(reps, tq, tm, y, x, n * sizeof *x, mt_q8_quantize(x, n, block, c, a));
    BEST_BESIDE_MEMCPY(reps, td, tm, y, x, n * sizeof *x, mt_q8_dequantize(c, a, n, block, y));
    errors(x, y, n, &m);
    codec_figures(&m, 4.0 * (double)n, (double)n + 4.0 * (double)nb, tq, td, tm, n);
    *ret = m;
    r = 0;
out:
    free(x);
    free(y);
    free(a);
    free(c);
    return r;
}

int mt_measure_adamw8(size_t n, size_t block, unsigned reps, struct mt_measure *ret)
{
    if (!n || !block || !reps)
        return -EINVAL;
    size_t nb = mt_q8_blocks(n, block);
    float *p = buf(n * 4), *p32 = buf(n * 4), *p0 = buf(n * 4), *g = buf(n * 4);
    float *m32 = calloc(n, 4), *v32 = calloc(n, 4), *ma = calloc(nb, 4), *va = calloc(nb, 4);
    float *tmp = malloc(n * 4);
    int8_t *m8 = calloc(n, 1), *v8 = calloc(n, 1);
    int r = -ENOMEM;
    if (!p || !p32 || !p0 || !g || !m32 || !v32 || !ma || !va || !tmp || !m8 || !v8)
        goto out;
    fill_normal(p0, n, 2, 0.02f);
    fill_normal(g, n, 3, 1e-3f);
    memcpy(p, p0, n * 4);
    memcpy(p32, p0, n * 4);
    const struct mt_adamw_params hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    struct mt_measure m = {0};
    double best = INFINITY, tm = INFINITY;
    for (unsigned s = 1; s <= reps + 1; s++) {
        double m0 = mti_now();
        mti_memcpy(tmp, p, n * 4); /* the limit, timed beside each step */
        double mt = mti_now() - m0;
        if (s > 1)
            tm = mt < tm ? mt : tm;
        double t0 = mti_now();
        if ((r = mt_adamw8_step(p, g, m8, ma, v8, va, n, block, &hp, (long)s)))
            goto out;
        double t = mti_now() - t0;
        if (s > 1)
            best = t < best ? t : best;
        mt_adamw32_step(p32, g, m32, v32, n, &hp, (long)s);
    }
    mt_q8_dequantize(m8, ma, n, block, tmp);
    errors(m32, tmp, n, &m);
    /* rel_err: of the total parameter change, int8 state against fp32 */
    double d2 = 0, u2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)p[i] - p32[i], u = (double)p32[i] - p0[i];
        d2 += d * d;
        u2 += u * u;
    }
    m.rel_err = u2 > 0 ? sqrt(d2 / u2) : 0;
    m.bytes_before = 8.0 * (double)n;
    m.bytes_after = 2.0 * ((double)n + 4.0 * (double)nb);
    m.bytes_per_value = m.bytes_after / (double)n;
    m.aux = m.bytes_per_value;
    m.seconds = best;
    /* p read and written, g read, m and v codes read and written */
    m.gbps = (12.0 * (double)n + 2.0 * m.bytes_after) / best / 1e9;
    m.baseline_gbps = 8.0 * (double)n / tm / 1e9;
    *ret = m;
    r = 0;
out:
    free(p), free(p32), free(p0), free(g), free(m32), free(v32);
    free(ma), free(va), free(tmp), free(m8), free(v8);
    return r;
}

int mt_measure_kv(enum mt_kv_kind kind, size_t tokens, size_t channels, unsigned bits,
                  size_t group, unsigned reps, struct mt_measure *ret)
{
    struct mt_kv_layout l;
    int r = mt_kv_layout(kind, tokens, channels, bits, group, &l);
    if (r < 0)
        return r;
    if (!reps)
        return -EINVAL;
    size_t n = tokens * channels;
    float *x = buf(n * 4), *y = buf(n * 4);
    uint8_t *c = buf(l.code_bytes ? l.code_bytes : 1);
    uint16_t *meta = malloc(l.meta_bytes ? l.meta_bytes : 1);
    r = -ENOMEM;
    if (!x || !y || !c || !meta)
        goto out;
    fill_normal(x, n, 4, 1.0f);
    struct mt_measure m = {0};
    double tq, td, tm = INFINITY;
    if ((r = mt_kv_quantize(kind, x, tokens, channels, bits, group, c, meta)))
        goto out;
    memcpy(y, x, n * 4);
    BEST_BESIDE_MEMCPY(reps, tq, tm, y, x, n * 4,
                       mt_kv_quantize(kind, x, tokens, channels, bits, group, c, meta));
    BEST_BESIDE_MEMCPY(reps, td, tm, y, x, n * 4,
                       mt_kv_dequantize(kind, c, meta, tokens, channels, bits, group, y));
    errors(x, y, n, &m);
    codec_figures(&m, 4.0 * (double)n, (double)(l.code_bytes + l.meta_bytes), tq, td, tm, n);
    *ret = m;
    r = 0;
out:
    free(x);
    free(y);
    free(c);
    free(meta);
    return r;
}

int mt_measure_latent(size_t rows, size_t dim, size_t rank, unsigned reps,
                      struct mt_measure *ret)
{
    if (!rows || !rank || rank > dim || !reps)
        return -EINVAL;
    size_t k = 2 * rank < dim ? 2 * rank : dim;
    float *a = malloc(rows * k * 4), *b = malloc(k * dim * 4), *x = malloc(rows * dim * 4);
    float *xh = malloc(rows * dim * 4), *z = malloc(rows * rank * 4), *basis = malloc(dim * rank * 4);
    int r = -ENOMEM;
    if (!a || !b || !x || !xh || !z || !basis)
        goto out;
    /* effective rank about 2 * rank: component j of the factor scaled by
     * 1 / (1 + j), so the top half carries most of the energy */
    fill_normal(a, rows * k, 5, 1.0f);
    fill_normal(b, k * dim, 6, 1.0f);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < k; j++)
            a[i * k + j] /= (float)(1 + j);
    mt_matmul(a, b, x, rows, k, dim);
    struct mt_measure m = {0};
    double t0 = mti_now();
    if ((r = mt_latent_basis(x, rows, dim, rank, 2, 7, basis)))
        goto out;
    m.aux = mti_now() - t0;
    double t;
    BEST(reps, t, (mt_latent_project(x, rows, dim, basis, rank, z),
                   r = mt_latent_reconstruct(z, rows, rank, basis, dim, xh)));
    if (r)
        goto out;
    errors(x, xh, rows * dim, &m);
    double tm = time_memcpy(xh, x, rows * dim * 4, reps);
    m.bytes_before = 4.0 * (double)(rows * dim);
    m.bytes_after = 4.0 * (double)(rows * rank + dim * rank);
    m.bytes_per_value = m.bytes_after / (double)(rows * dim);
    m.seconds = t;
    m.gbps = (2.0 * m.bytes_before + 2.0 * 4.0 * (double)(rows * rank)) / t / 1e9;
    m.baseline_gbps = 2.0 * m.bytes_before / tm / 1e9;
    *ret = m;
    r = 0;
out:
    free(a), free(b), free(x), free(xh), free(z), free(basis);
    return r;
}

int mt_measure_offload_pinned(size_t bytes, size_t chunk, unsigned reps, struct mt_measure *ret)
{
    if (!bytes || !chunk || !reps)
        return -EINVAL;
    struct mt_pinned pin = {0};
    char *src = malloc(bytes), *plain = malloc(bytes);
    int r = -ENOMEM;
    if (!src || !plain)
        goto out;
    if ((r = mt_pinned_alloc(bytes, &pin)))
        goto out;
    fill_normal((float *)src, bytes / 4, 8, 1.0f);
    memset(plain, 0, bytes);
    struct mt_measure m = {0};
    double t;
    if ((r = mt_offload_copy(pin.ptr, src, bytes, chunk)))
        goto out;
    BEST(reps, t, mt_offload_copy(pin.ptr, src, bytes, chunk));
    double tm = time_memcpy(plain, src, bytes, reps);
    m.bytes_before = m.bytes_after = (double)bytes;
    m.bytes_per_value = 1;
    m.max_abs_err = memcmp(pin.ptr, src, bytes) != 0;
    m.seconds = t;
    m.gbps = 2.0 * (double)bytes / t / 1e9;
    m.baseline_gbps = 2.0 * (double)bytes / tm / 1e9;
    m.aux = pin.locked;
    *ret = m;
    r = 0;
out:
    mt_pinned_free(&pin);
    free(src);
    free(plain);
    return r;
}

int mt_measure_offload_file(const char *dir, size_t bytes, size_t chunk, struct mt_measure *ret)
{
    if (!dir || !bytes || !chunk)
        return -EINVAL;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/mt-offload-XXXXXX", dir) >= (int)sizeof path)
        return -ENAMETOOLONG;
    int fd = mkstemp(path);
    if (fd < 0)
        return -errno;
    close(fd);
    char *src = malloc(bytes), *back = malloc(bytes);
    int r = -ENOMEM, direct = 0;
    if (!src || !back)
        goto out;
    fill_normal((float *)src, bytes / 4, 9, 1.0f);
    memset(back, 0, bytes);
    struct mt_measure m = {0};
    double t0 = mti_now();
    if ((r = mt_offload_file_write(path, src, bytes, chunk, &direct)))
        goto out;
    double tw = mti_now() - t0;
    t0 = mti_now();
    if ((r = mt_offload_file_read(path, back, bytes, chunk, &direct)))
        goto out;
    double tr = mti_now() - t0;
    double tm = time_memcpy(back, src, bytes, 1);
    m.max_abs_err = memcmp(back, src, bytes) != 0;
    m.bytes_before = m.bytes_after = (double)bytes;
    m.bytes_per_value = 1;
    m.seconds = tw;
    m.gbps = (double)bytes / tw / 1e9;
    m.aux = (double)bytes / tr / 1e9;
    m.baseline_gbps = (double)bytes / tm / 1e9;
    *ret = m;
    r = 0;
out:
    unlink(path);
    free(src);
    free(back);
    return r;
}

int mt_measure_recompute(size_t m_, size_t k, size_t n, unsigned reps, struct mt_measure *ret)
{
    if (!m_ || !k || !n || !reps)
        return -EINVAL;
    float *a = malloc(m_ * k * 4), *b = malloc(k * n * 4), *c = malloc(m_ * n * 4);
    int r = -ENOMEM;
    if (!a || !b || !c)
        goto out;
    fill_normal(a, m_ * k, 10, 1.0f);
    fill_normal(b, k * n, 11, 1.0f);
    struct mt_measure m = {0};
    double t;
    mt_matmul(a, b, c, m_, k, n);
    BEST(reps, t, mt_matmul(a, b, c, m_, k, n));
    m.seconds = t;
    m.aux = 2.0 * (double)m_ * (double)k * (double)n / t / 1e9;
    m.gbps = 4.0 * (double)(m_ * k + k * n + m_ * n) / t / 1e9;
    *ret = m;
    r = 0;
out:
    free(a), free(b), free(c);
    return r;
}
