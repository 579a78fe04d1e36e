/* devices (analyzer/devices.c): the report's per-device GPU numbers from
 * traces of programs that use the stand-in driver (tests/fake-cuda), whose
 * allocations the test knows: reserved from synchronous allocations, or
 * from a stream-ordered pool's reservation; allocated from stream-ordered
 * allocations; device memory in all. (Per-tensor events and categories:
 * test-phases.c.)
 */
#include <criterion/criterion.h>

#include <string.h>

#include "test-util.h"

#define MiB (1ull << 20)

TestSuite(devices, .init = tu_make_tmpdir, .fini = tu_remove_tmpdir);

static void report_of(const char *scenario, struct mt_report *rep)
{
    char *trace = tu_in_tmp("gpu.bin");
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "run", "-q", "-o", trace, "--",
                     (char *)tu_env("MEMTRACE_TEST_CUDA_DIRECT"), (char *)scenario, NULL };
    tu_expect_exit(tu_run(argv), 0);
    tu_report_of(trace, rep);
    cr_assert(rep->has_phases, "no GPU numbers for %s", scenario);
}

static const struct mt_device_stat *device(const struct mt_report *rep, uint32_t dev)
{
    for (size_t i = 0; i < rep->phases.ndev; i++)
        if (rep->phases.dev[i].device == dev)
            return &rep->phases.dev[i];
    cr_assert_fail("no device %u", dev);
    return NULL;
}

Test(devices, stream_ordered_pool_is_reserved_and_its_allocations_allocated)
{
    /* cuda-direct async: on device 1, 3 x 3 MiB from the device's pool and
     * 2 x 5 MiB from another pool, all freed; the pools hold 10 MiB each at
     * the end (the stand-in never trims). */
    struct mt_report rep;
    report_of("async", &rep);
    const struct mt_device_stat *d = device(&rep, 1);
    cr_expect(d->has_reserved);
    cr_expect(!d->has_framework);
    cr_expect_eq(d->reserved_peak.bytes, 20 * MiB);
    cr_expect_eq(d->reserved_end, 20 * MiB);
    cr_expect_eq(d->allocated_source, MT_ALLOCATED_ASYNC);
    cr_expect_eq(d->allocated_peak.bytes, 19 * MiB);
    cr_expect_eq(d->allocated_end, 0);
    cr_expect_eq(d->total_peak.bytes, 20 * MiB);
    cr_expect_eq(d->space_peak[MT_GPU_SPACE_POOL], 20 * MiB);
    mt_report_destroy(&rep);
}

Test(devices, synchronous_allocations_are_reserved_and_ooms_are_kept)
{
    /* cuda-direct oom: 600 MiB fits, a second 600 MiB and a 2 GiB
     * cuMemCreate do not; then the first is freed. */
    struct mt_report rep;
    report_of("oom", &rep);
    const struct mt_device_stat *d = device(&rep, 0);
    cr_expect_eq(d->reserved_peak.bytes, 600 * MiB);
    cr_expect_eq(d->reserved_end, 0);
    cr_expect_eq(d->allocated_source, MT_ALLOCATED_NONE);
    cr_assert_eq(d->noom, 2);
    cr_expect_eq(d->oom[0].size, 600 * MiB);
    cr_expect_eq(d->oom[0].reserved_bytes, 600 * MiB);
    cr_expect_eq(d->oom[0].result, 2);
    cr_expect_eq(d->oom[1].size, 2048 * MiB);
    /* The OOM's stack was resolved for the report. */
    cr_assert(rep.phases.oom_sites && rep.phases.oom_sites[0]);
    cr_expect_gt(rep.phases.oom_sites[0][0].nframes, 0);
    cJSON *j = mt_report_to_json(&rep);
    cJSON *dev = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "devices"), 0);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(dev, "oom_events")), 2);
    cJSON_Delete(j);
    mt_report_destroy(&rep);
}
