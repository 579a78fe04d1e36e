/* bench-kernels.c: every host kernel's throughput beside memcpy on the same
 * buffers in the same run (mt_measure_*), for scripts/bench-kernels.sh.
 *
 * Usage: bench-kernels [--mib N] [--reps R] [--isa scalar|avx2|avx512]
 *                      [--threads T] [--dir DIR]
 * N MiB of fp32 input per kernel (default 64), best of R runs (default 5),
 * T threads for the kernels and for the memcpy they are held to (default
 * every CPU this process may use), DIR for the offload file (default the
 * current directory).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtkernels.h"

static void row(const char *name, const char *what, double gbps, double base, const char *note)
{
    printf("%-34s %-10s %8.2f %8.2f %6.0f%%  %s\n", name, what, gbps, base, 100.0 * gbps / base,
           note);
}

int main(int argc, char **argv)
{
    size_t mib = 64;
    unsigned reps = 5;
    const char *dir = ".";
    int threads_given = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc) {
            mib = strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *end;
            unsigned long t = strtoul(argv[++i], &end, 10);
            if (*end || end == argv[i] || t > MT_THREADS_MAX || mt_threads_use((unsigned)t)) {
                fprintf(stderr, "bench-kernels: --threads takes 1 to %d, not '%s'\n",
                        MT_THREADS_MAX, argv[i]);
                return 2;
            }
            threads_given = 1;
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *want = argv[++i];
            int ok = 0;
            for (int k = 0; k < MT_ISA_COUNT; k++)
                if (!strcmp(want, mt_isa_name((enum mt_isa)k)))
                    ok = mt_isa_use((enum mt_isa)k) == 0;
            if (!ok) {
                fprintf(stderr, "bench-kernels: this CPU cannot run --isa %s\n", want);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: bench-kernels [--mib N] [--reps R] [--isa NAME] [--threads T] "
                            "[--dir DIR]\n");
            return 2;
        }
    }
    if (!threads_given)
        mt_threads_use(mt_threads_available());
    size_t n = mib << 18; /* floats */
    size_t bytes = mib << 20;
    printf("isa %s, %u thread%s (kernels and memcpy alike), %zu MiB of fp32 per kernel, best of %u\n",
           mt_isa_name(mt_isa_current()), mt_threads_current(),
           mt_threads_current() == 1 ? "" : "s", mib, reps);
    printf("%-34s %-10s %8s %8s %7s\n", "kernel", "", "GB/s", "memcpy", "ratio");
    struct mt_measure m;
    int r;
    static const size_t blocks[] = {256, 2048};
    for (size_t b = 0; b < 2; b++) {
        char name[64];
        if ((r = mt_measure_q8(n, blocks[b], reps, &m)))
            goto fail;
        snprintf(name, sizeof name, "q8 block %zu", blocks[b]);
        char note[96];
        snprintf(note, sizeof note, "%.4f B/value, max err %.3g", m.bytes_per_value, m.max_abs_err);
        row(name, "quantize", m.gbps, m.baseline_gbps, note);
        row(name, "dequantize", m.aux, m.baseline_gbps, "");
    }
    {
        if ((r = mt_measure_adamw8(n, 256, reps, &m)))
            goto fail;
        char note[96];
        snprintf(note, sizeof note, "%.3f B/param state, update rel err %.2g", m.aux, m.rel_err);
        row("adamw8 block 256", "step", m.gbps, m.baseline_gbps, note);
    }
    static const unsigned kbits[] = {2, 4, 8};
    for (int kind = 0; kind < 2; kind++)
        for (size_t b = 0; b < 3; b++) {
            size_t channels = 1024, tokens = n / channels;
            if ((r = mt_measure_kv((enum mt_kv_kind)kind, tokens, channels, kbits[b], 32, reps, &m)))
                goto fail;
            char name[64], note[96];
            snprintf(name, sizeof name, "kv %s %u-bit group 32", kind ? "values" : "keys", kbits[b]);
            snprintf(note, sizeof note, "%.2f bits/value, rel err %.3g", m.bytes_per_value * 8,
                     m.rel_err);
            row(name, "quantize", m.gbps, m.baseline_gbps, note);
            row(name, "dequantize", m.aux, m.baseline_gbps, "");
        }
    {
        size_t dim = 1024, rows = n / dim / 16;
        if ((r = mt_measure_latent(rows, dim, 64, reps, &m)))
            goto fail;
        char note[128];
        snprintf(note, sizeof note, "rank 64/1024: ratio %.4f, rel err %.3g (compute-bound)",
                 m.bytes_after / m.bytes_before, m.rel_err);
        row("latent project+reconstruct", "", m.gbps, m.baseline_gbps, note);
    }
    {
        if ((r = mt_measure_offload_pinned(bytes, 4 << 20, reps, &m)))
            goto fail;
        char name[64];
        unsigned t = mt_threads_current();
        snprintf(name, sizeof name, "offload to pinned (%u threads)", t < 2 ? 2 : t);
        row(name, "copy", m.gbps, m.baseline_gbps, m.aux ? "mlock'd" : "not mlock'd (RLIMIT_MEMLOCK)");
    }
    {
        if ((r = mt_measure_offload_file(dir, bytes, 8 << 20, &m)))
            goto fail;
        char note[96];
        snprintf(note, sizeof note, "payload GB/s vs 1x memcpy; read %.2f GB/s%s", m.aux,
                 m.max_abs_err ? " MISMATCH" : "");
        row("offload to file", "write", m.gbps, m.baseline_gbps, note);
    }
    {
        if ((r = mt_measure_recompute(512, 1024, 1024, reps, &m)))
            goto fail;
        printf("%-34s %-10s %8.2f GFLOP/s, %.3f ms per forward\n", "recompute matmul 512x1024x1024",
               "", m.aux, m.seconds * 1e3);
    }
    return 0;
fail:
    fprintf(stderr, "bench-kernels: %s\n", strerror(-r));
    return 1;
}
