/* phases-report: phases.h's numbers as JSON keys and as text sections of
 * `memtrace report` (kept apart from phases.c, which needs neither cJSON
 * nor stdio formatting). JSON keys (docs/REPORT.md): phases.<name>,
 * steps[], categories.<name>.peak_bytes, categories_at_peak.<name>,
 * modules[], memory_efficiency, mean_live_bytes, marks; without markers
 * the same keys with empty values, so consumers need not test for them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "phases.h"
#include "report.h"

static bool add_categories(cJSON *o, const struct mt_phases *p, const uint64_t *v)
{
    for (size_t c = 0; c < p->ncat; c++)
        if (!mt_json_add_u64(o, p->cat_name[c], v[c]))
            return false;
    return true;
}

static bool add_gpu_peak(cJSON *o, const char *key, const struct mt_gpu_peak *pk, bool known)
{
    return known && pk->seq ? mt_json_add_u64(o, key, pk->bytes) != NULL : cJSON_AddNullToObject(o, key) != NULL;
}

static bool add_device_json(cJSON *arr, const struct mt_phases *p, const struct mt_device_stat *d,
                            const struct mt_report_site *oom_sites)
{
    cJSON *x = cJSON_CreateObject();
    if (!x)
        return false;
    cJSON_AddItemToArray(arr, x);
    bool has_alloc = d->allocated_source != MT_ALLOCATED_NONE;
    const char *src = mt_alloc_source_name(d->allocated_source);
    bool ok = mt_json_add_u64(x, "device", d->device) &&
              add_gpu_peak(x, "reserved_peak_bytes", &d->reserved_peak, d->has_reserved) &&
              mt_json_add_u64(x, "reserved_peak_time_ns", d->reserved_peak.time_ns) &&
              add_gpu_peak(x, "allocated_peak_bytes", &d->allocated_peak, has_alloc) &&
              mt_json_add_u64(x, "allocated_peak_time_ns", d->allocated_peak.time_ns) &&
              (src ? cJSON_AddStringToObject(x, "allocated_source", src) != NULL
                   : cJSON_AddNullToObject(x, "allocated_source") != NULL) &&
              mt_json_add_u64(x, "reserved_end_bytes", d->reserved_end) &&
              (has_alloc ? mt_json_add_u64(x, "allocated_end_bytes", d->allocated_end) != NULL
                         : cJSON_AddNullToObject(x, "allocated_end_bytes") != NULL) &&
              add_gpu_peak(x, "unaccounted_peak_bytes", &d->unaccounted_peak, d->has_framework) &&
              add_gpu_peak(x, "device_memory_peak_bytes", &d->total_peak, d->total_peak.bytes > 0) &&
              cJSON_AddBoolToObject(x, "framework_allocator_seen", d->has_framework) &&
              mt_json_add_u64(x, "alloc_count", d->alloc_count) && mt_json_add_u64(x, "free_count", d->free_count) &&
              mt_json_add_u64(x, "unmatched_free_count", d->unmatched_frees);
    cJSON *sp = ok ? cJSON_AddObjectToObject(x, "spaces") : NULL;
    ok = sp != NULL;
    for (unsigned k = 0; ok && k < MT_GPU_SPACE_COUNT; k++) {
        if (!d->space_peak[k])
            continue;
        cJSON *y = cJSON_AddObjectToObject(sp, mt_gpu_space_name(k));
        ok = y && mt_json_add_u64(y, "peak_bytes", d->space_peak[k]) && mt_json_add_u64(y, "end_bytes", d->space_end[k]);
    }
    cJSON *ph = ok ? cJSON_AddObjectToObject(x, "phases") : NULL;
    ok = ph != NULL;
    for (size_t i = 0; ok && i < p->nphase; i++) {
        if (!d->phase_reserved[i].seq && !d->phase_allocated[i].seq)
            continue;
        cJSON *y = cJSON_AddObjectToObject(ph, p->phase[i].name);
        ok = y && add_gpu_peak(y, "reserved_peak_bytes", &d->phase_reserved[i], d->has_reserved) &&
             add_gpu_peak(y, "allocated_peak_bytes", &d->phase_allocated[i], has_alloc) &&
             add_gpu_peak(y, "unaccounted_peak_bytes", &d->phase_unaccounted[i], d->has_framework);
    }
    cJSON *cat = ok ? cJSON_AddObjectToObject(x, "categories_at_peak") : NULL;
    ok = cat && add_categories(cat, p, d->cat_at_peak);
    cJSON *cats = ok ? cJSON_AddObjectToObject(x, "categories") : NULL;
    ok = cats != NULL;
    for (size_t c = 0; ok && c < p->ncat; c++) {
        cJSON *y = cJSON_AddObjectToObject(cats, p->cat_name[c]);
        ok = y && mt_json_add_u64(y, "peak_bytes", d->cat_peak[c]);
    }
    cJSON *oom = ok ? cJSON_AddArrayToObject(x, "oom_events") : NULL;
    ok = oom != NULL;
    for (size_t i = 0; ok && i < d->noom; i++) {
        const struct mt_oom_event *e = &d->oom[i];
        cJSON *y = cJSON_CreateObject();
        ok = y != NULL;
        if (!ok)
            break;
        cJSON_AddItemToArray(oom, y);
        ok = mt_json_add_u64(y, "time_ns", e->time_ns) && mt_json_add_u64(y, "size", e->size) &&
             cJSON_AddStringToObject(y, "api", mt_gpu_api_name(e->api)) &&
             cJSON_AddStringToObject(y, "space", mt_gpu_space_name(e->space)) &&
             mt_json_add_u64(y, "result", e->result) &&
             cJSON_AddStringToObject(y, "phase", p->phase[e->phase].name) &&
             (e->step >= 0 ? mt_json_add_u64(y, "step", p->step[e->step].step) != NULL
                           : cJSON_AddNullToObject(y, "step") != NULL) &&
             mt_json_add_u64(y, "reserved_bytes", e->reserved_bytes) &&
             mt_json_add_u64(y, "allocated_bytes", e->allocated_bytes);
        if (ok && oom_sites)
            ok = mt_report_add_frames_json(y, &oom_sites[i]);
    }
    return ok;
}

bool mt_phases_add_json(cJSON *o, const struct mt_phases *p, size_t top_modules)
{
    cJSON *ph = cJSON_AddObjectToObject(o, "phases");
    bool ok = ph != NULL;
    for (size_t i = 0; ok && p && i < p->nphase; i++) {
        const struct mt_phase_stat *s = &p->phase[i];
        if (!s->peak.seq)
            continue; /* never current ("other" in a program that is always in a phase) */
        cJSON *x = cJSON_AddObjectToObject(ph, s->name);
        cJSON *cat = x && mt_json_add_u64(x, "peak_bytes", s->peak.bytes) &&
                             mt_json_add_u64(x, "peak_time_ns", s->peak.time_ns) &&
                             mt_json_add_u64(x, "time_ns", s->time_ns) &&
                             mt_json_add_u64(x, "instances", s->instances)
                         ? cJSON_AddObjectToObject(x, "categories_at_peak")
                         : NULL;
        ok = cat && add_categories(cat, p, s->cat_at_peak);
    }
    cJSON *steps = ok ? cJSON_AddArrayToObject(o, "steps") : NULL;
    ok = steps != NULL;
    for (size_t i = 0; ok && p && i < p->nstep; i++) {
        const struct mt_step_stat *st = &p->step[i];
        cJSON *x = cJSON_CreateObject();
        ok = x != NULL;
        if (!ok)
            break;
        cJSON_AddItemToArray(steps, x);
        cJSON *sp = mt_json_add_u64(x, "step", st->step) && mt_json_add_u64(x, "start_ns", st->start_ns) &&
                            mt_json_add_u64(x, "peak_bytes", st->peak.bytes) &&
                            mt_json_add_u64(x, "peak_time_ns", st->peak.time_ns)
                        ? cJSON_AddObjectToObject(x, "phases")
                        : NULL;
        ok = sp != NULL;
        for (size_t k = 0; ok && k < p->nphase; k++) {
            if (!st->phase[k].seq)
                continue;
            cJSON *y = cJSON_AddObjectToObject(sp, p->phase[k].name);
            ok = y && mt_json_add_u64(y, "peak_bytes", st->phase[k].bytes) &&
                 mt_json_add_u64(y, "peak_time_ns", st->phase[k].time_ns);
        }
    }
    cJSON *cats = ok ? cJSON_AddObjectToObject(o, "categories") : NULL;
    ok = cats != NULL;
    for (size_t c = 0; ok && p && c < p->ncat; c++) {
        cJSON *x = cJSON_AddObjectToObject(cats, p->cat_name[c]);
        ok = x && mt_json_add_u64(x, "peak_bytes", p->cat_peak[c]);
    }
    cJSON *atp = ok ? cJSON_AddObjectToObject(o, "categories_at_peak") : NULL;
    ok = atp && (!p || add_categories(atp, p, p->cat_at_peak));
    cJSON *mods = ok ? cJSON_AddArrayToObject(o, "modules") : NULL;
    ok = mods != NULL;
    for (size_t i = 0; ok && p && i < p->nmodule && i < top_modules; i++) {
        const struct mt_module_stat *m = &p->module[i];
        cJSON *x = cJSON_CreateObject();
        ok = x != NULL;
        if (!ok)
            break;
        cJSON_AddItemToArray(mods, x);
        ok = cJSON_AddStringToObject(x, "path", m->path) && mt_json_add_u64(x, "peak_bytes", m->peak_bytes) &&
             mt_json_add_u64(x, "self_peak_bytes", m->self_peak_bytes) &&
             mt_json_add_u64(x, "alloc_count", m->alloc_count) &&
             mt_json_add_u64(x, "alloc_bytes", m->alloc_bytes);
    }
    cJSON *devs = ok ? cJSON_AddArrayToObject(o, "devices") : NULL;
    ok = devs != NULL;
    for (size_t i = 0; ok && p && i < p->ndev; i++)
        ok = add_device_json(devs, p, &p->dev[i], p->oom_sites ? p->oom_sites[i] : NULL);
    for (size_t i = 0; ok && p && i < p->nstep; i++) {
        const struct mt_step_stat *st = &p->step[i];
        if (!st->ndev)
            continue;
        cJSON *sd = cJSON_AddArrayToObject(cJSON_GetArrayItem(steps, (int)i), "devices");
        ok = sd != NULL;
        for (size_t k = 0; ok && k < st->ndev; k++) {
            const struct mt_step_device *e = &st->dev[k];
            cJSON *y = cJSON_CreateObject();
            ok = y != NULL;
            if (!ok)
                break;
            cJSON_AddItemToArray(sd, y);
            const struct mt_device_stat *d = NULL;
            for (size_t j = 0; j < p->ndev && !d; j++)
                d = p->dev[j].device == e->device ? &p->dev[j] : NULL;
            ok = d && mt_json_add_u64(y, "device", e->device) &&
                 cJSON_AddStringToObject(y, "phase", p->phase[e->phase].name) &&
                 add_gpu_peak(y, "reserved_peak_bytes", &e->reserved, d->has_reserved) &&
                 add_gpu_peak(y, "allocated_peak_bytes", &e->allocated,
                              d->allocated_source != MT_ALLOCATED_NONE);
        }
    }
    if (!ok)
        return false;
    if (!p)
        return cJSON_AddNullToObject(o, "memory_efficiency") && cJSON_AddNullToObject(o, "mean_live_bytes") &&
               mt_json_add_u64(o, "marks", 0);
    double eff = p->peak.bytes ? (double)p->mean_live_bytes / (double)p->peak.bytes : 0.0;
    return cJSON_AddNumberToObject(o, "memory_efficiency", eff) &&
           mt_json_add_u64(o, "mean_live_bytes", p->mean_live_bytes) && mt_json_add_u64(o, "marks", p->marks);
}

static void size_text(uint64_t v, char *buf, size_t n)
{
    mt_human_size(v, buf, n);
}

static void print_breakdown(FILE *f, const struct mt_phases *p, const uint64_t *v, uint64_t total)
{
    char a[32];
    for (size_t c = 0; c < p->ncat; c++) {
        if (!v[c])
            continue;
        size_text(v[c], a, sizeof a);
        fprintf(f, "    %-18s %10s  %5.1f%%\n", p->cat_name[c], a,
                total ? 100.0 * (double)v[c] / (double)total : 0.0);
    }
}

static void gpu_cell(const struct mt_gpu_peak *pk, bool known, char *buf, size_t n)
{
    if (known && pk->seq)
        size_text(pk->bytes, buf, n);
    else
        snprintf(buf, n, "-");
}

static void print_device(FILE *f, const struct mt_phases *p, const struct mt_device_stat *d,
                         const struct mt_report_site *oom_sites)
{
    char a[32], b[32];
    bool has_alloc = d->allocated_source != MT_ALLOCATED_NONE;
    gpu_cell(&d->reserved_peak, d->has_reserved, a, sizeof a);
    gpu_cell(&d->allocated_peak, has_alloc, b, sizeof b);
    fprintf(f, "\nGPU %u: reserved peak %s, allocated peak %s%s%s%s\n", d->device, a, b,
            has_alloc ? " (from " : " (no per-tensor events)", has_alloc ? mt_alloc_source_name(d->allocated_source) : "",
            has_alloc ? ")" : "");
    if (d->has_framework) {
        gpu_cell(&d->unaccounted_peak, true, a, sizeof a);
        gpu_cell(&d->total_peak, true, b, sizeof b);
        fprintf(f, "    outside the framework's allocator: peak %s (device memory in all: peak %s)\n", a, b);
    }
    fprintf(f, "    %-18s %12s %12s\n", "phase", "reserved", "allocated");
    for (size_t i = 0; i < p->nphase; i++) {
        if (!d->phase_reserved[i].seq && !d->phase_allocated[i].seq)
            continue;
        gpu_cell(&d->phase_reserved[i], d->has_reserved, a, sizeof a);
        gpu_cell(&d->phase_allocated[i], has_alloc, b, sizeof b);
        fprintf(f, "    %-18s %12s %12s\n", p->phase[i].name, a, b);
    }
    for (unsigned k = 0; k < MT_GPU_SPACE_COUNT; k++) {
        if (!d->space_peak[k] || k == MT_GPU_SPACE_DEVICE)
            continue;
        size_text(d->space_peak[k], a, sizeof a);
        fprintf(f, "    %s peak %s\n", mt_gpu_space_name(k), a);
    }
    uint64_t total = 0;
    for (size_t c = 0; c < p->ncat; c++)
        total += d->cat_at_peak[c];
    if (total) {
        fprintf(f, "  breakdown at the %s peak\n", has_alloc ? "allocated" : "reserved");
        print_breakdown(f, p, d->cat_at_peak, total);
    }
    for (size_t i = 0; i < d->noom; i++) {
        const struct mt_oom_event *e = &d->oom[i];
        size_text(e->size, a, sizeof a);
        size_text(e->reserved_bytes, b, sizeof b);
        fprintf(f, "  OUT OF MEMORY at %.3f s in %s", (double)e->time_ns / 1e9, p->phase[e->phase].name);
        if (e->step >= 0)
            fprintf(f, " (step %" PRIu64 ")", p->step[e->step].step);
        fprintf(f, ": %s of %s failed (error %" PRIu64 ") with %s reserved\n", mt_gpu_api_name(e->api), a,
                e->result, b);
        if (oom_sites)
            mt_report_print_site_frames(f, &oom_sites[i], MT_REPORT_DEFAULT_FRAMES);
    }
}

void mt_phases_print(FILE *f, const struct mt_phases *p, unsigned top)
{
    char a[32], b[32];
    fputs("\nPhases (heap peak while each phase was current)\n", f);
    fprintf(f, "    %-18s %10s %12s %10s %10s\n", "phase", "peak", "at", "time", "entered");
    for (size_t i = 0; i < p->nphase; i++) {
        const struct mt_phase_stat *s = &p->phase[i];
        if (!s->peak.seq)
            continue;
        size_text(s->peak.bytes, a, sizeof a);
        fprintf(f, "    %-18s %10s %10.3f s %8.3f s %10" PRIu64 "\n", s->name, a,
                (double)s->peak.time_ns / 1e9, (double)s->time_ns / 1e9, s->instances);
    }
    size_text(p->peak.bytes, a, sizeof a);
    fprintf(f, "\nBreakdown at the heap peak (%s at %.3f s)\n", a, (double)p->peak.time_ns / 1e9);
    print_breakdown(f, p, p->cat_at_peak, p->peak.bytes);
    for (size_t i = 0; i < p->nphase; i++) {
        const struct mt_phase_stat *s = &p->phase[i];
        if (!s->peak.seq || s->peak.seq == p->peak.seq)
            continue;
        size_text(s->peak.bytes, a, sizeof a);
        fprintf(f, "  at the peak of %s (%s)\n", s->name, a);
        print_breakdown(f, p, s->cat_at_peak, s->peak.bytes);
    }
    fputs("\nCategories (most bytes live at once)\n", f);
    for (size_t c = 0; c < p->ncat; c++) {
        size_text(p->cat_peak[c], a, sizeof a);
        fprintf(f, "    %-18s %10s\n", p->cat_name[c], a);
    }
    size_text(p->mean_live_bytes, a, sizeof a);
    fprintf(f, "\nMemory efficiency: %.1f%% (mean live %s over the peak)\n",
            p->peak.bytes ? 100.0 * (double)p->mean_live_bytes / (double)p->peak.bytes : 0.0, a);
    if (p->nstep) {
        fprintf(f, "\nSteps: %zu\n", p->nstep);
        fprintf(f, "    %-8s %10s", "step", "peak");
        for (size_t k = 1; k < p->nphase && k < 6; k++)
            fprintf(f, " %12.12s", p->phase[k].name);
        fputc('\n', f);
        for (size_t i = 0; i < p->nstep; i++) {
            if (top && p->nstep > 2u * top && i == top) {
                fprintf(f, "    ... %zu more\n", p->nstep - 2u * top);
                i = p->nstep - top;
            }
            const struct mt_step_stat *st = &p->step[i];
            size_text(st->peak.bytes, a, sizeof a);
            fprintf(f, "    %-8" PRIu64 " %10s", st->step, a);
            for (size_t k = 1; k < p->nphase && k < 6; k++) {
                if (st->phase[k].seq)
                    size_text(st->phase[k].bytes, b, sizeof b);
                else
                    strcpy(b, "-");
                fprintf(f, " %12s", b);
            }
            fputc('\n', f);
        }
    }
    if (p->nmodule) {
        fputs("\nModules by peak bytes (allocated under them, submodules included)\n", f);
        for (size_t i = 0; i < p->nmodule && i < top; i++) {
            size_text(p->module[i].peak_bytes, a, sizeof a);
            size_text(p->module[i].self_peak_bytes, b, sizeof b);
            fprintf(f, "    %10s  (self %10s)  %s\n", a, b, p->module[i].path);
        }
    }
    for (size_t i = 0; i < p->ndev; i++)
        print_device(f, p, &p->dev[i], p->oom_sites ? p->oom_sites[i] : NULL);
    if (p->tags_unmatched)
        fprintf(f, "\n%" PRIu64 " of %" PRIu64 " tags named no live allocation\n", p->tags_unmatched,
                p->tags);
}
