/* simulate (analyzer/simulate.c): predictions on examples/phases.c, whose
 * allocations are known (see its header), worked out by hand:
 * parameters 220000 B; each step's forward keeps one activation per layer
 * (30000, 30000, 30000, 10000) with a 5000 B scratch buffer around each;
 * gradients (220000) appear in the first backward, optimizer state
 * (2 x 220000, in tensors of 80000, 160000, 160000 and 40000 B) in the
 * first optimizer step. The baseline peak, 985000, is in a later forward:
 * 880000 of state + 90000 + 5000 + 10000.
 */
#include <criterion/criterion.h>

#include <string.h>
#include <sys/wait.h>

#include "simulate.h"
#include "test-util.h"

TestSuite(simulate, .init = tu_make_tmpdir, .fini = tu_remove_tmpdir);

static struct mt_sim_base *base;

static void open_example(void)
{
    char *trace = tu_in_tmp("phases.bin");
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "run", "-q", "-o", trace, "--",
                     (char *)tu_env("MEMTRACE_TEST_EXAMPLE"), "3", NULL };
    tu_expect_exit(tu_run(argv), 0);
    struct mt_error err;
    cr_assert_eq(mt_sim_open(trace, &base, &err), 0, "%s", err.msg);
    cr_assert_eq(mt_sim_chain(base)->n, 4, "the chain: layers.0 .. layers.3");
    cr_assert_str_eq(mt_sim_chain(base)->prefix, "layers");
}

static uint64_t phase_peak(const struct mt_sim_result *r, const char *name)
{
    for (size_t i = 0; i < r->nphase; i++)
        if (!strcmp(r->phase[i].name, name))
            return r->phase[i].pred_peak;
    cr_assert_fail("no phase %s", name);
    return 0;
}

static struct mt_sim_result run(struct mt_sim_opts *o)
{
    struct mt_sim_result r;
    struct mt_error err;
    cr_assert_eq(mt_sim_run(base, o, &r, &err), 0, "%s", err.msg);
    cr_expect_eq(r.base_peak, 985000);
    cr_expect_eq(r.steps, 3);
    return r;
}

Test(simulate, nothing_applied_predicts_the_baseline)
{
    open_example();
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    struct mt_sim_result r = run(&o);
    cr_expect_eq(r.pred_peak, 985000);
    cr_expect_eq(phase_peak(&r, "backward"), 980000);
    cr_expect_eq(phase_peak(&r, "optimizer"), 885000);
    mt_sim_result_free(&r);
    mt_sim_close(base);
}

Test(simulate, int8_optimizer_state)
{
    open_example();
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    o.opt_bits = 8;
    struct mt_sim_result r = run(&o);
    /* v values: v codes + 4 * ceil(v / 128) absmax bytes:
     * 20000 -> 20628, 40000 -> 41252 (twice), 10000 -> 10316 */
    uint64_t state = 20628 + 2 * 41252 + 10316;
    cr_expect_eq(r.pred_peak, 985000 - 440000 + state);
    cr_expect_eq(phase_peak(&r, "optimizer"), 885000 - 440000 + state);
    mt_sim_result_free(&r);
    mt_sim_close(base);
}

Test(simulate, gradient_accumulation_halves_activations_and_scratch)
{
    open_example();
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    o.grad_accum = 2;
    struct mt_sim_result r = run(&o);
    cr_expect_eq(r.pred_peak, 880000 + (90000 + 5000 + 10000) / 2);
    mt_sim_result_free(&r);
    mt_sim_close(base);
}

Test(simulate, offloading_optimizer_state_to_disk)
{
    open_example();
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    o.offload = MT_OFFLOAD_OPTIMIZER;
    o.offload_disk = true;
    o.bandwidth_gbps = 1.0;
    struct mt_sim_result r = run(&o);
    cr_expect_eq(r.pred_peak, 985000 - 440000);
    cr_expect_eq(r.offloaded_peak, 440000);
    cr_expect_float_eq(r.transfer_s, 2 * 440000 / 1e9, 1e-12);
    mt_sim_result_free(&r);
    mt_sim_close(base);
}

Test(simulate, checkpointing)
{
    open_example();
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    /* Each layer alone: its one activation is its output, kept: no saving. */
    o.ck = MT_CK_EVERY;
    struct mt_sim_result r = run(&o);
    cr_expect_eq(r.pred_peak, 985000);
    cr_expect_eq(r.ck_blocks, 4);
    cr_expect_gt(r.recompute_s, 0);
    mt_sim_result_free(&r);
    /* sqrt: segments 0-1 and 2-3 keep only their last layer's activation:
     * the forward peak (in layer 3) holds layers 1 and 2 (30000 each), the
     * scratch and layer 3's 10000; in backward segment 2-3 is remade when
     * layer 2's activation is freed (layer 3's is gone by then): 880000 +
     * layers 1 and 2, plus the recompute's 5000 scratch. */
    mt_sim_opts_init(&o);
    o.ck = MT_CK_SQRT;
    r = run(&o);
    cr_expect_eq(r.ck_segments, 2);
    cr_expect_str_eq(r.schedule, "0-1,2-3");
    cr_expect_eq(r.pred_peak, 880000 + 30000 + 30000 + 5000 + 10000);
    cr_expect_eq(phase_peak(&r, "backward"), 880000 + 60000 + 5000);
    cr_expect_eq(phase_peak(&r, "other"), 880000 + 30000 + 10000);
    mt_sim_result_free(&r);
    mt_sim_close(base);
}

Test(simulate, sizes_parse)
{
    uint64_t v;
    cr_expect(mt_parse_size("123456", &v) && v == 123456);
    cr_expect(mt_parse_size("2GiB", &v) && v == 2ull << 30);
    cr_expect(mt_parse_size("1.5G", &v) && v == 1500000000ull);
    cr_expect(mt_parse_size("500MB", &v) && v == 500000000ull);
    cr_expect(mt_parse_size("64k", &v) && v == 64000);
    cr_expect(!mt_parse_size("", &v));
    cr_expect(!mt_parse_size("12 apples", &v));
    cr_expect(!mt_parse_size("-5", &v));
}

Test(simulate, bad_input_is_one_line_and_nonzero)
{
    char *missing[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "simulate", "--int8-optimizer",
                        tu_in_tmp("nope.bin"), NULL };
    cr_expect_eq(WEXITSTATUS(tu_run(missing)), 1);
    cr_expect(strstr(tu_slurp("stderr"), "nope.bin"));
    char *plain = tu_in_tmp("plain.bin");
    tu_trace_pattern("basic", plain);
    char *nomarks[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "simulate", "--int8-optimizer", plain, NULL };
    cr_expect_eq(WEXITSTATUS(tu_run(nomarks)), 1);
    cr_expect(strstr(tu_slurp("stderr"), "no phases"));
    char *badopt[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "simulate", "--checkpoint", "sometimes", plain,
                       NULL };
    cr_expect_eq(WEXITSTATUS(tu_run(badopt)), 2);
    /* A trace cut short before any marker says so. */
    char *cut = tu_in_tmp("cut.bin");
    FILE *in = fopen(plain, "rb"), *out = fopen(cut, "wb");
    cr_assert(in && out);
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, in); /* the file header and a little more */
    fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    char *cutargv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "simulate", "--int8-optimizer", cut, NULL };
    int st = tu_run(cutargv);
    cr_expect(WEXITSTATUS(st) != 0);
    cr_expect(strstr(tu_slurp("stderr"), "cut short") || strstr(tu_slurp("stderr"), "corrupt"), "%s",
              tu_slurp("stderr"));
    char *nobudget[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "plan", plain, NULL };
    cr_expect_eq(WEXITSTATUS(tu_run(nobudget)), 2);
}

/* memtrace verify on the example: the 8-bit optimizer's bytes per value
 * measured by the kernel equal the simulator's 1 + 4/128, and the
 * bandwidth rows are there (their values are this machine's); the kernels
 * ran on the threads asked for, and a bad thread count is refused. */
Test(simulate, verify_runs_the_kernels_at_the_traces_sizes)
{
    char *trace = tu_in_tmp("phases.bin");
    char *run_argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "run", "-q", "-o", trace, "--",
                         (char *)tu_env("MEMTRACE_TEST_EXAMPLE"), "2", NULL };
    tu_expect_exit(tu_run(run_argv), 0);
    char *bad[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "verify", "--threads", "0", trace, NULL };
    tu_expect_exit(tu_run(bad), 2);
    cr_expect(strstr(tu_slurp("stderr"), "bad number '0'"), "%s", tu_slurp("stderr"));
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "verify", "--json", "--reps", "1",
                     "--threads", "2", trace, NULL };
    int st = tu_run(argv);
    cr_assert(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 3), "%s", tu_slurp("stderr"));
    cJSON *j = cJSON_Parse(tu_slurp("stdout"));
    cr_assert(j, "not JSON: %s", tu_slurp("stdout"));
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "threads")), 2);
    cJSON *checks = cJSON_GetObjectItem(j, "checks"), *x;
    bool bpv = false, bw = false;
    cJSON_ArrayForEach(x, checks) {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(x, "technique"));
        const char *q = cJSON_GetStringValue(cJSON_GetObjectItem(x, "quantity"));
        if (!strcmp(t, "int8 optimizer") && !strcmp(q, "bytes per value")) {
            bpv = true;
            cr_expect_float_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(x, "measured")), 1.03125, 1e-3);
            cr_expect(!cJSON_IsTrue(cJSON_GetObjectItem(x, "off")));
        }
        bw = bw || !strcmp(t, "offload :host");
    }
    cr_expect(bpv && bw);
    cJSON_Delete(j);
}

/* Per GPU: tests/programs/gpu-tensors.c's per-tensor events (device 0:
 * parameters 1000, activations 300 + 200 in forward, gradients 1000 in
 * backward, optimizer state 2000): gradient accumulation halves the
 * activations, so forward's allocated peak goes from 1500 to 1250; the
 * global peak (later, without activations) stays 4000. */
Test(simulate, per_tensor_gpu_allocations)
{
    char *trace = tu_in_tmp("gpu.bin");
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "run", "-q", "-o", trace, "--",
                     (char *)tu_env("MEMTRACE_TEST_GPU_TENSORS"), NULL };
    tu_expect_exit(tu_run(argv), 0);
    struct mt_error err;
    cr_assert_eq(mt_sim_open(trace, &base, &err), 0, "%s", err.msg);
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    o.grad_accum = 2;
    struct mt_sim_result r;
    cr_assert_eq(mt_sim_run(base, &o, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.ndev, 2);
    const struct mt_sim_device *d = r.dev[0].device == 0 ? &r.dev[0] : &r.dev[1];
    cr_expect(d->simulated);
    cr_expect_eq(d->base_allocated, 4000);
    cr_expect_eq(d->pred_allocated, 4000);
    bool seen = false;
    for (size_t p = 0; p < d->nphase; p++) {
        if (strcmp(d->phase[p].name, "forward"))
            continue;
        seen = true;
        cr_expect_eq(d->phase[p].base_peak, 1500);
        cr_expect_eq(d->phase[p].pred_peak, 1250);
    }
    cr_expect(seen);
    mt_sim_result_free(&r);
    mt_sim_close(base);
}

/* Checkpointing with the framework's bookkeeping freed out of the blocks'
 * order (tests/programs/ckpt-order.c, worked out in its header): the
 * recompute of a block waits for backward to reach it, so block 1's
 * backward is the peak, 1,800,000; forward keeps each activation of a
 * checkpointed block only while the next two are made. */
Test(simulate, checkpoint_recompute_in_backward_order)
{
    char *trace = tu_in_tmp("ckpt.bin");
    char *argv[] = { (char *)tu_env("MEMTRACE_TEST_MEMTRACE"), "run", "-q", "-o", trace, "--",
                     (char *)tu_env("MEMTRACE_TEST_CKPT_ORDER"), NULL };
    tu_expect_exit(tu_run(argv), 0);
    struct mt_error err;
    cr_assert_eq(mt_sim_open(trace, &base, &err), 0, "%s", err.msg);
    cr_assert_eq(mt_sim_chain(base)->n, 3);
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    o.ck = MT_CK_EVERY;
    struct mt_sim_result r;
    cr_assert_eq(mt_sim_run(base, &o, &r, &err), 0, "%s", err.msg);
    cr_assert_eq(r.ndev, 1);
    const struct mt_sim_device *d = &r.dev[0];
    /* baseline: all of forward's 1,150,000 live when block 2's backward
     * adds its buffer */
    cr_expect_eq(d->base_allocated, 2250000);
    cr_expect_eq(d->pred_allocated, 1800000);
    for (size_t p = 0; p < d->nphase; p++)
        if (!strcmp(d->phase[p].name, "forward"))
            /* block 1: the outputs of block 0 and 1 and both activations */
            cr_expect_eq(d->phase[p].pred_peak, 1700000);
    mt_sim_result_free(&r);
    mt_sim_close(base);
}
