/* Tests of `memtrace diff`: two synthetic traces that differ in known ways
 * (a site that grew at the heap peak, one that shrank, one only in A, one
 * only in B; the same module loaded at different addresses, the same sites
 * under different call-tree node ids), checked through the exact JSON
 * values and the text output's key lines; matching by address only with
 * --no-symbols; errors, usage and exit codes; a truncated trace; and a real
 * program (tests/programs/patterns.c `basic`) run twice under
 * libmemtrace.so, whose diff shows no change at the heap peak.
 *
 * report.c, diff.c and symbolize.c are compiled into this binary. Commands
 * run in a forked child with stdout and stderr sent to files, so their
 * printing is checked without touching this process's streams. Each test
 * runs in its own temporary directory (test-util.h).
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "diff.h"
#include "test-util.h"
#include "trace-writer.h"

/* ---- helpers ------------------------------------------------------------------ */

struct run {
    int status;
    char *out;
    char *err;
};

static char *slurp_path(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    return b;
}

/* Runs mt_diff_main(argc, argv) in a child with stdout and stderr captured. */
static struct run run_diff(int argc, char **argv)
{
    char out[PATH_MAX], err[PATH_MAX];
    snprintf(out, sizeof out, "%s", tu_in_tmp("stdout"));
    snprintf(err, sizeof err, "%s", tu_in_tmp("stderr"));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        int rc = mt_diff_main(argc, argv);
        fflush(NULL);
        _exit(rc);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st));
    struct run r = { WEXITSTATUS(st), slurp_path(out), slurp_path(err) };
    unlink(out);
    unlink(err);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *MODULE = "/nonexistent/difftest/app";

/* One site: a root frame at offset 0x100 of the module, the allocating
 * frame at `off`; node ids root and leaf. */
static void site(struct tw *w, uint64_t bias, uint64_t root, uint64_t leaf, uint64_t off)
{
    tw_stack(w, 1, leaf, root, bias + off);
}

static struct tw *trace_start(uint64_t bias, uint64_t root)
{
    uint64_t segs[1][2] = { { bias, bias + 0x10000 } };
    static const uint8_t bid[20] = { 0xd1, 0xff };
    struct tw *w = tw_new(NULL);
    tw_chunk(w, 1, 0, 0);
    tw_module_load(w, 1, bias, 1, (const uint64_t(*)[2])segs, bid, sizeof bid, MODULE);
    tw_stack(w, 1, root, 0, bias + 0x100);
    return w;
}

/* Sites, by the offset of their allocating frame:
 *   0x1000 grows:  peak 1000 -> 5096 (+4096), allocated 1000 -> 5096
 *   0x2000 shrinks: peak 3000 -> 1000, allocated 5000 -> 1000
 *   0x3000 only in A: peak and allocated 500
 *   0x4000 only in B: peak and allocated 700
 * A: peak 4500 at time 14, end 0, 4 allocs, 4 frees, 6500 allocated, RSS 1 MiB.
 * B: peak 6796 at time 12, end 1000, 3 allocs, 2 frees, 6796 allocated,
 * RSS 3 MiB. The module is at another address in B and the node ids
 * differ. */
static void write_pair(const char *a, const char *b, bool b_packed)
{
    const uint64_t ba = 0x400000, bb = 0x7f5500000000ull;
    struct tw *w = trace_start(ba, 1);
    site(w, ba, 1, 2, 0x1000);
    site(w, ba, 1, 3, 0x2000);
    site(w, ba, 1, 4, 0x3000);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 1, 10, 0x1000, 2000, 3);
    tw_free(w, 1, MT_FREE_FREE, 2, 11, 0x1000);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 3, 12, 0x2000, 1000, 2);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 4, 13, 0x3000, 3000, 3);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 5, 14, 0x4000, 500, 4);
    tw_rss(w, 1, MT_RSS_SAMPLE, 15, 1 << 20);
    tw_free(w, 1, MT_FREE_FREE, 6, 20, 0x2000);
    tw_free(w, 1, MT_FREE_FREE, 7, 21, 0x3000);
    tw_free(w, 1, MT_FREE_FREE, 8, 22, 0x4000);
    tw_end(w, 1, MT_END_EXIT, 30, 0);
    cr_assert_eq(tw_write(w, a, false), 0);
    tw_destroy(w);

    w = trace_start(bb, 10);
    site(w, bb, 10, 11, 0x4000);
    site(w, bb, 10, 12, 0x1000);
    site(w, bb, 10, 13, 0x2000);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 1, 10, 0x1000, 700, 11);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 2, 11, 0x2000, 5096, 12);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 3, 12, 0x3000, 1000, 13);
    tw_rss(w, 1, MT_RSS_SAMPLE, 13, 3 << 20);
    tw_free(w, 1, MT_FREE_FREE, 4, 20, 0x1000);
    tw_free(w, 1, MT_FREE_FREE, 5, 21, 0x2000);
    tw_end(w, 1, MT_END_EXIT, 30, 0);
    cr_assert_eq(tw_write(w, b, b_packed), 0);
    tw_destroy(w);
}

static long long num(const cJSON *o, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *c = o;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
        c = cJSON_GetObjectItemCaseSensitive(c, k);
        cr_assert_not_null(c, "no key %s in %s", k, path);
    }
    cr_assert(cJSON_IsNumber(c), "%s is not a number", path);
    return (long long)c->valuedouble;
}

/* Entry i of list key: bytes_a, bytes_b, change and the offset of its first
 * frame. */
static void check_entry(const cJSON *doc, const char *key, int i, long long a, long long b,
                        unsigned long long off)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, key);
    cr_assert(cJSON_IsArray(arr), "%s", key);
    const cJSON *e = cJSON_GetArrayItem(arr, i);
    cr_assert_not_null(e, "%s[%d]", key, i);
    cr_assert_eq(num(e, "bytes_a"), a, "%s[%d].bytes_a", key, i);
    cr_assert_eq(num(e, "bytes_b"), b, "%s[%d].bytes_b", key, i);
    cr_assert_eq(num(e, "change"), b - a, "%s[%d].change", key, i);
    const cJSON *fr = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(e, "frames"), 0);
    cr_assert_not_null(fr);
    cr_assert_eq((unsigned long long)num(fr, "offset"), off, "%s[%d] frame offset", key, i);
}

static int list_size(const cJSON *doc, const char *key)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, key);
    cr_assert(cJSON_IsArray(arr), "%s", key);
    return cJSON_GetArraySize(arr);
}

TestSuite(diff, .init = tu_make_tmpdir, .fini = tu_remove_tmpdir, .timeout = 120);

/* ---- synthetic traces -------------------------------------------------------- */

Test(diff, json_exact_values)
{
    char *a = strdup(tu_in_tmp("a.bin")), *b = strdup(tu_in_tmp("b.bin"));
    write_pair(a, b, true);
    char *argv[] = { "diff", "--json", a, b, NULL };
    struct run r = run_diff(4, argv);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_str_empty(r.err);
    cJSON *doc = cJSON_Parse(r.out);
    cr_assert_not_null(doc, "%s", r.out);

    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "a"),
                                                      "file")->valuestring, a);
    cr_assert_eq(num(doc, "a.host.peak_bytes"), 4500);
    cr_assert_eq(num(doc, "b.host.peak_bytes"), 6796);
    cr_assert_eq(num(doc, "change.host.peak_bytes"), 2296);
    cr_assert_eq(num(doc, "a.host.peak_time_ns"), 14);
    cr_assert_eq(num(doc, "b.host.peak_time_ns"), 12);
    cr_assert_eq(num(doc, "change.host.peak_time_ns"), -2);
    cr_assert_eq(num(doc, "change.host.end_bytes"), 1000);
    cr_assert_eq(num(doc, "change.host.alloc_count"), -1);
    cr_assert_eq(num(doc, "change.host.free_count"), -2);
    cr_assert_eq(num(doc, "a.host.total_allocated_bytes"), 6500);
    cr_assert_eq(num(doc, "change.host.total_allocated_bytes"), 296);
    cr_assert_eq(num(doc, "change.host.rss_peak_bytes"), 2 << 20);
    cr_assert_eq(num(doc, "change.host.mmap_peak_bytes"), 0);
    cr_assert_eq(num(doc, "a.allocation_sites"), 3);
    cr_assert_eq(num(doc, "b.allocation_sites"), 3);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "all_sites_compared")));

    /* matched by module name + offset although the module moved */
    cr_assert_eq(list_size(doc, "grew"), 2);
    check_entry(doc, "grew", 0, 1000, 5096, 0x1000);
    check_entry(doc, "grew", 1, 0, 700, 0x4000);
    cr_assert_eq(list_size(doc, "shrank"), 2);
    check_entry(doc, "shrank", 0, 3000, 1000, 0x2000);
    check_entry(doc, "shrank", 1, 500, 0, 0x3000);
    cr_assert_eq(list_size(doc, "allocated_grew"), 2);
    check_entry(doc, "allocated_grew", 0, 1000, 5096, 0x1000);
    check_entry(doc, "allocated_grew", 1, 0, 700, 0x4000);
    cr_assert_eq(list_size(doc, "allocated_shrank"), 2);
    check_entry(doc, "allocated_shrank", 0, 5000, 1000, 0x2000);
    check_entry(doc, "allocated_shrank", 1, 500, 0, 0x3000);

    const cJSON *fr = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "grew"), 0),
                                         "frames"),
        0);
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(fr, "module")->valuestring, MODULE);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(fr, "function")));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(fr, "inlined")));
    cJSON_Delete(doc);
    run_free(&r);

    /* --top 1 keeps the largest change of each list */
    char *argv2[] = { "diff", "--json", "--top", "1", a, b, NULL };
    r = run_diff(6, argv2);
    cr_assert_eq(r.status, 0, "%s", r.err);
    doc = cJSON_Parse(r.out);
    cr_assert_not_null(doc);
    cr_assert_eq(list_size(doc, "grew"), 1);
    check_entry(doc, "grew", 0, 1000, 5096, 0x1000);
    cr_assert_eq(list_size(doc, "allocated_shrank"), 1);
    check_entry(doc, "allocated_shrank", 0, 5000, 1000, 0x2000);
    cJSON_Delete(doc);
    run_free(&r);
    free(a);
    free(b);
}

Test(diff, text_key_lines)
{
    char *a = strdup(tu_in_tmp("a.bin")), *b = strdup(tu_in_tmp("b.bin"));
    write_pair(a, b, false);
    char *argv[] = { "diff", a, b, NULL };
    struct run r = run_diff(3, argv);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_str_empty(r.err);
    const char *want[] = {
        "  heap peak                        4500             6796  +2296 (+2.24 KiB)\n",
        "  heap at end                         0             1000  +1000\n",
        "  allocations                         4                3  -1\n",
        "  RSS peak                      1048576          3145728  +2097152 (+2.00 MiB)\n",
        "Sites whose bytes live at the heap peak grew most\n"
        "  +4096 bytes (+4.00 KiB)  1000 -> 5096\n"
        "      ?? [app+0x1000]\n"
        "      ?? [app+0x100]\n"
        "  +700 bytes (+700 B)  0 -> 700  (not in A)\n",
        "Sites whose bytes live at the heap peak shrank most\n"
        "  -2000 bytes (-1.95 KiB)  3000 -> 1000\n",
        "  -500 bytes (-500 B)  500 -> 0  (not in B)\n",
        "Sites whose total bytes allocated shrank most\n"
        "  -4000 bytes (-3.91 KiB)  5000 -> 1000\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(r.out, want[i]), "missing:\n%s\nin:\n%s", want[i], r.out);
    cr_assert_null(strstr(r.out, "Note:"));
    run_free(&r);

    /* --top 0: the host numbers only */
    char *argv2[] = { "diff", "--top=0", a, b, NULL };
    r = run_diff(4, argv2);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "  heap peak "), "%s", r.out);
    cr_assert_null(strstr(r.out, "Sites whose"));
    run_free(&r);
    free(a);
    free(b);
}

Test(diff, no_symbols_matches_addresses_only)
{
    char *a = strdup(tu_in_tmp("a.bin")), *b = strdup(tu_in_tmp("b.bin"));
    write_pair(a, b, false);
    /* A against itself: every site matches */
    char *argv[] = { "diff", "--json", "--no-symbols", a, a, NULL };
    struct run r = run_diff(5, argv);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *doc = cJSON_Parse(r.out);
    cr_assert_not_null(doc);
    cr_assert_eq(num(doc, "change.host.peak_bytes"), 0);
    cr_assert_eq(list_size(doc, "grew"), 0);
    cr_assert_eq(list_size(doc, "shrank"), 0);
    cr_assert_eq(list_size(doc, "allocated_grew"), 0);
    cr_assert_eq(list_size(doc, "allocated_shrank"), 0);
    cJSON_Delete(doc);
    run_free(&r);

    /* the module moved: no address matches, so each site is in one trace */
    char *argv2[] = { "diff", "--json", "--no-symbols", a, b, NULL };
    r = run_diff(5, argv2);
    cr_assert_eq(r.status, 0, "%s", r.err);
    doc = cJSON_Parse(r.out);
    cr_assert_not_null(doc);
    check_entry(doc, "grew", 0, 0, 5096, 0x7f5500000000ull + 0x1000);
    check_entry(doc, "shrank", 0, 3000, 0, 0x400000 + 0x2000);
    const cJSON *fr = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "grew"), 0),
                                         "frames"),
        0);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(fr, "module")));
    cJSON_Delete(doc);
    run_free(&r);
    free(a);
    free(b);
}

Test(diff, compute_api)
{
    char *a = strdup(tu_in_tmp("a.bin")), *b = strdup(tu_in_tmp("b.bin"));
    write_pair(a, b, false);
    struct mt_diff d;
    struct mt_error err;
    cr_assert_eq(mt_diff_compute(a, b, NULL, &d, &err), 0, "%s", err.msg);
    cr_assert_eq(d.nsite, 4);
    cr_assert_eq(d.ngrew[MT_DIFF_PEAK], 2);
    const struct mt_diff_site *s = &d.site[d.grew[MT_DIFF_PEAK][0]];
    cr_assert_eq(s->bytes[MT_DIFF_PEAK][0], 1000);
    cr_assert_eq(s->bytes[MT_DIFF_PEAK][1], 1000 + 4096);
    cr_assert(!d.limited);
    mt_diff_destroy(&d);
    mt_diff_destroy(NULL);

    char *missing = tu_in_tmp("missing.bin");
    cr_assert_lt(mt_diff_compute(a, missing, NULL, &d, &err), 0);
    cr_assert(strstr(err.msg, "missing.bin"), "%s", err.msg);
    free(a);
    free(b);
}

/* ---- errors and exit codes ---------------------------------------------------- */

Test(diff, errors_and_usage)
{
    char *a = strdup(tu_in_tmp("a.bin")), *b = strdup(tu_in_tmp("b.bin"));
    write_pair(a, b, false);

    char *h[] = { "diff", "--help", NULL };
    struct run r = run_diff(2, h);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "Usage: memtrace diff"), "%s", r.out);
    run_free(&r);

    char *u1[] = { "diff", a, NULL };
    char *u2[] = { "diff", a, b, a, NULL };
    char *u3[] = { "diff", "--bogus", a, b, NULL };
    char *u4[] = { "diff", "--top", "x", a, b, NULL };
    char *u5[] = { "diff", NULL };
    struct {
        int argc;
        char **argv;
    } usage[] = { { 2, u1 }, { 4, u2 }, { 4, u3 }, { 5, u4 }, { 1, u5 } };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        r = run_diff(usage[i].argc, usage[i].argv);
        cr_assert_eq(r.status, 2, "case %zu", i);
        cr_assert_str_empty(r.out);
        cr_assert(strstr(r.err, "memtrace diff: "), "%s", r.err);
        run_free(&r);
    }

    char missing[PATH_MAX];
    snprintf(missing, sizeof missing, "%s", tu_in_tmp("nope.bin"));
    char *e1[] = { "diff", a, missing, NULL };
    r = run_diff(3, e1);
    cr_assert_eq(r.status, 1);
    cr_assert_str_empty(r.out);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "memtrace: cannot open '%s': No such file or directory\n", missing);
    cr_assert_str_eq(r.err, want);
    run_free(&r);

    char *junk = tu_in_tmp("junk.bin");
    FILE *f = fopen(junk, "w");
    fputs("this is not a trace, just some words that are long enough to fill a header....."
          "..................................................................................",
          f);
    fclose(f);
    char *e2[] = { "diff", "--json", junk, b, NULL };
    r = run_diff(4, e2);
    cr_assert_eq(r.status, 1);
    cr_assert_str_empty(r.out);
    cr_assert(strstr(r.err, "not a memtrace trace"), "%s", r.err);
    cr_assert_eq(count_lines(r.err), 1);
    run_free(&r);
    free(a);
    free(b);
}

Test(diff, truncated_exits_3)
{
    char *a = strdup(tu_in_tmp("a.bin")), *b = strdup(tu_in_tmp("b.bin"));
    write_pair(a, b, true);
    FILE *f = fopen(b, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    cr_assert_eq(truncate(b, n - 10), 0);
    char *argv[] = { "diff", "--json", a, b, NULL };
    struct run r = run_diff(4, argv);
    cr_assert_eq(r.status, 3, "%s", r.err);
    cr_assert_eq(count_lines(r.err), 1);
    cr_assert(strstr(r.err, "warning") && strstr(r.err, "truncated"), "%s", r.err);
    cJSON *doc = cJSON_Parse(r.out);
    cr_assert_not_null(doc, "%s", r.out);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "b"),
                                                            "partial")));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "a"),
                                                             "partial")));
    cJSON_Delete(doc);
    run_free(&r);

    char *argv2[] = { "diff", a, b, NULL };
    r = run_diff(3, argv2);
    cr_assert_eq(r.status, 3);
    cr_assert(strstr(r.out, "(partial)"), "%s", r.out);
    run_free(&r);
    free(a);
    free(b);
}

/* ---- a real program ------------------------------------------------------------ */


Test(diff, real_program_against_itself)
{
    char *a = strdup(tu_in_tmp("basic1.bin")), *b = strdup(tu_in_tmp("basic2.bin"));
    tu_trace_pattern("basic", a);
    tu_trace_pattern("basic", b);
    char *argv[] = { "diff", "--json", a, b, NULL };
    struct run r = run_diff(4, argv);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *doc = cJSON_Parse(r.out);
    cr_assert_not_null(doc, "%s", r.out);
    cr_assert_gt(num(doc, "a.host.peak_bytes"), 0);
    cr_assert_eq(num(doc, "change.host.peak_bytes"), 0);
    cr_assert_eq(num(doc, "change.host.alloc_count"), 0);
    cr_assert_eq(list_size(doc, "grew"), 0, "%s", r.out);
    cr_assert_eq(list_size(doc, "shrank"), 0, "%s", r.out);
    cJSON_Delete(doc);
    run_free(&r);

    char *argv2[] = { "diff", a, b, NULL };
    r = run_diff(3, argv2);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "Sites whose bytes live at the heap peak grew most\n  (none)\n"), "%s", r.out);
    run_free(&r);
    free(a);
    free(b);
}
