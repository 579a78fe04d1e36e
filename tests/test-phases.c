/* phases (analyzer/phases.c) end to end: examples/phases.c marks its phases,
 * steps, modules and categories with include/memtrace.h and prints what
 * memtrace must report for it; the report of its trace must say exactly
 * that. Also: the same binary without memtrace runs the same, and the
 * report's JSON carries the contract keys.
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test-util.h"

TestSuite(phases, .init = tu_make_tmpdir, .fini = tu_remove_tmpdir);

/* The value of "expect KEY V" in text (the program's stdout). */
static uint64_t expected(const char *text, const char *key)
{
    char want[128];
    snprintf(want, sizeof want, "expect %s ", key);
    const char *p = strstr(text, want);
    cr_assert(p, "the program printed no '%s'", key);
    return strtoull(p + strlen(want), NULL, 10);
}

static const struct mt_phase_stat *phase(const struct mt_phases *p, const char *name)
{
    for (size_t i = 0; i < p->nphase; i++)
        if (!strcmp(p->phase[i].name, name))
            return &p->phase[i];
    cr_assert_fail("no phase %s in the report", name);
    return NULL;
}

static size_t category(const struct mt_phases *p, const char *name)
{
    for (size_t i = 0; i < p->ncat; i++)
        if (!strcmp(p->cat_name[i], name))
            return i;
    cr_assert_fail("no category %s in the report", name);
    return 0;
}

/* A u64 the report wrote as an exact integer literal (a raw JSON item). */
static uint64_t json_u64(cJSON *o, const char *key)
{
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert(x && (cJSON_IsRaw(x) || cJSON_IsNumber(x)), "missing %s", key);
    return cJSON_IsRaw(x) ? strtoull(x->valuestring, NULL, 10) : (uint64_t)x->valuedouble;
}

static char *trace_example(const char *steps)
{
    char *trace = tu_in_tmp("phases.bin");
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "run", "-q", "-o", trace, "--",
                     (char *)tu_env("MEMTRACE_TEST_EXAMPLE"), (char *)steps, NULL };
    tu_expect_exit(tu_run(argv), 0);
    return trace;
}

Test(phases, c_example_gets_exact_peaks_per_phase_step_category_and_module)
{
    char *trace = trace_example("3");
    char *out = strdup(tu_slurp("stdout"));
    struct mt_report rep;
    tu_report_of(trace, &rep);
    cr_assert(rep.has_phases);
    const struct mt_phases *p = &rep.phases;

    cr_assert_eq(rep.host.peak_bytes, expected(out, "peak"));
    cr_assert_eq(p->peak.bytes, rep.host.peak_bytes);
    const char *names[] = { "other", "forward", "backward", "optimizer" };
    for (size_t i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof key, "phase.%s", names[i]);
        cr_expect_eq(phase(p, names[i])->peak.bytes, expected(out, key), "%s: %" PRIu64, names[i],
                     phase(p, names[i])->peak.bytes);
        cr_expect_eq(phase(p, names[i])->instances, i == 0 ? 9u : 3u, "%s", names[i]);
    }

    cr_assert_eq(p->nstep, expected(out, "steps"));
    for (size_t i = 0; i < p->nstep; i++)
        cr_expect_eq(p->step[i].step, i);
    const struct mt_step_stat *last = &p->step[p->nstep - 1];
    for (size_t i = 1; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof key, "last_step.%s", names[i]);
        size_t k = (size_t)(phase(p, names[i]) - p->phase);
        cr_expect_eq(last->phase[k].bytes, expected(out, key), "%s", key);
    }

    const char *cats[] = { "parameters", "gradients", "optimizer_state", "activations", "temporaries" };
    for (size_t i = 0; i < 5; i++) {
        char key[64];
        snprintf(key, sizeof key, "category.%s", cats[i]);
        cr_expect_eq(p->cat_peak[category(p, cats[i])], expected(out, key), "%s: %" PRIu64, cats[i],
                     p->cat_peak[category(p, cats[i])]);
    }
    cr_expect_eq(p->cat_peak[category(p, "other")], 0);
    /* At the heap peak (in a backward, first step: gradients being made
     * while activations are still live) the breakdown adds up. */
    uint64_t sum = 0;
    for (size_t c = 0; c < p->ncat; c++)
        sum += p->cat_at_peak[c];
    cr_expect_eq(sum, p->peak.bytes);
    cr_expect_eq(p->cat_at_peak[category(p, "parameters")], expected(out, "category.parameters"));

    /* Modules: layers.L holds its scratch buffer and activation at once. */
    const uint64_t act[] = { 30000, 30000, 30000, 10000 };
    cr_assert_eq(p->nmodule, 4);
    for (size_t i = 0; i < p->nmodule; i++) {
        int l = p->module[i].path[strlen(p->module[i].path) - 1] - '0';
        cr_assert(l >= 0 && l < 4, "%s", p->module[i].path);
        cr_expect_eq(p->module[i].peak_bytes, act[l] + 5000, "%s", p->module[i].path);
        cr_expect_eq(p->module[i].alloc_count, 6, "%s", p->module[i].path);
    }
    cr_expect_eq(p->tags_unmatched, 0);
    cr_expect(p->mean_live_bytes > 0 && p->mean_live_bytes <= p->peak.bytes);
    mt_report_destroy(&rep);

    /* The JSON carries the contract keys. */
    cJSON *j = mt_report_to_json(&(struct mt_report){ 0 });
    cr_assert(j);
    cr_expect(cJSON_GetObjectItem(j, "phases") && cJSON_GetObjectItem(j, "steps") &&
              cJSON_GetObjectItem(j, "categories") && cJSON_GetObjectItem(j, "categories_at_peak") &&
              cJSON_GetObjectItem(j, "modules"));
    cJSON_Delete(j);
    tu_report_of(trace, &rep);
    j = mt_report_to_json(&rep);
    cJSON *fw = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "phases"), "forward");
    cr_assert(fw);
    cr_expect_eq(json_u64(fw, "peak_bytes"),
                 expected(out, "phase.forward"));
    cr_expect(cJSON_GetObjectItem(fw, "peak_time_ns"));
    cJSON *cat = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "categories"), "optimizer_state");
    cr_expect_eq(json_u64(cat, "peak_bytes"),
                 expected(out, "category.optimizer_state"));
    cJSON *steps = cJSON_GetObjectItem(j, "steps");
    cr_expect_eq(cJSON_GetArraySize(steps), 3);
    cr_expect(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(steps, 0), "phases"), "backward"));
    cJSON_Delete(j);
    mt_report_destroy(&rep);
    free(out);
}

Test(phases, without_memtrace_the_calls_do_nothing)
{
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_EXAMPLE"), "2", NULL };
    tu_expect_exit(tu_run(argv), 0);
    char *out = tu_slurp("stdout");
    cr_expect(strstr(out, "expect phase.forward "), "%s", out);
}

Test(phases, a_program_without_markers_has_no_phases)
{
    char *trace = tu_in_tmp("plain.bin");
    tu_trace_pattern("basic", trace);
    struct mt_report rep;
    tu_report_of(trace, &rep);
    cr_expect(!rep.has_phases);
    cr_expect_eq(rep.marks, 0);
    mt_report_destroy(&rep);
}

/* The device of that number in the report. */
static const struct mt_device_stat *device(const struct mt_phases *p, uint32_t dev)
{
    for (size_t i = 0; i < p->ndev; i++)
        if (p->dev[i].device == dev)
            return &p->dev[i];
    cr_assert_fail("no device %u in the report", dev);
    return NULL;
}

Test(phases, gpu_tensor_events_give_allocated_peaks_per_device_phase_and_category)
{
    char *trace = tu_in_tmp("gpu.bin");
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "run", "-q", "-o", trace, "--",
                     (char *)tu_env("MEMTRACE_TEST_GPU_TENSORS"), NULL };
    tu_expect_exit(tu_run(argv), 0);
    struct mt_report rep;
    tu_report_of(trace, &rep);
    cr_assert(rep.has_phases);
    const struct mt_phases *p = &rep.phases;
    cr_assert_eq(p->ndev, 2);
    const struct mt_device_stat *d0 = device(p, 0), *d1 = device(p, 1);
    cr_expect_eq(d0->allocated_source, MT_ALLOCATED_TENSOR);
    cr_expect(!d0->has_reserved);
    cr_expect_eq(d0->allocated_peak.bytes, 4000);
    cr_expect_eq(d0->allocated_end, 4000);
    cr_expect_eq(d0->alloc_count, 5);
    cr_expect_eq(d0->free_count, 2);
    cr_expect_eq(d0->unmatched_frees, 1);
    const uint64_t want[] = { 4000, 1500, 2500, 4000 }; /* other forward backward optimizer */
    const char *names[] = { "other", "forward", "backward", "optimizer" };
    for (size_t i = 0; i < 4; i++) {
        size_t k = (size_t)(phase(p, names[i]) - p->phase);
        cr_expect_eq(d0->phase_allocated[k].bytes, want[i], "%s", names[i]);
        cr_expect_eq(d1->phase_allocated[k].bytes, 4096u, "%s", names[i]);
    }
    cr_expect_eq(d0->cat_at_peak[category(p, "parameters")], 1000);
    cr_expect_eq(d0->cat_at_peak[category(p, "gradients")], 1000);
    cr_expect_eq(d0->cat_at_peak[category(p, "optimizer_state")], 2000);
    cr_expect_eq(d0->cat_peak[category(p, "activations")], 500);
    cr_expect_eq(d1->allocated_peak.bytes, 4096);
    cr_expect_eq(d1->allocated_end, 0);
    cr_expect_eq(p->gpu_tags, 3);
    cr_expect_eq(p->gpu_tags_unmatched, 0);
    /* The host numbers are untouched by GPU records. */
    cr_expect_eq(p->cat_peak[category(p, "parameters")], 0);
    mt_report_destroy(&rep);
}
