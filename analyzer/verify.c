/* verify: `memtrace verify`, the simulator's assumptions against the
 * kernels (kernels/mtkernels.h) run at the trace's own sizes.
 *
 * For each technique the simulator would apply to the trace (it has
 * optimizer state: 8-bit optimizer; a KV cache: its quantization and
 * latent compression; activations or optimizer state: offloading), the
 * kernel runs on synthetic data of the trace's sizes (the largest tensor of
 * the category, capped so a run stays short) and the assumption is printed
 * beside the measurement: bytes per value after compression, errors,
 * throughput against memcpy on the same buffer, transfer bandwidth. An
 * assumption off by more than 2% is flagged. On the GPU (--device cuda)
 * the CUDA check program built with the kernels runs at the trace's size
 * and its measured pinned bandwidth stands beside the assumed one.
 * mt_verify_bandwidth gives `memtrace simulate --verify` the measured
 * bandwidth for its transfer times.
 */
#include "verify.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mtkernels.h"
#include "reader.h"
#include "report.h"
#include "simulate.h"

#define VERIFY_MAX_VALUES (64u << 20) /* 256 MiB of fp32 at most per kernel run */
#define VERIFY_TOLERANCE 0.02

/* The largest allocation and the most bytes live of a category, from the
 * trace (pass 1's categories and one read of the sizes). */
struct cat_sizes {
    uint64_t largest, peak;
};

struct sizes_ctx {
    struct cat_sizes cat[MT_CAT_FIXED];
    uint8_t *catv;
    size_t ncat;
};

static void sizes_observe(const struct mt_block_life *b, void *arg)
{
    struct sizes_ctx *c = arg;
    if (b->gpu || b->category >= MT_CAT_FIXED)
        return;
    if (b->size > c->cat[b->category].largest)
        c->cat[b->category].largest = b->size;
}

static int trace_sizes(const char *path, struct sizes_ctx *c, struct mt_phases *ph, struct mt_error *err)
{
    memset(c, 0, sizeof *c);
    struct mt_phases_observer obs = { .block = sizes_observe, .arg = c };
    int rc = mt_phases_compute_obs(path, NULL, NULL, &obs, ph, err);
    if (rc < 0)
        return rc;
    for (unsigned k = 0; k < MT_CAT_FIXED && k < ph->ncat; k++)
        c->cat[k].peak = ph->cat_peak[k];
    return 0;
}

struct row {
    const char *technique, *quantity;
    double assumed, measured;
    const char *unit;
    bool check; /* compare (else informational) */
};

static bool off(const struct row *r)
{
    return r->check && r->assumed != 0 && fabs(r->measured - r->assumed) / fabs(r->assumed) > VERIFY_TOLERANCE;
}

/* threads: the CPU threads the kernels ran on, put in the JSON (0: none). */
static void print_rows(const struct row *rows, size_t n, bool json, unsigned threads)
{
    if (json) {
        cJSON *o = cJSON_CreateObject();
        if (o && threads)
            cJSON_AddNumberToObject(o, "threads", threads);
        cJSON *arr = o ? cJSON_AddArrayToObject(o, "checks") : NULL;
        for (size_t i = 0; arr && i < n; i++) {
            cJSON *x = cJSON_CreateObject();
            if (!x)
                break;
            cJSON_AddItemToArray(arr, x);
            cJSON_AddStringToObject(x, "technique", rows[i].technique);
            cJSON_AddStringToObject(x, "quantity", rows[i].quantity);
            if (rows[i].check)
                cJSON_AddNumberToObject(x, "assumed", rows[i].assumed);
            else
                cJSON_AddNullToObject(x, "assumed");
            cJSON_AddNumberToObject(x, "measured", rows[i].measured);
            cJSON_AddStringToObject(x, "unit", rows[i].unit);
            cJSON_AddBoolToObject(x, "off", off(&rows[i]));
        }
        char *s = o ? cJSON_Print(o) : NULL;
        if (s)
            puts(s);
        free(s);
        cJSON_Delete(o);
        return;
    }
    printf("    %-22s %-34s %14s %14s  %s\n", "technique", "quantity", "assumed", "measured", "");
    for (size_t i = 0; i < n; i++) {
        const struct row *r = &rows[i];
        char a[32] = "-", m[32];
        if (r->check)
            snprintf(a, sizeof a, "%.4g", r->assumed);
        snprintf(m, sizeof m, "%.4g", r->measured);
        printf("    %-22s %-34s %14s %14s  %s%s\n", r->technique, r->quantity, a, m, r->unit,
               off(r) ? "  OFF by more than 2%" : "");
    }
}

static size_t values_of(uint64_t bytes)
{
    uint64_t v = bytes / 4;
    if (v > VERIFY_MAX_VALUES)
        v = VERIFY_MAX_VALUES;
    return (size_t)(v ? v : 1);
}

/* The directory of the trace (where an offload to disk would go). */
static void trace_dir(const char *path, char *out, size_t n)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    snprintf(out, n, "%s", dirname(tmp));
}

int mt_verify_bandwidth(const char *trace, bool disk, uint64_t bytes, double *gbps, struct mt_error *err)
{
    struct mt_measure m;
    size_t b = bytes > (256u << 20) ? (256u << 20) : (bytes < (1u << 20) ? (1u << 20) : (size_t)bytes);
    int rc;
    if (disk) {
        char dir[PATH_MAX];
        trace_dir(trace, dir, sizeof dir);
        rc = mt_measure_offload_file(dir, b, 8u << 20, &m);
    } else {
        rc = mt_measure_offload_pinned(b, 8u << 20, 3, &m);
    }
    if (rc < 0) {
        mti_error_set(err, "measuring the offload bandwidth: %s", strerror(-rc));
        return rc;
    }
    *gbps = m.gbps;
    return 0;
}

/* The CUDA check program built with the kernels, beside the memtrace
 * binary in the build tree (kernels/kernels-cuda-check), or named by
 * MEMTRACE_KERNELS_CUDA. */
static bool cuda_check_path(char out[PATH_MAX], size_t n)
{
    const char *env = getenv("MEMTRACE_KERNELS_CUDA");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return access(out, X_OK) == 0;
    }
    char self[PATH_MAX - 64];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0)
        return false;
    self[k] = 0;
    char *slash = strrchr(self, '/');
    if (!slash)
        return false;
    *slash = 0;
    snprintf(out, n, "%s/../kernels/kernels-cuda-check", self);
    return access(out, X_OK) == 0;
}

static int verify_cuda(const char *path, const struct sizes_ctx *c, double assumed_bw)
{
    char prog[PATH_MAX];
    if (!cuda_check_path(prog, sizeof prog)) {
        fprintf(stderr, "memtrace verify: no CUDA kernels: this memtrace was built without nvcc "
                        "(or set MEMTRACE_KERNELS_CUDA to the kernels-cuda-check program)\n");
        return 1;
    }
    uint64_t big = 0;
    for (unsigned k = 0; k < MT_CAT_FIXED; k++)
        big = c->cat[k].largest > big ? c->cat[k].largest : big;
    unsigned mib = (unsigned)((big + (1u << 20) - 1) >> 20);
    mib = mib < 16 ? 16 : mib > 1024 ? 1024 : mib;
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "'%s' --mib %u", prog, mib);
    printf("%s: the CUDA kernels at %u MiB (the trace's largest tensor), against the C reference\n", path, mib);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    if (!p) {
        fprintf(stderr, "memtrace verify: cannot run %s: %s\n", prog, strerror(errno));
        return 1;
    }
    char line[512];
    double d2h = 0, h2d = 0;
    while (fgets(line, sizeof line, p)) {
        fputs(line, stdout);
        double v;
        if (strstr(line, "pinned cudaMemcpy device-to-host") && sscanf(strstr(line, "host") + 4, "%lf", &v) == 1)
            d2h = v;
        if (strstr(line, "pinned cudaMemcpy host-to-device") && sscanf(strstr(line, "device") + 6, "%lf", &v) == 1)
            h2d = v;
    }
    int st = pclose(p);
    if (d2h > 0 && h2d > 0) {
        struct row rows[] = {
            { "offload", "device-to-host bandwidth", assumed_bw, d2h, "GB/s", true },
            { "offload", "host-to-device bandwidth", assumed_bw, h2d, "GB/s", true },
        };
        printf("\nThe simulator's transfer assumption:\n");
        print_rows(rows, 2, false, 0);
    }
    return st == 0 ? 0 : 1;
}

static void verify_usage(FILE *f)
{
    fprintf(f, "Usage: memtrace verify [--device cpu|cuda] [--bandwidth GBPS] [--block N] [--reps N]\n"
               "                      [--threads N] [--json] FILE\n"
               "\n"
               "Runs the kernels behind each technique `memtrace simulate` would apply to the\n"
               "trace (8-bit optimizer state when it has optimizer state, KV-cache quantization\n"
               "and latent compression when it has a tagged KV cache, offloading when it has\n"
               "activations or optimizer state) at the trace's sizes, and prints the\n"
               "simulator's assumption beside the measurement: bytes per value after\n"
               "compression, errors, throughput against memcpy, transfer bandwidth. An\n"
               "assumption off by more than 2%% is flagged and the exit status is 3.\n"
               "\n"
               "  --device cuda   run the CUDA kernels instead (needs a GPU and a build with nvcc)\n"
               "  --bandwidth GBPS  the transfer bandwidth assumed (default 25, as simulate)\n"
               "  --block N       values per absmax of the 8-bit optimizer (default 128)\n"
               "  --reps N        timed runs per kernel, best kept (default 3)\n"
               "  --threads N     CPU threads for the kernels and for the memcpy they are\n"
               "                  compared with (default: every CPU this process may use)\n"
               "  --json          print JSON\n"
               "  -h, --help      this text\n");
}

int mt_verify_main(int argc, char **argv)
{
    const char *path = NULL, *device = "cpu";
    double bw = 25.0;
    unsigned block = 128, reps = 3, threads = mt_threads_available();
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            verify_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--device") || !strcmp(a, "--bandwidth") || !strcmp(a, "--block") ||
                   !strcmp(a, "--reps") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc)
                return mt_usage_error("verify", "%s needs a value", a);
            const char *v = argv[++i];
            char *end;
            if (!strcmp(a, "--device")) {
                if (strcmp(v, "cpu") && strcmp(v, "cuda"))
                    return mt_usage_error("verify", "--device is cpu or cuda, not '%s'", v);
                device = v;
            } else if (!strcmp(a, "--bandwidth")) {
                bw = strtod(v, &end);
                if (end == v || *end || bw <= 0)
                    return mt_usage_error("verify", "bad bandwidth '%s'", v);
            } else {
                unsigned long n = strtoul(v, &end, 10);
                if (end == v || *end || n == 0 || n > (1u << 20))
                    return mt_usage_error("verify", "bad number '%s'", v);
                if (a[2] == 'b')
                    block = (unsigned)n;
                else if (a[2] == 'r')
                    reps = (unsigned)n;
                else if (n > MT_THREADS_MAX) /* 256, as the message says */
                    return mt_usage_error("verify", "--threads takes 1 to 256, not %s", v);
                else
                    threads = (unsigned)n;
            }
        } else if (a[0] == '-' && a[1]) {
            return mt_usage_error("verify", "unknown option '%s'", a);
        } else if (path) {
            return mt_usage_error("verify", "one trace at a time (got '%s' too)", a);
        } else {
            path = a;
        }
    }
    if (!path)
        return mt_usage_error("verify", "no trace given%s", "");
    struct sizes_ctx c;
    struct mt_phases ph;
    struct mt_error err;
    if (trace_sizes(path, &c, &ph, &err) < 0) {
        fprintf(stderr, "memtrace verify: %s\n", err.msg);
        return 1;
    }
    uint64_t steps = ph.nstep ? ph.nstep : 1;
    double step_s = 0;
    for (size_t p = 0; p < ph.nphase; p++)
        step_s += (double)ph.phase[p].time_ns / 1e9;
    step_s /= (double)steps;
    bool marks = ph.marks > 0;
    mt_phases_destroy(&ph);
    if (!marks) {
        fprintf(stderr, "memtrace verify: %s has no phases or categories (no markers, or cut short before "
                        "any): nothing to verify\n", path);
        return 1;
    }
    if (!strcmp(device, "cuda"))
        return verify_cuda(path, &c, bw);

    struct row rows[16];
    size_t n = 0;
    struct mt_measure m;
    int rc = 0;
    const struct cat_sizes *opt = &c.cat[MT_CAT_OPTIMIZER_STATE], *kv = &c.cat[MT_CAT_KV_CACHE],
                           *act = &c.cat[MT_CAT_ACTIVATIONS];
    mt_threads_use(threads);
    if (!json)
        printf("%s: kernels on %s, %u thread%s, best of %u, at the trace's sizes\n", path,
               mt_isa_name(mt_isa_current()), threads, threads == 1 ? "" : "s", reps);
    if (opt->largest >= 16384) {
        size_t v = values_of(opt->largest);
        if ((rc = mt_measure_q8(v, block, reps, &m)) < 0)
            goto fail;
        rows[n++] = (struct row){ "int8 optimizer", "bytes per value", 1.0 + 4.0 / block, m.bytes_per_value, "B", true };
        rows[n++] = (struct row){ "int8 optimizer", "max abs error (values ~N(0,1))", 0, m.max_abs_err, "", false };
        rows[n++] = (struct row){ "int8 optimizer", "quantize throughput", 0, m.gbps, "GB/s", false };
        rows[n++] = (struct row){ "int8 optimizer", "memcpy on the same buffer", 0, m.baseline_gbps, "GB/s", false };
        size_t total = values_of(opt->peak / 2);
        if ((rc = mt_measure_adamw8(total, block, reps, &m)) < 0)
            goto fail;
        rows[n++] = (struct row){ "int8 optimizer", "AdamW int8 step, all params", 0, m.seconds, "s", false };
        rows[n++] = (struct row){ "int8 optimizer", "its share of the traced step", 0,
                                  step_s > 0 ? 100.0 * m.seconds / step_s : 0, "%", false };
    }
    if (kv->largest) {
        size_t channels = 128, tokens = values_of(kv->largest) / channels;
        tokens = tokens ? tokens : 1;
        for (unsigned bits = 4; bits <= 8; bits += 4) {
            if ((rc = mt_measure_kv(MT_KV_KEYS, tokens, channels, bits, 32, reps, &m)) < 0)
                goto fail;
            rows[n++] = (struct row){ bits == 4 ? "kv int:4:32" : "kv int:8:32", "bits per value",
                                      bits + 32.0 / 32, m.bytes_per_value * 8, "bit", true };
        }
        size_t rank = channels / 8;
        if ((rc = mt_measure_latent(tokens, channels, rank, reps, &m)) < 0)
            goto fail;
        rows[n++] = (struct row){ "kv latent:8", "bytes after / before", 1.0 / 8, m.bytes_after / m.bytes_before, "", true };
        rows[n++] = (struct row){ "kv latent:8", "relative error", 0, m.rel_err, "", false };
    }
    if (opt->peak || act->peak) {
        uint64_t bytes = opt->peak > act->peak ? opt->peak : act->peak;
        if ((rc = mt_measure_offload_pinned((size_t)(bytes > (256u << 20) ? (256u << 20) : (bytes < (1u << 20) ? (1u << 20) : bytes)),
                                            8u << 20, reps, &m)) < 0)
            goto fail;
        rows[n++] = (struct row){ "offload :host", "copy bandwidth (pinned)", bw, m.gbps, "GB/s", true };
        char dir[PATH_MAX];
        trace_dir(path, dir, sizeof dir);
        if ((rc = mt_measure_offload_file(dir, (size_t)(bytes > (64u << 20) ? (64u << 20) : (bytes < (1u << 20) ? (1u << 20) : bytes)),
                                          8u << 20, &m)) < 0)
            goto fail;
        rows[n++] = (struct row){ "offload :disk", "write bandwidth (beside the trace)", bw, m.gbps, "GB/s", true };
        rows[n++] = (struct row){ "offload :disk", "read bandwidth", bw, m.aux, "GB/s", true };
    }
    if (!n) {
        fprintf(stderr, "memtrace verify: %s has no optimizer state, KV cache or activations: no technique to verify\n",
                path);
        return 1;
    }
    print_rows(rows, n, json, threads);
    bool any_off = false;
    for (size_t i = 0; i < n; i++)
        any_off = any_off || off(&rows[i]);
    if (!json && any_off)
        printf("\nAssumptions off by more than 2%% are flagged; `memtrace simulate --verify` uses the measured "
               "bandwidth.\n");
    return any_off ? 3 : 0;
fail:
    fprintf(stderr, "memtrace verify: a kernel failed: %s\n", strerror(-rc));
    return 1;
}
