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
    if (p->tags_unmatched)
        fprintf(f, "\n%" PRIu64 " of %" PRIu64 " tags named no live allocation\n", p->tags_unmatched,
                p->tags);
}
