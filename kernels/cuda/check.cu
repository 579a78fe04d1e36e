/* check.cu: kernels-cuda-check, the CUDA kernels against the C reference
 * and their bandwidth against the limits measured in the same run.
 *
 * Correctness (exit status 1 on any FAIL): q8 quantize codes and scales
 * bit-identical to mt_q8_quantize, dequantize bit-identical to
 * mt_q8_dequantize (hence within its bound); three AdamW steps with int8
 * moments bit-identical to mt_adamw8_step (params, codes, scales); KV keys
 * and values at 2, 4 and 8 bits bit-identical to mt_kv_quantize and
 * mt_kv_dequantize; offload round trips byte-identical.
 *
 * Bandwidth (printed, never fails the run): each kernel's bytes read plus
 * written per second beside device-to-device cudaMemcpy (counted the same
 * way) on buffers of --mib MiB (default 256), and the offload copies beside
 * plain pinned cudaMemcpy each way; a figure under its target (80% of D2D
 * for kernels, 90% of pinned cudaMemcpy for offload to and from pinned
 * memory) is marked BELOW. Offload through pinned staging to and from
 * pageable memory, on 1 to 16 host threads, is shown beside the host's own
 * memcpy on as many threads (what bounds it), with no target.
 *
 * Usage: kernels-cuda-check [--mib N] [--reps R]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <thread>
#include <vector>

#include "kernels-cuda.h"

static int failures;

#define CK(call)                                                                                  \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "FAIL cuda: %s: %s (%s:%d)\n", #call, cudaGetErrorString(e_),         \
                    __FILE__, __LINE__);                                                          \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static void verdict(bool ok, const char *what)
{
    printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    if (!ok)
        failures++;
}

static uint64_t rs = 12345;
static uint64_t rnd()
{
    uint64_t z = (rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_mixed(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double mag = pow(10.0, (double)(rnd() % 7) - 3.0);
        x[i] = (float)(((double)(rnd() >> 11) * 0x1p-52 - 1.0) * mag);
    }
}

template <class T> static T *dalloc(size_t n)
{
    T *p;
    CK(cudaMalloc((void **)&p, n * sizeof(T) + 16));
    return p;
}

template <class T> static void up(T *d, const T *h, size_t n)
{
    CK(cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice));
}

template <class T> static void down(T *h, const T *d, size_t n)
{
    CK(cudaMemcpy(h, d, n * sizeof(T), cudaMemcpyDeviceToHost));
}

static size_t first_diff(const void *a, const void *b, size_t bytes)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (size_t i = 0; i < bytes; i++)
        if (x[i] != y[i])
            return i;
    return (size_t)-1;
}

/* Float arrays equal bit for bit, except that any NaN equals any NaN (the
 * GPU's canonical NaN and x86's propagated one differ in their bits). */
static bool same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(isnan(a[i]) && isnan(b[i])) && memcmp(&a[i], &b[i], 4) != 0)
            return false;
    return true;
}

static void check_q8()
{
    const size_t sizes[] = {(1u << 22) + 36, (1u << 20) + 3};
    const size_t blocks[] = {64, 100, 256, 2048, 4096};
    for (size_t n : sizes)
        for (size_t block : blocks) {
            size_t nb = mt_q8_blocks(n, block);
            std::vector<float> x(n), a(nb), a2(nb), y(n), y2(n);
            std::vector<int8_t> c(n), c2(n);
            fill_mixed(x.data(), n);
            for (size_t i = 0; i < block && i < n; i++)
                x[i] = 0.0f;                 /* a zero block */
            if (nb > 3)
                x[2 * block + 1] = INFINITY; /* a poisoned block */
            mt_q8_quantize(x.data(), n, block, c.data(), a.data());
            mt_q8_dequantize(c.data(), a.data(), n, block, y.data());
            float *dx = dalloc<float>(n), *da = dalloc<float>(nb), *dy = dalloc<float>(n);
            int8_t *dc = dalloc<int8_t>(n);
            up(dx, x.data(), n);
            CK(mtc_q8_quantize(dx, n, block, dc, da, 0));
            CK(mtc_q8_dequantize(dc, da, n, block, dy, 0));
            CK(cudaDeviceSynchronize());
            down(c2.data(), dc, n);
            down(a2.data(), da, nb);
            down(y2.data(), dy, n);
            char what[160];
            bool okc = first_diff(c.data(), c2.data(), n) == (size_t)-1;
            snprintf(what, sizeof what, "q8 quantize n=%zu block=%zu: codes and absmax bit-exact vs C", n, block);
            verdict(okc && same_floats(a.data(), a2.data(), nb), what);
            snprintf(what, sizeof what, "q8 dequantize n=%zu block=%zu: bit-exact vs C (within absmax*(1/254+5*2^-24))",
                     n, block);
            verdict(same_floats(y.data(), y2.data(), n), what);
            cudaFree(dx), cudaFree(da), cudaFree(dy), cudaFree(dc);
        }
}

static void check_adamw()
{
    const struct mt_adamw_params hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    const size_t n = (1u << 20) + 5;
    const size_t blocks[] = {256, 2048, 100};
    for (size_t block : blocks) {
        size_t nb = mt_q8_blocks(n, block);
        std::vector<float> p(n), g(n), ma(nb), va(nb), p2(n), ma2(nb), va2(nb), tmp(n);
        std::vector<int8_t> mc(n), vc(n), mc2(n), vc2(n);
        fill_mixed(p.data(), n);
        fill_mixed(tmp.data(), n);
        mt_q8_quantize(tmp.data(), n, block, mc.data(), ma.data());
        for (auto &t : tmp)
            t = fabsf(t) * 1e-3f;
        mt_q8_quantize(tmp.data(), n, block, vc.data(), va.data());
        float *dp = dalloc<float>(n), *dg = dalloc<float>(n), *dma = dalloc<float>(nb),
              *dva = dalloc<float>(nb);
        int8_t *dmc = dalloc<int8_t>(n), *dvc = dalloc<int8_t>(n);
        up(dp, p.data(), n), up(dma, ma.data(), nb), up(dva, va.data(), nb);
        up(dmc, mc.data(), n), up(dvc, vc.data(), n);
        for (long step = 1; step <= 3; step++) {
            fill_mixed(g.data(), n);
            up(dg, g.data(), n);
            mt_adamw8_step(p.data(), g.data(), mc.data(), ma.data(), vc.data(), va.data(), n, block,
                           &hp, step);
            CK(mtc_adamw8_step(dp, dg, dmc, dma, dvc, dva, n, block, &hp, step, 0));
        }
        CK(cudaDeviceSynchronize());
        down(p2.data(), dp, n), down(ma2.data(), dma, nb), down(va2.data(), dva, nb);
        down(mc2.data(), dmc, n), down(vc2.data(), dvc, n);
        bool ok = first_diff(p.data(), p2.data(), n * 4) == (size_t)-1 &&
                  first_diff(mc.data(), mc2.data(), n) == (size_t)-1 &&
                  first_diff(vc.data(), vc2.data(), n) == (size_t)-1 &&
                  same_floats(ma.data(), ma2.data(), nb) && same_floats(va.data(), va2.data(), nb);
        char what[160];
        snprintf(what, sizeof what, "adamw8 3 steps n=%zu block=%zu: params, codes, absmax bit-exact vs C", n, block);
        verdict(ok, what);
        cudaFree(dp), cudaFree(dg), cudaFree(dma), cudaFree(dva), cudaFree(dmc), cudaFree(dvc);
    }
}

/* Every group (G rows of a channel, or G channels of a row) holds 0 and
 * levels * sc and otherwise values exactly halfway between two codes, with
 * a scale whose reciprocal is inexact: a kernel must round each tie as the
 * C division does (one that multiplied by the reciprocal would miss some;
 * such a kernel passed this check on the H200 but was slower, 39-42%
 * against 56-63% of D2D for keys). */
static void fill_ties(float *x, size_t T, size_t C, size_t G, unsigned bits)
{
    const float sc = 0.75f / 16;
    unsigned levels = (1u << bits) - 1u;
    for (size_t t = 0; t < T; t++)
        for (size_t c = 0; c < C; c++) {
            size_t k = (t + c) % G, j = (t * C + c) * 7919u % levels;
            x[t * C + c] = k == 0 ? 0.0f : k == 1 ? (float)levels * sc : ((float)j + 0.5f) * sc;
        }
}

static void check_kv()
{
    /* 200 x 96: a last partial chunk of the values kernel and a partial
     * CTA of columns for the keys ones (shapes a group does not fit are
     * skipped) */
    const size_t shapes[][2] = {{512, 1024}, {200, 96}};
    const unsigned bitss[] = {2, 4, 8};
    const size_t groups[] = {32, 64, 8};
    for (int ties = 0; ties < 2; ties++)
    for (auto &shape : shapes)
    for (int kind = 0; kind < 2; kind++)
        for (unsigned bits : bitss)
            for (size_t G : groups) {
                size_t T = shape[0], C = shape[1];
                struct mt_kv_layout l;
                if ((ties && T != 512) || mt_kv_layout((enum mt_kv_kind)kind, T, C, bits, G, &l))
                    continue;
                size_t n = T * C;
                std::vector<float> x(n), y(n), y2(n);
                std::vector<uint8_t> c(l.code_bytes), c2(l.code_bytes);
                std::vector<uint16_t> m(2 * l.groups), m2(2 * l.groups);
                if (ties)
                    fill_ties(x.data(), T, C, G, bits);
                else
                    fill_mixed(x.data(), n);
                int r = mt_kv_quantize((enum mt_kv_kind)kind, x.data(), T, C, bits, G, c.data(), m.data());
                mt_kv_dequantize((enum mt_kv_kind)kind, c.data(), m.data(), T, C, bits, G, y.data());
                float *dx = dalloc<float>(n), *dy = dalloc<float>(n);
                uint8_t *dc = dalloc<uint8_t>(l.code_bytes);
                uint16_t *dm = dalloc<uint16_t>(2 * l.groups);
                up(dx, x.data(), n);
                CK(mtc_kv_quantize((enum mt_kv_kind)kind, dx, T, C, bits, G, dc, dm, 0));
                CK(mtc_kv_dequantize((enum mt_kv_kind)kind, dc, dm, T, C, bits, G, dy, 0));
                CK(cudaDeviceSynchronize());
                down(c2.data(), dc, l.code_bytes), down(m2.data(), dm, 2 * l.groups), down(y2.data(), dy, n);
                char what[160];
                bool okq = r == 0 && c == c2 && m == m2;
                snprintf(what, sizeof what, "kv %s %u-bit group %zu %zux%zu%s: codes and fp16 meta bit-exact vs C",
                         kind ? "values" : "keys", bits, G, T, C, ties ? " (ties)" : "");
                verdict(okq, what);
                snprintf(what, sizeof what, "kv %s %u-bit group %zu %zux%zu%s: dequantize bit-exact vs C",
                         kind ? "values" : "keys", bits, G, T, C, ties ? " (ties)" : "");
                verdict(same_floats(y.data(), y2.data(), n), what);
                cudaFree(dx), cudaFree(dy), cudaFree(dc), cudaFree(dm);
            }
}

/* ---- bandwidth ---------------------------------------------------------- */

static unsigned reps = 10;

template <class F> static double best_ms(F f)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    f();
    CK(cudaDeviceSynchronize());
    float best = 1e30f;
    for (unsigned r = 0; r < reps; r++) {
        CK(cudaEventRecord(a));
        f();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        best = ms < best ? ms : best;
    }
    cudaEventDestroy(a), cudaEventDestroy(b);
    return best;
}

static void bw_row(const char *name, double bytes, double ms, double limit, double target)
{
    double gbps = bytes / ms / 1e6;
    printf("  %-44s %8.1f GB/s  limit %8.1f  ratio %5.1f%%  %s\n", name, gbps, limit,
           100.0 * gbps / limit,
           target <= 0 ? "(no target)" : gbps >= target * limit ? "ok" : "BELOW target");
}

static void bandwidth(size_t mib)
{
    size_t bytes = mib << 20, n = bytes / 4;
    printf("\nbandwidth, %zu MiB buffers, best of %u (GB/s = bytes read + written per second)\n", mib, reps);
    float *dx, *dy, *dp, *dg;
    int8_t *dc, *dmc, *dvc;
    float *da, *dma, *dva;
    CK(cudaMalloc(&dx, bytes));
    CK(cudaMalloc(&dy, bytes));
    CK(cudaMalloc(&dp, bytes));
    CK(cudaMalloc(&dg, bytes));
    CK(cudaMalloc(&dc, n));
    CK(cudaMalloc(&dmc, n));
    CK(cudaMalloc(&dvc, n));
    CK(cudaMalloc(&da, n));   /* enough for any block >= 4 */
    CK(cudaMalloc(&dma, n));
    CK(cudaMalloc(&dva, n));
    {
        std::vector<float> h(n);
        fill_mixed(h.data(), n);
        up(dx, h.data(), n);
        up(dp, h.data(), n);
        up(dg, h.data(), n);
    }
    CK(cudaMemset(dmc, 0, n));
    CK(cudaMemset(dvc, 0, n));
    CK(cudaMemset(dma, 0, n));
    CK(cudaMemset(dva, 0, n));
    double d2d = 2.0 * bytes / best_ms([&] { CK(cudaMemcpyAsync(dy, dx, bytes, cudaMemcpyDeviceToDevice)); }) / 1e6;
    printf("  %-44s %8.1f GB/s  (the limit for kernels; target 80%%)\n", "device-to-device cudaMemcpy", d2d);
    const size_t blocks[] = {256, 2048};
    for (size_t block : blocks) {
        size_t nb = mt_q8_blocks(n, block);
        char name[96];
        snprintf(name, sizeof name, "q8 quantize block %zu", block);
        bw_row(name, 5.0 * n + 4.0 * nb, best_ms([&] { CK(mtc_q8_quantize(dx, n, block, dc, da, 0)); }), d2d, 0.8);
        snprintf(name, sizeof name, "q8 dequantize block %zu", block);
        bw_row(name, 5.0 * n + 4.0 * nb, best_ms([&] { CK(mtc_q8_dequantize(dc, da, n, block, dy, 0)); }), d2d, 0.8);
        const struct mt_adamw_params hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
        snprintf(name, sizeof name, "adamw8 step block %zu", block);
        bw_row(name, 16.0 * n + 16.0 * nb,
               best_ms([&] { CK(mtc_adamw8_step(dp, dg, dmc, dma, dvc, dva, n, block, &hp, 10, 0)); }), d2d, 0.8);
    }
    const unsigned bitss[] = {2, 4, 8};
    for (int kind = 0; kind < 2; kind++)
        for (unsigned bits : bitss) {
            size_t C = 1024, T = n / C, G = 32;
            struct mt_kv_layout l;
            mt_kv_layout((enum mt_kv_kind)kind, T, C, bits, G, &l);
            uint8_t *kc = (uint8_t *)dc;
            uint16_t *km = (uint16_t *)dma;
            double moved = 4.0 * n + (double)l.code_bytes + (double)l.meta_bytes;
            char name[96];
            snprintf(name, sizeof name, "kv %s %u-bit g32 quantize", kind ? "values" : "keys", bits);
            bw_row(name, moved, best_ms([&] { CK(mtc_kv_quantize((enum mt_kv_kind)kind, dx, T, C, bits, G, kc, km, 0)); }), d2d, 0.8);
            snprintf(name, sizeof name, "kv %s %u-bit g32 dequantize", kind ? "values" : "keys", bits);
            bw_row(name, moved, best_ms([&] { CK(mtc_kv_dequantize((enum mt_kv_kind)kind, kc, km, T, C, bits, G, dy, 0)); }), d2d, 0.8);
        }

    /* offload */
    void *hp_pin, *stage;
    CK(cudaMallocHost(&hp_pin, bytes));
    size_t chunk = 8u << 20;
    const unsigned stage_threads[] = {1, 4, 8, 16}, max_threads = 16;
    CK(cudaMallocHost(&stage, 2 * chunk * max_threads));
    char *pageable = (char *)malloc(bytes);
    memset(pageable, 1, bytes);
    memset(hp_pin, 2, bytes);
    cudaStream_t s[2 * max_threads];
    for (cudaStream_t &st : s)
        CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    /* host timer: the chunked copies synchronize their own streams */
    auto host_ms = [&](auto f) {
        f();
        double best = 1e30;
        for (unsigned r = 0; r < reps; r++) {
            CK(cudaDeviceSynchronize());
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            f();
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6;
            best = ms < best ? ms : best;
        }
        return best;
    };
    double d2h = bytes / host_ms([&] { CK(cudaMemcpy(hp_pin, dx, bytes, cudaMemcpyDeviceToHost)); }) / 1e6;
    double h2d = bytes / host_ms([&] { CK(cudaMemcpy(dy, hp_pin, bytes, cudaMemcpyHostToDevice)); }) / 1e6;
    printf("\noffload, %zu MiB, chunks of %zu MiB on two streams (GB/s = bytes transferred per second)\n", mib, chunk >> 20);
    printf("  %-44s %8.1f GB/s  (limit D2H; target 90%%)\n", "pinned cudaMemcpy device-to-host", d2h);
    printf("  %-44s %8.1f GB/s  (limit H2D; target 90%%)\n", "pinned cudaMemcpy host-to-device", h2d);
    bw_row("offload D2H to pinned, chunked, 2 streams", bytes, host_ms([&] { CK(mtc_offload_d2h(hp_pin, dx, bytes, chunk, s)); }), d2h, 0.9);
    bw_row("offload H2D from pinned, chunked, 2 streams", bytes, host_ms([&] { CK(mtc_offload_h2d(dy, hp_pin, bytes, chunk, s)); }), h2d, 0.9);
    /* pageable host memory: the target is for pinned memory (above); these
     * are bound by the host's own memcpy, measured below */
    for (unsigned th : stage_threads) {
        char name[96];
        snprintf(name, sizeof name, "offload D2H to pageable, staged, %u thread%s", th, th > 1 ? "s" : "");
        bw_row(name, bytes, host_ms([&] { CK(mtc_offload_d2h_staged(pageable, dx, bytes, chunk, stage, s, th)); }), d2h, 0);
        snprintf(name, sizeof name, "offload H2D from pageable, staged, %u thread%s", th, th > 1 ? "s" : "");
        bw_row(name, bytes, host_ms([&] { CK(mtc_offload_h2d_staged(dy, pageable, bytes, chunk, stage, s, th)); }), h2d, 0);
    }
    /* what the host side of a staged copy can do at best: memcpy between
     * pageable buffers on that many threads, alone */
    char *pageable2 = (char *)malloc(bytes);
    memset(pageable2, 3, bytes);
    for (unsigned th : stage_threads) {
        char name[96];
        snprintf(name, sizeof name, "host memcpy pageable, %u thread%s", th, th > 1 ? "s" : "");
        double ms = host_ms([&] {
            std::vector<std::thread> pool;
            size_t slice = (bytes / th + 4095) & ~(size_t)4095;
            for (unsigned t = 0; t < th; t++) {
                size_t off = t * slice, len = off >= bytes ? 0 : bytes - off < slice ? bytes - off : slice;
                pool.emplace_back([=] { memcpy(pageable2 + off, pageable + off, len); });
            }
            for (auto &p : pool)
                p.join();
        });
        printf("  %-44s %8.1f GB/s  (bytes copied per second; for reference)\n", name, bytes / ms / 1e6);
    }
    free(pageable2);
    double pageable_d2h = bytes / host_ms([&] { CK(cudaMemcpy(pageable, dx, bytes, cudaMemcpyDeviceToHost)); }) / 1e6;
    printf("  %-44s %8.1f GB/s  (for reference)\n", "pageable cudaMemcpy device-to-host", pageable_d2h);

    /* round trips byte-identical */
    {
        std::vector<float> h(n), back(n);
        fill_mixed(h.data(), n);
        up(dx, h.data(), n);
        CK(mtc_offload_d2h(hp_pin, dx, bytes, chunk, s));
        CK(cudaMemset(dy, 0, bytes));
        CK(mtc_offload_h2d(dy, hp_pin, bytes, chunk, s));
        down(back.data(), dy, n);
        verdict(memcmp(h.data(), back.data(), bytes) == 0, "offload pinned round trip byte-identical");
        for (unsigned th : stage_threads) {
            memset(pageable, 0, bytes);
            CK(mtc_offload_d2h_staged(pageable, dx, bytes - 12345, chunk, stage, s, th));
            CK(cudaMemset(dy, 0, bytes));
            CK(mtc_offload_h2d_staged(dy, pageable, bytes - 12345, chunk, stage, s, th));
            down(back.data(), dy, n);
            char what[96];
            snprintf(what, sizeof what, "offload staged round trip byte-identical (odd size, %u thread%s)", th, th > 1 ? "s" : "");
            verdict(memcmp(h.data(), back.data(), bytes - 12345) == 0, what);
        }
    }
    cudaFreeHost(hp_pin), cudaFreeHost(stage), free(pageable);
    cudaFree(dx), cudaFree(dy), cudaFree(dp), cudaFree(dg), cudaFree(dc), cudaFree(dmc), cudaFree(dvc);
    cudaFree(da), cudaFree(dma), cudaFree(dva);
}

int main(int argc, char **argv)
{
    size_t mib = 256;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = (unsigned)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: kernels-cuda-check [--mib N] [--reps R]\n");
            return 2;
        }
    }
    int dev;
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) {
        printf("FAIL no CUDA device: %s\n", cudaGetErrorString(e));
        return 1;
    }
    CK(cudaGetDeviceProperties(&prop, dev));
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    printf("device %s (sm_%d%d), %.1f GiB, driver %d, runtime %d; host ISA %s\n", prop.name, prop.major,
           prop.minor, prop.totalGlobalMem / 1073741824.0, drv, rt, mt_isa_name(mt_isa_current()));
    check_q8();
    check_adamw();
    {
        unsigned long long bad[3];
        CK(mtc_kv_selftest(bad));
        verdict(bad[0] == 0, "fp16 round down / up on the device = kv-group.h's, every finite float");
        verdict(bad[1] == 0, "fp16 -> fp32 on the device = mt_f16_to_f32, every non-NaN half");
        verdict(bad[2] == 0, "KV code without division = mt_kv_code at every tie (+-16 ulps), every fp16 scale");
        if (bad[0] || bad[1] || bad[2])
            printf("  mismatches: %llu %llu %llu\n", bad[0], bad[1], bad[2]);
    }
    check_kv();
    bandwidth(mib);
    printf("\n%s: %d failure%s\n", failures ? "FAIL" : "PASS", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
