/* simulate-cmd: the `memtrace simulate` and `memtrace plan` commands on the
 * replay engine of simulate.h: option parsing, the text and JSON output,
 * and plan's search over combinations of techniques.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"
#include "report.h"
#include "simulate.h"
#include "verify.h"

/* ---- options ---------------------------------------------------------------------- */

static bool parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi || *s == '-')
        return false;
    *out = (unsigned)v;
    return true;
}

static bool parse_checkpoint(const char *v, struct mt_sim_opts *o)
{
    if (!strcmp(v, "every")) {
        o->ck = MT_CK_EVERY;
    } else if (!strncmp(v, "every:", 6)) {
        o->ck = MT_CK_EVERY_K;
        return parse_uint(v + 6, 1, 100000, &o->ck_k);
    } else if (!strcmp(v, "sqrt")) {
        o->ck = MT_CK_SQRT;
    } else if (!strncmp(v, "budget:", 7)) {
        o->ck = MT_CK_BUDGET;
        return mt_parse_size(v + 7, &o->ck_budget);
    } else if (!strcmp(v, "optimal")) {
        o->ck = MT_CK_OPTIMAL;
    } else if (!strncmp(v, "optimal:", 8)) {
        o->ck = MT_CK_OPTIMAL;
        return mt_parse_size(v + 8, &o->ck_budget);
    } else {
        return false;
    }
    return true;
}

static bool parse_offload(const char *v, struct mt_sim_opts *o)
{
    const char *colon = strchr(v, ':');
    size_t n = colon ? (size_t)(colon - v) : strlen(v);
    if (n == 9 && !strncmp(v, "optimizer", 9))
        o->offload |= MT_OFFLOAD_OPTIMIZER;
    else if (n == 11 && !strncmp(v, "activations", 11))
        o->offload |= MT_OFFLOAD_ACTIVATIONS;
    else if (n == 2 && !strncmp(v, "kv", 2))
        o->offload |= MT_OFFLOAD_KV;
    else
        return false;
    if (colon && !strcmp(colon + 1, "disk"))
        o->offload_disk = true;
    else if (colon && strcmp(colon + 1, "host"))
        return false;
    return true;
}

static bool parse_kv(const char *v, struct mt_sim_opts *o)
{
    if (!strncmp(v, "latent:", 7)) {
        char *end;
        o->kv_latent_ratio = strtod(v + 7, &end);
        return end != v + 7 && !*end && o->kv_latent_ratio >= 1.0 && o->kv_latent_ratio < 1e6;
    }
    if (!strncmp(v, "int:", 4)) {
        char bits[16];
        const char *c = strchr(v + 4, ':');
        size_t n = c ? (size_t)(c - v - 4) : strlen(v + 4);
        if (n >= sizeof bits)
            return false;
        memcpy(bits, v + 4, n);
        bits[n] = 0;
        return parse_uint(bits, 1, 16, &o->kv_bits) && (!c || parse_uint(c + 1, 1, 1u << 20, &o->kv_group));
    }
    return false;
}

/* Parses one technique option at argv[*i] (with its value); 1 taken, 0 not
 * a technique option, -1 bad value (message printed). */
static int technique_option(const char *cmd, int argc, char **argv, int *i, struct mt_sim_opts *o)
{
    const char *a = argv[*i];
    const char *names[] = { "--checkpoint", "--int8-optimizer", "--optimizer-bits", "--activation-dtype",
                            "--grad-accum", "--offload", "--bandwidth", "--kv-compress", "--kv-window",
                            "--galore", "--kv-dtype-bytes", NULL };
    size_t k = 0;
    size_t len = 0;
    for (; names[k]; k++) {
        len = strlen(names[k]);
        if (!strncmp(a, names[k], len) && (a[len] == 0 || a[len] == '='))
            break;
    }
    if (!names[k])
        return 0;
    const char *v = a[len] == '=' ? a + len + 1 : NULL;
    bool optional = !strcmp(names[k], "--int8-optimizer");
    if (!v && !optional) {
        if (*i + 1 >= argc) {
            mt_usage_error(cmd, "%s needs a value", names[k]);
            return -1;
        }
        v = argv[++*i];
    }
    bool ok = true;
    switch (k) {
    case 0: ok = parse_checkpoint(v, o); break;
    case 1:
        o->opt_bits = 8;
        if (v)
            ok = parse_uint(v, 1, 1u << 24, &o->opt_block);
        break;
    case 2: ok = parse_uint(v, 1, 32, &o->opt_bits); break;
    case 3:
        if (!strcmp(v, "bf16") || !strcmp(v, "fp16"))
            o->act_bytes = 2;
        else if (!strcmp(v, "fp8"))
            o->act_bytes = 1;
        else
            ok = false;
        break;
    case 4: ok = parse_uint(v, 1, 4096, &o->grad_accum); break;
    case 5: ok = parse_offload(v, o); break;
    case 6: {
        char *end;
        o->bandwidth_gbps = strtod(v, &end);
        ok = end != v && !*end && o->bandwidth_gbps > 0 && o->bandwidth_gbps < 1e6;
        break;
    }
    case 7: ok = parse_kv(v, o); break;
    case 8: {
        unsigned t;
        ok = parse_uint(v, 1, UINT32_MAX, &t);
        o->kv_window = t;
        break;
    }
    case 9: ok = parse_uint(v, 1, 1u << 20, &o->galore_rank); break;
    case 10: ok = parse_uint(v, 1, 8, &o->kv_elem_bytes); break;
    }
    if (!ok) {
        fprintf(stderr, "memtrace %s: bad value for %s: '%s'\nTry 'memtrace %s --help'.\n", cmd, names[k],
                v ? v : "", cmd);
        return -1;
    }
    return 1;
}

static const char techniques_help[] =
    "Techniques (any combination):\n"
    "  --checkpoint every|every:K|sqrt|budget:SIZE|optimal[:SIZE]\n"
    "                       activation checkpointing of the repeated blocks (modules\n"
    "                       PREFIX.0 .. PREFIX.N-1): each block; blocks whose index is a\n"
    "                       multiple of K; segments of floor(sqrt(N)) blocks; the fewest\n"
    "                       blocks that fit SIZE (greedy); the least recompute that fits\n"
    "                       SIZE (exact dynamic program; SIZE from --budget if omitted)\n"
    "  --int8-optimizer[=BLOCK]  optimizer state in 8 bits, one fp32 absmax per BLOCK\n"
    "                       values (default 128); tensors under 4096 values stay fp32\n"
    "  --optimizer-bits N   the same with N-bit codes\n"
    "  --galore RANK        GaLore: rank-RANK optimizer moments (tensors taken as square)\n"
    "  --activation-dtype bf16|fp16|fp8   activations (fp32 in the trace) in that type\n"
    "  --grad-accum K       the same batch as K micro-batches\n"
    "  --offload optimizer|activations|kv[:host|disk]   move that category off the\n"
    "                       device (to the host, or to a file); off the host only :disk\n"
    "  --bandwidth GBPS     transfer bandwidth for offloading (default 25)\n"
    "  --kv-compress latent:RATIO|int:BITS[:GROUP]   KV cache (tagged kv_cache) as a\n"
    "                       low-rank latent, or BITS-bit codes with an fp16 scale and zero\n"
    "                       point per GROUP values (default 32)\n"
    "  --kv-dtype-bytes N   the traced KV cache's bytes per value (default 4)\n"
    "  --kv-window TOKENS   keep only the last TOKENS tokens of the KV cache\n";

/* Whether the trace was cut short (known from its chunks at open). */
static bool cut_short(const char *path)
{
    struct mt_reader *r;
    struct mt_error err;
    if (mt_reader_open(path, &r, &err) < 0)
        return false; /* the caller's own open says why */
    bool partial = mt_reader_partial(r);
    mt_reader_close(r);
    return partial;
}

/* The line for a trace without markers (cut: cut short before any). */
static void no_markers(const char *cmd, const char *path, bool cut)
{
    if (cut)
        fprintf(stderr, "memtrace %s: %s was cut short before any phase or category marker: nothing to %s\n", cmd,
                path, cmd);
    else
        fprintf(stderr, "memtrace %s: %s has no phases or categories (no markers): nothing to %s; trace a "
                        "PyTorch script, or mark phases with include/memtrace.h\n", cmd, path, cmd);
}

/* ---- output ----------------------------------------------------------------------- */

static void size_cell(uint64_t v, char *buf, size_t n)
{
    mt_human_size(v, buf, n);
}

static double change(uint64_t base, uint64_t pred)
{
    return base ? 100.0 * ((double)pred - (double)base) / (double)base : 0.0;
}

static void print_result(FILE *f, const char *path, const struct mt_sim_result *r)
{
    char a[32], b[32];
    fprintf(f, "%s\n", path);
    size_cell(r->base_peak, a, sizeof a);
    size_cell(r->pred_peak, b, sizeof b);
    fprintf(f, "  host heap peak   %12s -> %12s  (%+.1f%%)\n", a, b, change(r->base_peak, r->pred_peak));
    fprintf(f, "    %-18s %12s %12s %8s\n", "phase", "baseline", "predicted", "change");
    for (size_t p = 0; p < r->nphase; p++) {
        if (!r->phase[p].base_peak && !r->phase[p].pred_peak)
            continue;
        size_cell(r->phase[p].base_peak, a, sizeof a);
        size_cell(r->phase[p].pred_peak, b, sizeof b);
        fprintf(f, "    %-18s %12s %12s %+7.1f%%\n", r->phase[p].name, a, b,
                change(r->phase[p].base_peak, r->phase[p].pred_peak));
    }
    for (size_t i = 0; i < r->ndev; i++) {
        const struct mt_sim_device *d = &r->dev[i];
        fprintf(f, "  GPU %u%s\n", d->device, d->simulated ? "" : " (not simulated: no per-tensor allocations)");
        if (d->has_reserved) {
            size_cell(d->base_reserved, a, sizeof a);
            size_cell(d->pred_reserved, b, sizeof b);
            fprintf(f, "    reserved peak  %12s -> %12s  (%+.1f%%)\n", a, b, change(d->base_reserved, d->pred_reserved));
        }
        if (d->has_allocated) {
            size_cell(d->base_allocated, a, sizeof a);
            size_cell(d->pred_allocated, b, sizeof b);
            fprintf(f, "    allocated peak %12s -> %12s  (%+.1f%%)\n", a, b,
                    change(d->base_allocated, d->pred_allocated));
            for (size_t p = 0; p < d->nphase; p++) {
                if (!d->phase[p].base_peak && !d->phase[p].pred_peak)
                    continue;
                size_cell(d->phase[p].base_peak, a, sizeof a);
                size_cell(d->phase[p].pred_peak, b, sizeof b);
                fprintf(f, "      %-16s %12s %12s\n", d->phase[p].name, a, b);
            }
        }
    }
    if (r->ck_blocks)
        fprintf(f, "  checkpointed: %u blocks in %u segments (%s)\n", r->ck_blocks, r->ck_segments, r->schedule);
    if (r->offloaded_peak) {
        size_cell(r->offloaded_peak, a, sizeof a);
        fprintf(f, "  offloaded: %s at most\n", a);
    }
    fprintf(f, "  extra time per step: %.4f s (recompute %.4f s, transfers %.4f s; %.4f s with transfers\n"
               "    overlapping compute), over %" PRIu64 " steps\n",
            r->extra_s_per_step, r->recompute_s, r->transfer_s, r->extra_s_overlap, r->steps);
    if (r->note[0])
        fprintf(f, "  note: %s\n", r->note);
}

static cJSON *phases_json(const struct mt_sim_phase *ph, size_t n, bool pred)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t p = 0; o && p < n; p++) {
        if (!ph[p].base_peak && !ph[p].pred_peak)
            continue;
        cJSON *x = cJSON_AddObjectToObject(o, ph[p].name);
        if (!x || !mt_json_add_u64(x, "peak_bytes", pred ? ph[p].pred_peak : ph[p].base_peak)) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

static cJSON *result_json(const struct mt_sim_result *r)
{
    cJSON *o = cJSON_CreateObject(), *base = cJSON_AddObjectToObject(o, "baseline"),
          *pred = cJSON_AddObjectToObject(o, "predicted");
    bool ok = base && pred && mt_json_add_u64(base, "peak_bytes", r->base_peak) &&
              mt_json_add_u64(pred, "peak_bytes", r->pred_peak) &&
              cJSON_AddNumberToObject(pred, "extra_seconds_per_step", r->extra_s_per_step) &&
              cJSON_AddNumberToObject(pred, "extra_seconds_per_step_overlapped", r->extra_s_overlap) &&
              cJSON_AddNumberToObject(pred, "recompute_seconds_per_step", r->recompute_s) &&
              cJSON_AddNumberToObject(pred, "transfer_seconds_per_step", r->transfer_s) &&
              mt_json_add_u64(pred, "offloaded_peak_bytes", r->offloaded_peak) &&
              mt_json_add_u64(pred, "checkpointed_blocks", r->ck_blocks) &&
              cJSON_AddStringToObject(pred, "checkpoint_schedule", r->schedule) &&
              mt_json_add_u64(o, "steps", r->steps) &&
              (r->note[0] ? cJSON_AddStringToObject(o, "note", r->note) != NULL
                          : cJSON_AddNullToObject(o, "note") != NULL);
    cJSON *bp = ok ? phases_json(r->phase, r->nphase, false) : NULL, *pp = ok ? phases_json(r->phase, r->nphase, true) : NULL;
    ok = bp && pp;
    if (ok) {
        cJSON_AddItemToObject(base, "phases", bp);
        cJSON_AddItemToObject(pred, "phases", pp);
    } else {
        cJSON_Delete(bp);
        cJSON_Delete(pp);
    }
    cJSON *bd = ok ? cJSON_AddArrayToObject(base, "devices") : NULL, *pd = ok ? cJSON_AddArrayToObject(pred, "devices") : NULL;
    ok = bd && pd;
    for (size_t i = 0; ok && i < r->ndev; i++) {
        const struct mt_sim_device *d = &r->dev[i];
        for (int w = 0; w < 2 && ok; w++) {
            cJSON *x = cJSON_CreateObject();
            ok = x != NULL;
            if (!ok)
                break;
            cJSON_AddItemToArray(w ? pd : bd, x);
            uint64_t res = w ? d->pred_reserved : d->base_reserved, al = w ? d->pred_allocated : d->base_allocated;
            ok = mt_json_add_u64(x, "device", d->device) &&
                 (d->has_reserved ? mt_json_add_u64(x, "reserved_peak_bytes", res) != NULL
                                  : cJSON_AddNullToObject(x, "reserved_peak_bytes") != NULL) &&
                 (d->has_allocated ? mt_json_add_u64(x, "allocated_peak_bytes", al) != NULL
                                   : cJSON_AddNullToObject(x, "allocated_peak_bytes") != NULL) &&
                 cJSON_AddBoolToObject(x, "simulated", d->simulated);
            cJSON *ph = ok ? phases_json(d->phase, d->nphase, w) : NULL;
            ok = ph != NULL;
            if (ok)
                cJSON_AddItemToObject(x, "phases", ph);
        }
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int print_json(cJSON *o)
{
    char *s = o ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!s) {
        fprintf(stderr, "memtrace: out of memory\n");
        return 1;
    }
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    return 0;
}

static int finish_output(const char *cmd)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "memtrace %s: cannot write the output: %s\n", cmd, strerror(errno));
        return 1;
    }
    return 0;
}

/* ---- simulate --------------------------------------------------------------------- */

static void simulate_usage(FILE *f)
{
    fprintf(f, "Usage: memtrace simulate [TECHNIQUES] [--budget SIZE] [--device N] [--verify] [--json] FILE\n"
               "\n"
               "Replays the trace with its allocations transformed as the techniques would\n"
               "transform them and prints the predicted peaks (host heap per phase, per GPU)\n"
               "beside the baseline, and the time the techniques add per step. Needs the\n"
               "phases and categories of the trace (docs/PHASES.md); docs/SIMULATE.md says\n"
               "what each technique does to which allocations.\n\n%s"
               "\n"
               "  --budget SIZE   the memory budget of --checkpoint optimal (e.g. 2GiB)\n"
               "  --device N      checkpoint schedules fit GPU N's allocated peak, not the host's\n"
               "  --verify        offloading at the bandwidth measured here (memtrace verify)\n"
               "  --json          print JSON (baseline.*, predicted.*)\n"
               "  -h, --help      this text\n",
               techniques_help);
}

int mt_simulate_main(int argc, char **argv)
{
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    const char *path = NULL;
    bool json = false, verify = false;
    uint64_t budget = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int t = technique_option("simulate", argc, argv, &i, &o);
        if (t < 0)
            return 2;
        if (t)
            continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            simulate_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--verify")) {
            verify = true;
        } else if (!strcmp(a, "--budget") || !strcmp(a, "--device")) {
            if (i + 1 >= argc)
                return mt_usage_error("simulate", "%s needs a value", a);
            const char *v = argv[++i];
            unsigned d;
            if (a[2] == 'b' ? !mt_parse_size(v, &budget) : !parse_uint(v, 0, 1u << 20, &d))
                return mt_usage_error("simulate", "bad value '%s'", v);
            if (a[2] == 'd')
                o.device = (int)d;
        } else if (a[0] == '-' && a[1]) {
            return mt_usage_error("simulate", "unknown option '%s'", a);
        } else if (path) {
            return mt_usage_error("simulate", "one trace at a time (got '%s' too)", a);
        } else {
            path = a;
        }
    }
    if (!path)
        return mt_usage_error("simulate", "no trace given%s", "");
    if (o.ck == MT_CK_OPTIMAL && !o.ck_budget) {
        if (!budget)
            return mt_usage_error("simulate", "--checkpoint optimal needs a budget (optimal:SIZE or --budget SIZE)%s", "");
        o.ck_budget = budget;
    }
    struct mt_sim_base *b;
    struct mt_error err;
    if (mt_sim_open(path, &b, &err) < 0) {
        fprintf(stderr, "memtrace simulate: %s\n", err.msg);
        return 1;
    }
    bool cut = cut_short(path);
    if (!mt_sim_phases(b)->marks) {
        no_markers("simulate", path, cut);
        mt_sim_close(b);
        return 1;
    }
    if (cut)
        fprintf(stderr, "memtrace simulate: %s was cut short; the prediction covers what it holds\n", path);
    double measured_bw = 0;
    if (verify && o.offload && !o.bandwidth_gbps) {
        /* The transfer bandwidth measured here, for the bytes offloaded. */
        const struct mt_phases *ph = mt_sim_phases(b);
        uint64_t bytes = 0;
        for (size_t k = 0; k < ph->ncat && k < MT_CAT_FIXED; k++)
            bytes = ph->cat_peak[k] > bytes ? ph->cat_peak[k] : bytes;
        if (mt_verify_bandwidth(path, o.offload_disk, bytes, &measured_bw, &err) < 0) {
            fprintf(stderr, "memtrace simulate: %s\n", err.msg);
            mt_sim_close(b);
            return 1;
        }
        o.bandwidth_gbps = measured_bw;
    }
    struct mt_sim_result r;
    int rc = mt_sim_run(b, &o, &r, &err);
    mt_sim_close(b);
    if (rc < 0) {
        fprintf(stderr, "memtrace simulate: %s\n", err.msg);
        return 1;
    }
    if (measured_bw > 0 && !json)
        printf("(--verify: transfers at the %.2f GB/s measured here%s)\n", measured_bw,
               o.offload_disk ? " to a file beside the trace" : " into pinned memory");
    int status = json ? print_json(result_json(&r)) : (print_result(stdout, path, &r), 0);
    mt_sim_result_free(&r);
    if (!status)
        status = finish_output("simulate");
    return status ? status : cut ? 3 : 0;
}

/* ---- plan ------------------------------------------------------------------------- */

struct candidate {
    char name[160];
    struct mt_sim_opts opts;
    uint64_t peak;
    double extra;
    bool fits;
};

static void plan_usage(FILE *f)
{
    fprintf(f, "Usage: memtrace plan --budget SIZE [--device N] [--bandwidth GBPS] [--json] FILE\n"
               "\n"
               "Tries combinations of techniques (checkpointing none/every/sqrt/every:2,\n"
               "8-bit optimizer state, bf16 activations, gradient accumulation 2 and 4,\n"
               "optimizer offload for GPUs) on the trace with `memtrace simulate`'s replay,\n"
               "and prints the cheapest (least added time per step) whose predicted peak fits\n"
               "SIZE, then every candidate: those that fit, and those that do not with the\n"
               "bytes they miss by. The peak is the host heap's, or GPU N's (allocated when\n"
               "the trace has per-tensor allocations, else reserved) with --device.\n"
               "\n"
               "  --budget SIZE   memory to fit in (e.g. 24GiB, 500MB, 123456)\n"
               "  --device N      fit GPU N instead of the host heap\n"
               "  --bandwidth GBPS  for offloading's transfer time (default 25)\n"
               "  --json          print JSON\n"
               "  -h, --help      this text\n");
}

static uint64_t candidate_peak(const struct mt_sim_result *r, int device)
{
    if (device < 0)
        return r->pred_peak;
    for (size_t i = 0; i < r->ndev; i++)
        if ((int)r->dev[i].device == device)
            return r->dev[i].has_allocated ? r->dev[i].pred_allocated : r->dev[i].pred_reserved;
    return 0;
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct candidate *a = pa, *b = pb;
    if (a->fits != b->fits)
        return a->fits ? -1 : 1;
    if (a->fits && a->extra != b->extra)
        return a->extra < b->extra ? -1 : 1;
    if (a->peak != b->peak)
        return a->peak < b->peak ? -1 : 1;
    return strcmp(a->name, b->name);
}

int mt_plan_main(int argc, char **argv)
{
    const char *path = NULL;
    uint64_t budget = 0;
    int device = -1;
    double bw = 0;
    bool json = false, have_budget = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plan_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--budget") || !strcmp(a, "--device") || !strcmp(a, "--bandwidth")) {
            if (i + 1 >= argc)
                return mt_usage_error("plan", "%s needs a value", a);
            const char *v = argv[++i];
            unsigned d;
            char *end;
            if (a[2] == 'b' && a[3] == 'u') {
                if (!mt_parse_size(v, &budget))
                    return mt_usage_error("plan", "bad size '%s'", v);
                have_budget = true;
            } else if (a[2] == 'd') {
                if (!parse_uint(v, 0, 1u << 20, &d))
                    return mt_usage_error("plan", "bad device '%s'", v);
                device = (int)d;
            } else {
                bw = strtod(v, &end);
                if (end == v || *end || bw <= 0)
                    return mt_usage_error("plan", "bad bandwidth '%s'", v);
            }
        } else if (a[0] == '-' && a[1]) {
            return mt_usage_error("plan", "unknown option '%s'", a);
        } else if (path) {
            return mt_usage_error("plan", "one trace at a time (got '%s' too)", a);
        } else {
            path = a;
        }
    }
    if (!path)
        return mt_usage_error("plan", "no trace given%s", "");
    if (!have_budget)
        return mt_usage_error("plan", "--budget SIZE is required%s", "");
    struct mt_sim_base *b;
    struct mt_error err;
    if (mt_sim_open(path, &b, &err) < 0) {
        fprintf(stderr, "memtrace plan: %s\n", err.msg);
        return 1;
    }
    bool cut = cut_short(path);
    if (!mt_sim_phases(b)->marks) {
        no_markers("plan", path, cut);
        mt_sim_close(b);
        return 1;
    }
    if (cut)
        fprintf(stderr, "memtrace plan: %s was cut short; the predictions cover what it holds\n", path);
    bool gpu = false;
    for (size_t i = 0; i < mt_sim_phases(b)->ndev; i++)
        gpu = gpu || (int)mt_sim_phases(b)->dev[i].device == device;
    if (device >= 0 && !gpu) {
        fprintf(stderr, "memtrace plan: %s has no GPU %d\n", path, device);
        mt_sim_close(b);
        return 1;
    }
    static const struct { const char *name; enum mt_ck_mode ck; unsigned k; } cks[] = {
        { "", MT_CK_NONE, 0 }, { "checkpoint every:2", MT_CK_EVERY_K, 2 },
        { "checkpoint sqrt", MT_CK_SQRT, 0 }, { "checkpoint every", MT_CK_EVERY, 0 },
    };
    static const unsigned accums[] = { 1, 2, 4 };
    size_t ncand = 0, cap = 4 * 2 * 2 * 3 * 2;
    struct candidate *c = calloc(cap, sizeof *c);
    if (!c) {
        mt_sim_close(b);
        fprintf(stderr, "memtrace plan: out of memory\n");
        return 1;
    }
    int status = 0;
    for (size_t k = 0; k < 4 && !status; k++)
        for (unsigned q = 0; q < 2 && !status; q++)
            for (unsigned h = 0; h < 2 && !status; h++)
                for (unsigned g = 0; g < 3 && !status; g++)
                    for (unsigned off = 0; off < (device >= 0 ? 2u : 1u) && !status; off++) {
                        struct candidate *x = &c[ncand];
                        mt_sim_opts_init(&x->opts);
                        x->opts.ck = cks[k].ck;
                        x->opts.ck_k = cks[k].k;
                        x->opts.opt_bits = q ? 8 : 0;
                        x->opts.act_bytes = h ? 2 : 0;
                        x->opts.grad_accum = accums[g];
                        x->opts.offload = off ? MT_OFFLOAD_OPTIMIZER : 0;
                        x->opts.bandwidth_gbps = bw;
                        x->opts.device = device;
                        size_t len = 0;
                        x->name[0] = 0;
#define ADD(...) len += (size_t)snprintf(x->name + len, sizeof x->name - len, __VA_ARGS__)
                        if (k)
                            ADD("%s%s", len ? ", " : "", cks[k].name);
                        if (q)
                            ADD("%sint8 optimizer", len ? ", " : "");
                        if (h)
                            ADD("%sbf16 activations", len ? ", " : "");
                        if (accums[g] > 1)
                            ADD("%sgrad-accum %u", len ? ", " : "", accums[g]);
                        if (off)
                            ADD("%soffload optimizer", len ? ", " : "");
                        if (!len)
                            ADD("as traced");
#undef ADD
                        struct mt_sim_result r;
                        if (mt_sim_run(b, &x->opts, &r, &err) < 0) {
                            fprintf(stderr, "memtrace plan: %s\n", err.msg);
                            status = 1;
                            break;
                        }
                        x->peak = candidate_peak(&r, device);
                        x->extra = r.extra_s_per_step;
                        x->fits = x->peak <= budget;
                        mt_sim_result_free(&r);
                        ncand++;
                    }
    mt_sim_close(b);
    if (status) {
        free(c);
        return status;
    }
    qsort(c, ncand, sizeof *c, cand_cmp);
    char a[32], bb[32];
    if (json) {
        cJSON *o = cJSON_CreateObject(), *arr = o ? cJSON_AddArrayToObject(o, "candidates") : NULL;
        bool ok = arr && mt_json_add_u64(o, "budget_bytes", budget) &&
                  (c[0].fits ? cJSON_AddStringToObject(o, "best", c[0].name) != NULL
                             : cJSON_AddNullToObject(o, "best") != NULL);
        for (size_t i = 0; ok && i < ncand; i++) {
            cJSON *x = cJSON_CreateObject();
            ok = x != NULL;
            if (!ok)
                break;
            cJSON_AddItemToArray(arr, x);
            ok = cJSON_AddStringToObject(x, "techniques", c[i].name) &&
                 mt_json_add_u64(x, "predicted_peak_bytes", c[i].peak) &&
                 cJSON_AddNumberToObject(x, "extra_seconds_per_step", c[i].extra) &&
                 cJSON_AddBoolToObject(x, "fits", c[i].fits);
        }
        free(c);
        if (!ok) {
            cJSON_Delete(o);
            o = NULL;
        }
        status = print_json(o);
        if (!status)
            status = finish_output("plan");
        return status ? status : cut ? 3 : 0;
    }
    mt_human_size(budget, a, sizeof a);
    printf("%s: budget %s %s\n", path, a, device >= 0 ? "(GPU)" : "(host heap)");
    if (c[0].fits) {
        mt_human_size(c[0].peak, bb, sizeof bb);
        printf("cheapest that fits: %s (predicted peak %s, %+.4f s per step)\n", c[0].name, bb, c[0].extra);
    } else {
        mt_human_size(c[0].peak, bb, sizeof bb);
        printf("nothing tried fits: the smallest predicted peak is %s (%s)\n", bb, c[0].name);
    }
    printf("\n    %-70s %12s %12s  %s\n", "techniques", "peak", "s/step", "");
    for (size_t i = 0; i < ncand; i++) {
        mt_human_size(c[i].peak, bb, sizeof bb);
        char why[64] = "fits";
        if (!c[i].fits) {
            char miss[32];
            mt_human_size(c[i].peak - budget, miss, sizeof miss);
            snprintf(why, sizeof why, "over by %s", miss);
        }
        printf("    %-70s %12s %+12.4f  %s\n", c[i].name, bb, c[i].extra, why);
    }
    free(c);
    status = finish_output("plan");
    return status ? status : cut ? 3 : 0;
}
