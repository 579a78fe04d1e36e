/* Tests of `memtrace report` and `memtrace pack`: exact numbers of the
 * sample trace (raw and packed, with and without heap addresses), the JSON
 * contract keys, exit codes and messages of the commands, and pack's round
 * trips (the same records and the same report, on the sample and on random
 * multi-threaded traces) and refusals.
 *
 * report.c and pack.c are compiled into this binary. Commands run in a
 * forked child with stdout/stderr sent to files, so their printing is
 * checked without touching this process's streams. Each test uses its own
 * temporary directory.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "pack.h"
#include "reader.h"
#include "report.h"
#include "trace-writer.h"

/* ---- helpers ------------------------------------------------------------------ */

struct tmpdir {
    char dir[64];
    char path[3][128];
};

static void tmpdir_make(struct tmpdir *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/mt-test-report-XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir));
    for (int i = 0; i < 3; i++)
        snprintf(t->path[i], sizeof t->path[i], "%s/trace%d.bin", t->dir, i);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void tmpdir_remove(struct tmpdir *t)
{
    DIR *d = opendir(t->dir);
    struct dirent *de;
    char p[512];
    while (d && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", t->dir, de->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(t->dir);
}

static struct tw *sample(const char *path, bool packed, uint32_t shift, uint32_t pid)
{
    struct tw_opts o;
    tw_default_opts(&o);
    o.time_shift = shift;
    if (pid)
        o.pid = pid;
    struct tw *w = tw_new(&o);
    tw_build_sample(w);
    cr_assert_eq(tw_write(w, path, packed), 0);
    return w;
}

static char *slurp(const char *path, size_t *len)
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
    if (len)
        *len = (size_t)n;
    return b;
}

struct run {
    int status;
    char *out;
    char *err;
};

/* Runs fn(argc, argv) in a child with stdout and stderr captured. */
static struct run run_cmd(int (*fn)(int, char **), const char *dir, int argc, char **argv)
{
    char out[128], err[128];
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1);
        dup2(e, 2);
        int rc = fn(argc, argv);
        fflush(NULL);
        _exit(rc);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st));
    struct run r = { WEXITSTATUS(st), slurp(out, NULL), slurp(err, NULL) };
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

/* ---- report numbers -------------------------------------------------------------- */

static void check_sample_numbers(const struct mt_report *rep, uint32_t shift)
{
    const struct mt_report_host *h = &rep->host;
    cr_assert_eq(h->peak_bytes, 6000);
    cr_assert_eq(h->peak_time_ns, 45ull << shift);
    cr_assert_eq(h->end_bytes, 10);
    cr_assert_eq(h->alloc_count, 5);
    cr_assert_eq(h->free_count, 3);
    cr_assert_eq(h->total_allocated_bytes, 6310);
    cr_assert_eq(h->unmatched_free_count, 1);
    cr_assert_eq(h->inconsistent_count, 1);
    cr_assert_eq(h->mmap_peak_bytes, 163840);
    cr_assert_eq(h->mmap_end_bytes, 131072);
    cr_assert_eq(h->mmap_file_peak_bytes, 12288);
    cr_assert_eq(h->mmap_file_end_bytes, 12288);
    cr_assert_eq(h->rss_peak_bytes, 3u << 20);
    cr_assert_eq(rep->events, 15);
    cr_assert_eq(rep->records, 27);
    cr_assert_eq(rep->stacks, 5);
    cr_assert_eq(rep->modules, 1);
    cr_assert_eq(rep->lost, 3);
    cr_assert_eq(rep->threads, 3);
    cr_assert_eq(rep->duration_ns, 70ull << shift);
    cr_assert(rep->ended);
    cr_assert(rep->complete);
    cr_assert(!rep->partial);
    cr_assert_eq(rep->end_kind, MT_END_EXIT);
    cr_assert_eq(rep->exit_status, 0);
    cr_assert(rep->has_process);
    cr_assert_eq(rep->proc_pid, 4242424);
    cr_assert_str_eq(rep->exe, "/usr/bin/sample");
    cr_assert_eq(rep->argv_len, 17);
    cr_assert_eq(rep->pid, 4242424);
}

Test(report, sample_numbers_raw)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    check_sample_numbers(&rep, 0);
    cr_assert(!rep.packed);
    mt_report_destroy(&rep);
    mt_report_destroy(NULL);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, sample_numbers_packed_shifted)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], true, 5, 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    check_sample_numbers(&rep, 5);
    cr_assert(rep.packed);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, sample_numbers_packed_blocks)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw_opts o;
    tw_default_opts(&o);
    o.time_shift = 10;
    o.blocks = true;
    struct tw *w = tw_new(&o);
    tw_build_sample(w);
    cr_assert_eq(tw_write(w, t.path[0], true), 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    check_sample_numbers(&rep, 10);
    cr_assert(rep.packed);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, heap_counts_from_blocks)
{
    /* A packed trace as pack writes it, and frees that name no live
     * block: a damaged reference and a double free. */
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = tw_new(NULL);
    tw_block_alloc(w, 1, MT_ALLOC_MALLOC, 1, 1, 100, 0);
    tw_block_alloc(w, 2, MT_ALLOC_MALLOC, 2, 2, 50, 0);
    tw_block_free(w, 2, MT_FREE_FREE, 3, 3, 1);          /* thread 1's block */
    tw_block_free(w, 2, MT_FREE_FREE, 4, 4, 1);          /* again */
    tw_block_free(w, 1, MT_FREE_IMPLICIT, 5, 5, 2);
    tw_block_alloc(w, 1, MT_ALLOC_MALLOC, 5, 5, 70, 0);
    tw_block_free(w, 1, MT_FREE_REALLOC, 6, 6, 3);       /* a free, not a block */
    tw_free(w, 1, MT_FREE_FREE, 7, 7, 0x1000);            /* unknown address */
    cr_assert_eq(tw_write(w, t.path[0], true), 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.host.alloc_count, 3);
    cr_assert_eq(rep.host.total_allocated_bytes, 220);
    cr_assert_eq(rep.host.free_count, 1);
    cr_assert_eq(rep.host.unmatched_free_count, 3);
    cr_assert_eq(rep.host.inconsistent_count, 1);
    cr_assert_eq(rep.host.peak_bytes, 150);
    cr_assert_eq(rep.host.end_bytes, 70);
    cr_assert_eq(rep.events, 7);
    cr_assert_eq(rep.records, 7);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, mappings)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = tw_new(NULL);
    const uint64_t a = 0x7f0000000000ull, f = 0x7f5000000000ull;
    uint64_t s = 1;
    tw_mmap(w, 1, MT_MAP_ANON, s++, 1, a, 10000, 3, 0x22, 0);      /* rounds to 12288 */
    tw_mmap(w, 1, MT_MAP_FILE, s++, 2, f, 0x4000, 1, 0x2, 0);
    tw_munmap(w, 1, MT_UNMAP_REMAP, s++, 3, f, 0x4000);             /* mremap a file mapping */
    tw_mmap(w, 1, MT_MAP_REMAP, s++, 4, f + 0x100000, 0x8000, 0, 1, 0);
    tw_mmap(w, 1, MT_MAP_ANON, s++, 5, f + 0x104000, 0x1000, 3, 0x32, 0); /* MAP_FIXED over it */
    tw_munmap(w, 1, MT_UNMAP_MUNMAP, s++, 6, a + 0x1000, 0x1000);   /* hole */
    tw_mmap(w, 2, MT_MAP_REMAP, s++, 7, a + 0x200000, 0x2000, 0, 1, 0); /* origin unknown: anon */
    tw_munmap(w, 2, MT_UNMAP_MUNMAP, s++, 8, 0, UINT64_MAX);       /* everything */
    cr_assert_eq(tw_write(w, t.path[0], false), 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    /* anon: 12288, +4096 (fixed) = 16384, -4096 hole = 12288, +8192 = 20480 */
    cr_assert_eq(rep.host.mmap_peak_bytes, 20480);
    cr_assert_eq(rep.host.mmap_end_bytes, 0);
    /* file: 16384, remapped to 32768, minus the fixed page = 28672 */
    cr_assert_eq(rep.host.mmap_file_peak_bytes, 32768);
    cr_assert_eq(rep.host.mmap_file_end_bytes, 0);
    cr_assert(!rep.ended);
    cr_assert(!rep.complete);
    cr_assert(!rep.has_process);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, peak_is_first_time_reached)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = tw_new(NULL);
    tw_alloc(w, 1, 0, 1, 100, 0x10, 50, 0);
    tw_free(w, 1, 0, 2, 200, 0x10);
    tw_alloc(w, 1, 0, 3, 300, 0x20, 50, 0); /* same peak again: time stays 100 */
    tw_alloc(w, 2, 0, 4, 400, 0x30, 0, 0);  /* malloc(0) */
    cr_assert_eq(tw_write(w, t.path[0], false), 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.host.peak_bytes, 50);
    cr_assert_eq(rep.host.peak_time_ns, 100);
    cr_assert_eq(rep.host.end_bytes, 50);
    cr_assert_eq(rep.host.alloc_count, 3);
    cr_assert_eq(rep.host.free_count, 1);
    cr_assert_eq(rep.threads, 2);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, cut_trace_is_partial_and_consistent)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    size_t len;
    char *b = slurp(t.path[0], &len);
    for (size_t at = MT_FILE_HDR_SIZE; at < len; at += 7) {
        FILE *f = fopen(t.path[1], "wb");
        fwrite(b, 1, at, f);
        fclose(f);
        struct mt_report rep;
        struct mt_error err;
        cr_assert_eq(mt_report_compute(t.path[1], &rep, &err), 0, "cut at %zu: %s", at, err.msg);
        cr_assert_leq(rep.host.peak_bytes, 6000);
        cr_assert_leq(rep.host.alloc_count, 5);
        cr_assert(!rep.complete);
        mt_report_destroy(&rep);
    }
    free(b);
    tw_destroy(w);
    tmpdir_remove(&t);
}

/* ---- JSON ------------------------------------------------------------------------ */

static const char *raw_of(cJSON *o, const char *a, const char *b)
{
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    cr_assert_not_null(x, "missing %s%s%s", a, b ? "." : "", b ? b : "");
    return x->valuestring;
}

Test(report, json_contract_keys)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0);
    cJSON *o = mt_report_to_json(&rep);
    char *s = cJSON_PrintUnformatted(o);
    cJSON *p = cJSON_Parse(s); /* what a consumer sees */
    cr_assert_not_null(p);
    static const struct { const char *key; double v; } host[] = {
        { "peak_bytes", 6000 }, { "peak_time_ns", 45 }, { "end_bytes", 10 },
        { "alloc_count", 5 }, { "free_count", 3 }, { "total_allocated_bytes", 6310 },
        { "rss_peak_bytes", 3 << 20 }, { "mmap_peak_bytes", 163840 },
    };
    cJSON *h = cJSON_GetObjectItemCaseSensitive(p, "host");
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) {
        cJSON *x = cJSON_GetObjectItemCaseSensitive(h, host[i].key);
        cr_assert(cJSON_IsNumber(x), "host.%s", host[i].key);
        cr_assert_eq(x->valuedouble, host[i].v, "host.%s", host[i].key);
    }
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "partial")));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "complete")));
    cr_assert_str_eq(raw_of(p, "file", NULL), t.path[0]);
    cr_assert_eq(cJSON_GetObjectItemCaseSensitive(p, "pid")->valuedouble, 4242424);
    cr_assert_str_eq(raw_of(p, "process", "exe"), "/usr/bin/sample");
    cJSON *argv = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "process"), "argv");
    cr_assert_eq(cJSON_GetArraySize(argv), 3);
    cr_assert_str_eq(cJSON_GetArrayItem(argv, 0)->valuestring, "sample");
    cr_assert_str_eq(cJSON_GetArrayItem(argv, 1)->valuestring, "--flag");
    cr_assert_str_eq(cJSON_GetArrayItem(argv, 2)->valuestring, "x y");
    cr_assert_str_eq(raw_of(p, "status", NULL), "complete");
    cJSON_Delete(p);
    cJSON_free(s);
    cJSON_Delete(o);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, json_u64_exact)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = tw_new(NULL);
    tw_alloc(w, 1, 0, 1, 1, 0x10, (1ull << 60) + 1, 0);
    tw_alloc(w, 1, 0, 2, 2, 0x20, 2, 0);
    cr_assert_eq(tw_write(w, t.path[0], false), 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0);
    cJSON *o = mt_report_to_json(&rep);
    char *s = cJSON_PrintUnformatted(o);
    cr_assert(strstr(s, "\"peak_bytes\":1152921504606846979"), "%s", s);
    cr_assert(strstr(s, "\"total_allocated_bytes\":1152921504606846979"), "%s", s);
    cJSON_free(s);
    cJSON_Delete(o);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

/* ---- the report command -------------------------------------------------------------- */

Test(report_cmd, text_and_exit_codes)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);

    char *a1[] = { "report", t.path[0], NULL };
    struct run r = run_cmd(mt_report_main, t.dir, 2, a1);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_str_empty(r.err);
    cr_assert(strstr(r.out, "(6000 bytes)"), "%s", r.out);
    cr_assert(strstr(r.out, "5.86 KiB"), "%s", r.out);
    cr_assert(strstr(r.out, "160 KiB"), "%s", r.out);
    cr_assert(strstr(r.out, "3.00 MiB"), "%s", r.out);
    cr_assert(strstr(r.out, "complete"), "%s", r.out);
    cr_assert(strstr(r.out, "sample --flag 'x y'"), "%s", r.out);
    run_free(&r);

    char *a2[] = { "report", "--help", NULL };
    r = run_cmd(mt_report_main, t.dir, 2, a2);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "Usage: memtrace report"));
    run_free(&r);

    char *a3[] = { "report", "--bogus", t.path[0], NULL };
    r = run_cmd(mt_report_main, t.dir, 3, a3);
    cr_assert_eq(r.status, 2);
    cr_assert_str_empty(r.out);
    run_free(&r);

    char *a4[] = { "report", NULL };
    r = run_cmd(mt_report_main, t.dir, 1, a4);
    cr_assert_eq(r.status, 2);
    run_free(&r);

    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope.bin", t.dir);
    char *a5[] = { "report", missing, NULL };
    r = run_cmd(mt_report_main, t.dir, 2, a5);
    cr_assert_eq(r.status, 1);
    cr_assert_str_empty(r.out);
    char want[256];
    snprintf(want, sizeof want, "memtrace: cannot open '%s': No such file or directory\n", missing);
    cr_assert_str_eq(r.err, want);
    run_free(&r);

    FILE *f = fopen(t.path[1], "w");
    fputs("this is not a trace, just some words that are long enough to fill a header....."
          "..................................................................................",
          f);
    fclose(f);
    char *a6[] = { "report", "--json", t.path[1], NULL };
    r = run_cmd(mt_report_main, t.dir, 3, a6);
    cr_assert_eq(r.status, 1);
    cr_assert_str_empty(r.out);
    cr_assert(strstr(r.err, "not a memtrace trace"), "%s", r.err);
    cr_assert_eq(count_lines(r.err), 1);
    run_free(&r);

    struct tw_opts o;
    tw_default_opts(&o);
    o.version = 7;
    struct tw *w2 = tw_new(&o);
    cr_assert_eq(tw_write(w2, t.path[1], false), 0);
    tw_destroy(w2);
    r = run_cmd(mt_report_main, t.dir, 3, a6);
    cr_assert_eq(r.status, 1);
    cr_assert_str_empty(r.out);
    cr_assert(strstr(r.err, "format version 7 is newer than this memtrace reads (2)"), "%s", r.err);
    run_free(&r);

    /* corrupted: a CRC mismatch in a packed copy */
    tw_write(w, t.path[1], true);
    int fd = open(t.path[1], O_RDWR);
    uint8_t byte;
    cr_assert_eq(pread(fd, &byte, 1, MT_FILE_HDR_SIZE + MT_CHUNK_HDR_SIZE + 5), 1);
    byte ^= 0x40;
    cr_assert_eq(pwrite(fd, &byte, 1, MT_FILE_HDR_SIZE + MT_CHUNK_HDR_SIZE + 5), 1);
    close(fd);
    r = run_cmd(mt_report_main, t.dir, 3, a6);
    cr_assert_eq(r.status, 1);
    cr_assert_str_empty(r.out);
    cr_assert(strstr(r.err, "corrupt trace: CRC mismatch"), "%s", r.err);
    cr_assert_eq(count_lines(r.err), 1);
    run_free(&r);

    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report_cmd, truncated_exits_3)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], true, 0, 0);
    size_t len;
    char *b = slurp(t.path[0], &len);
    FILE *f = fopen(t.path[0], "wb");
    fwrite(b, 1, len - 10, f);
    fclose(f);
    free(b);
    char *a[] = { "report", "--json", t.path[0], NULL };
    struct run r = run_cmd(mt_report_main, t.dir, 3, a);
    cr_assert_eq(r.status, 3);
    cr_assert_eq(count_lines(r.err), 1);
    cr_assert(strstr(r.err, "warning") && strstr(r.err, "truncated"), "%s", r.err);
    cJSON *p = cJSON_Parse(r.out);
    cr_assert_not_null(p);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "partial")));
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "complete")));
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(p, "status")->valuestring, "partial");
    cJSON_Delete(p);
    run_free(&r);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report_cmd, several_files_json)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    struct tw *w2 = tw_new(NULL);
    tw_alloc(w2, 1, 0, 1, 1, 0x10, 7, 0);
    cr_assert_eq(tw_write(w2, t.path[1], true), 0);
    char *a[] = { "report", "--json", t.path[0], t.path[1], NULL };
    struct run r = run_cmd(mt_report_main, t.dir, 4, a);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *p = cJSON_Parse(r.out);
    cr_assert_not_null(p);
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(p, "traces");
    cr_assert_eq(cJSON_GetArraySize(arr), 2);
    cJSON *second = cJSON_GetArrayItem(arr, 1);
    cr_assert_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(second, "host"),
                                                  "peak_bytes")->valuedouble, 7);
    cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(second, "status")->valuestring,
                     "ended without exit: killed, crashed or still running");
    cJSON_Delete(p);
    run_free(&r);
    tw_destroy(w);
    tw_destroy(w2);
    tmpdir_remove(&t);
}

/* ---- sites, temporaries, histogram, timeline ----------------------------------------- */

static cJSON *item(cJSON *o, const char *key)
{
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    cr_assert_not_null(x, "missing key %s", key);
    return x;
}

static double num(cJSON *o, const char *key)
{
    cJSON *x = item(o, key);
    cr_assert(cJSON_IsNumber(x), "%s is not a number", key);
    return x->valuedouble;
}

/* o has exactly these keys, in any order. */
static void exact_keys(cJSON *o, const char *const *keys, size_t n)
{
    cr_assert(cJSON_IsObject(o));
    cr_assert_eq((size_t)cJSON_GetArraySize(o), n);
    for (size_t i = 0; i < n; i++)
        item(o, keys[i]);
}

/* A list of sites: {"bytes", "count", "frames"} each, with the given
 * numbers, and frames of the shape the docs give. */
static void check_site_list(cJSON *list, const uint64_t (*want)[2], size_t n)
{
    static const char *const site_keys[] = { "bytes", "count", "frames" };
    static const char *const frame_keys[] = { "function", "file", "line", "module", "inlined", "offset" };
    cr_assert(cJSON_IsArray(list));
    cr_assert_eq((size_t)cJSON_GetArraySize(list), n);
    for (size_t i = 0; i < n; i++) {
        cJSON *s = cJSON_GetArrayItem(list, (int)i);
        exact_keys(s, site_keys, 3);
        cr_assert_eq(num(s, "bytes"), want[i][0], "site %zu", i);
        cr_assert_eq(num(s, "count"), want[i][1], "site %zu", i);
        cJSON *frames = item(s, "frames"), *f;
        cr_assert(cJSON_IsArray(frames));
        cr_assert_gt(cJSON_GetArraySize(frames), 0);
        cJSON_ArrayForEach(f, frames)
        {
            exact_keys(f, frame_keys, 6);
            cr_assert(cJSON_IsBool(item(f, "inlined")));
            cr_assert(cJSON_IsNumber(item(f, "offset")));
        }
    }
}

Test(report, sample_sites_json)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.sites, 3);
    cr_assert_eq(rep.leak_count, 1);
    cr_assert_eq(rep.temp_count, 1); /* the realloc'ed block freed by its thread right away */
    cr_assert_eq(rep.temp_bytes, 5000);
    cJSON *o = mt_report_to_json(&rep);
    char *s = cJSON_PrintUnformatted(o);
    cJSON *p = cJSON_Parse(s);
    cr_assert_not_null(p);

    cr_assert_eq(num(p, "allocation_sites"), 3);
    cr_assert_eq(num(p, "leak_count"), 1);
    /* stacks: 2 = 0x401100 <- 0x7f00001000; 3 = 0x401234 <- 2; 5 = 0x402000 <- 0x401000 <- 1 */
    static const uint64_t peak[][2] = { { 5000, 1 }, { 1000, 1 } };
    check_site_list(item(p, "top_sites"), peak, 2);
    static const uint64_t allocated[][2] = { { 5000, 1 }, { 1010, 2 }, { 300, 2 } };
    check_site_list(item(p, "top_sites_allocated"), allocated, 3);
    static const uint64_t count[][2] = { { 1010, 2 }, { 300, 2 }, { 5000, 1 } };
    check_site_list(item(p, "top_sites_count"), count, 3);
    static const uint64_t leaks[][2] = { { 10, 1 } };
    check_site_list(item(p, "leaks"), leaks, 1);
    cJSON *tmp = item(p, "temporaries");
    static const char *const tmp_keys[] = { "count", "bytes", "top_sites" };
    exact_keys(tmp, tmp_keys, 3);
    cr_assert_eq(num(tmp, "count"), 1);
    cr_assert_eq(num(tmp, "bytes"), 5000);
    static const uint64_t temps[][2] = { { 5000, 1 } };
    check_site_list(item(tmp, "top_sites"), temps, 1);

    /* the frames of the top site: one in the module (its file is not on
     * this machine), one in no module; unknowns are null */
    cJSON *frames = item(cJSON_GetArrayItem(item(p, "top_sites"), 0), "frames");
    cr_assert_eq(cJSON_GetArraySize(frames), 2);
    cJSON *f0 = cJSON_GetArrayItem(frames, 0), *f1 = cJSON_GetArrayItem(frames, 1);
    cr_assert(cJSON_IsNull(item(f0, "function")));
    cr_assert(cJSON_IsNull(item(f0, "file")));
    cr_assert(cJSON_IsNull(item(f0, "line")));
    cr_assert_str_eq(item(f0, "module")->valuestring, "/usr/bin/sample");
    cr_assert_eq(num(f0, "offset"), 0x1100);
    cr_assert(cJSON_IsFalse(item(f0, "inlined")));
    cr_assert(cJSON_IsNull(item(f1, "module")));
    cr_assert(cJSON_IsNull(item(f1, "function")));

    /* sizes 10, 100, 200, 1000, 5000: buckets [8,15] to [4096,8191] */
    cJSON *hist = item(p, "histogram"), *b;
    cr_assert_eq(cJSON_GetArraySize(hist), 10);
    static const char *const hist_keys[] = { "min", "max", "count", "bytes" };
    uint64_t lo = 8, n = 0, bytes = 0;
    cJSON_ArrayForEach(b, hist)
    {
        exact_keys(b, hist_keys, 4);
        cr_assert_eq(num(b, "min"), lo);
        cr_assert_eq(num(b, "max"), 2 * lo - 1);
        n += (uint64_t)num(b, "count");
        bytes += (uint64_t)num(b, "bytes");
        lo *= 2;
    }
    cr_assert_eq(n, 5);
    cr_assert_eq(bytes, 6310);
    cr_assert_eq(num(cJSON_GetArrayItem(hist, 7), "bytes"), 0); /* [1024, 2047] */
    cr_assert_eq(num(cJSON_GetArrayItem(hist, 9), "bytes"), 5000);

    /* timeline: contiguous from 0 past the end (70 ns), the peak inside */
    cJSON *tl = item(p, "timeline");
    static const char *const tl_keys[] = { "start_ns", "end_ns", "heap_bytes", "rss_bytes" };
    cr_assert_geq(cJSON_GetArraySize(tl), 33);
    cr_assert_leq(cJSON_GetArraySize(tl), 64);
    double prev_end = 0, most = 0;
    bool rss_seen = false;
    cJSON_ArrayForEach(b, tl)
    {
        exact_keys(b, tl_keys, 4);
        cr_assert_eq(num(b, "start_ns"), prev_end);
        cr_assert_gt(num(b, "end_ns"), num(b, "start_ns"));
        prev_end = num(b, "end_ns");
        most = num(b, "heap_bytes") > most ? num(b, "heap_bytes") : most;
        cJSON *rss = item(b, "rss_bytes");
        if (num(b, "end_ns") <= 13) {
            cr_assert(cJSON_IsNull(rss), "no RSS sample before 13 ns");
        } else {
            cr_assert_eq(rss->valuedouble, 1 << 20); /* the HWM record is not a sample */
            rss_seen = true;
        }
    }
    cr_assert(rss_seen);
    cr_assert_gt(prev_end, 70);
    cr_assert_eq(most, 6000);

    cJSON *sym = item(p, "symbolization");
    cr_assert_eq(num(sym, "frames"), 5);
    cr_assert_eq(num(sym, "unresolved"), 5);
    cr_assert_eq(num(sym, "no_module"), 1);
    cr_assert_eq(num(sym, "no_file"), 4);
    cr_assert_eq(num(sym, "build_id_mismatch"), 0);

    cJSON_Delete(p);
    cJSON_free(s);
    cJSON_Delete(o);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, without_symbols_and_top_zero)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], true, 0, 0);
    struct mt_report rep;
    struct mt_error err;
    struct mt_report_opts o = { .top = 0, .no_symbols = true };
    cr_assert_eq(mt_report_compute_opts(t.path[0], &o, &rep, &err), 0, "%s", err.msg);
    cr_assert(!rep.symbolized);
    for (unsigned l = 0; l < MT_REPORT_LISTS; l++)
        cr_assert_eq(rep.nlist[l], 0);
    cr_assert_eq(rep.temp_count, 1);
    cJSON *j = mt_report_to_json(&rep);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "symbolization")));
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "top_sites")), 0);
    cJSON_Delete(j);
    mt_report_destroy(&rep);
    o.top = 1;
    cr_assert_eq(mt_report_compute_opts(t.path[0], &o, &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.nlist[MT_LIST_ALLOCATED], 1);
    cr_assert_eq(rep.site[rep.list[MT_LIST_ALLOCATED][0]].alloc_bytes, 5000);
    cr_assert_eq(rep.site[rep.list[MT_LIST_ALLOCATED][0]].frames[0].ip, 0x401100);
    mt_report_destroy(&rep);
    tw_destroy(w);
    tmpdir_remove(&t);
}

static int count_of(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

Test(report_cmd, text_sections_top_and_frames)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    char *a1[] = { "report", t.path[0], NULL };
    struct run r = run_cmd(mt_report_main, t.dir, 2, a1);
    cr_assert_eq(r.status, 0, "%s", r.err);
    static const char *const sections[] = {
        "\nTop sites by bytes live at the peak\n", "\nTop sites by total bytes allocated\n",
        "\nTop sites by number of allocations\n", "\nLeaks (live at exit): 10 B in 1 block\n",
        "\nTemporaries: 1 of 5 allocations (20.0%), 4.88 KiB (5000 bytes)\n",
        "\nAllocation sizes\n", "\nHeap and RSS over time", "\nSymbols: 5 of 5 addresses not resolved: "
        "1 in no recorded module, 4 file not found\n",
    };
    const char *at = r.out;
    for (size_t i = 0; i < sizeof sections / sizeof *sections; i++) {
        const char *x = strstr(at, sections[i]);
        cr_assert_not_null(x, "section %zu missing or out of order:\n%s", i, r.out);
        at = x;
    }
    cr_assert(strstr(r.out, "  #1  4.88 KiB (5000 bytes) in 1 block\n      ?? [sample+0x1100]\n"
                            "      ?? [0x7f00001000]\n"), "%s", r.out);
    cr_assert(strstr(r.out, "  #1  2 allocations, 1010 B\n"), "%s", r.out);
    cr_assert(strstr(r.out, "  [4 KiB, 8 KiB)                  1   4.88 KiB  ####"), "%s", r.out);
    cr_assert(strstr(r.out, "  [16 B, 32 B)                    0        0 B\n"), "%s", r.out);
    cr_assert_eq(count_of(r.out, "  #3  "), 2);
    run_free(&r);

    char *a2[] = { "report", "--top", "1", "--frames=1", t.path[0], NULL };
    r = run_cmd(mt_report_main, t.dir, 5, a2);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_eq(count_of(r.out, "  #2  "), 0, "%s", r.out);
    cr_assert_eq(count_of(r.out, "  #1  "), 5, "%s", r.out);
    cr_assert(strstr(r.out, "  #1  4.88 KiB (5000 bytes) in 1 block\n      ?? [sample+0x1100]\n"
                            "      ... 1 more frame\n"), "%s", r.out);
    cr_assert(strstr(r.out, "      ?? [sample+0x2000]\n      ... 2 more frames\n"), "%s", r.out);
    run_free(&r);

    char *a3[] = { "report", "--top=0", t.path[0], NULL };
    r = run_cmd(mt_report_main, t.dir, 3, a3);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_null(strstr(r.out, "Top sites"));
    cr_assert_null(strstr(r.out, "  #1"));
    cr_assert(strstr(r.out, "\nLeaks (live at exit)"));
    run_free(&r);

    char *a4[] = { "report", "--json", "--top", "1", t.path[0], NULL };
    r = run_cmd(mt_report_main, t.dir, 5, a4);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *p = cJSON_Parse(r.out);
    cr_assert_not_null(p);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "top_sites_count")), 1);
    cJSON_Delete(p);
    run_free(&r);

    char *bad[][4] = {
        { "report", "--top", "x", t.path[0] }, { "report", "--top=-1", t.path[0], NULL },
        { "report", t.path[0], "--frames", NULL }, { "report", "--frames", "9999999", t.path[0] },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int argc = bad[i][3] ? 4 : 3;
        r = run_cmd(mt_report_main, t.dir, argc, bad[i]);
        cr_assert_eq(r.status, 2, "case %zu", i);
        cr_assert_str_empty(r.out);
        cr_assert(strstr(r.err, "needs a count"), "%s", r.err);
        run_free(&r);
    }
    char *a5[] = { "report", "--help", NULL };
    r = run_cmd(mt_report_main, t.dir, 2, a5);
    cr_assert(strstr(r.out, "--top N") && strstr(r.out, "--frames N"));
    cr_assert(strstr(r.out, "A temporary is an allocation freed by the same thread with no other\n"
                            "allocation or free by that thread in between."), "%s", r.out);
    run_free(&r);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report_cmd, several_files_combined)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    struct tw *w2 = tw_new(NULL);
    tw_alloc(w2, 1, 0, 1, 1, 0x10, 7, 0);
    tw_free(w2, 1, 0, 2, 2, 0x10);
    tw_alloc(w2, 1, 0, 3, 3, 0x10, 9, 0);
    tw_rss(w2, 1, MT_RSS_HWM, 4, 1 << 20);
    cr_assert_eq(tw_write(w2, t.path[1], true), 0);

    char *a[] = { "report", "--json", t.path[0], t.path[1], NULL };
    struct run r = run_cmd(mt_report_main, t.dir, 4, a);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *p = cJSON_Parse(r.out);
    cr_assert_not_null(p);
    cr_assert_eq(cJSON_GetArraySize(item(p, "traces")), 2);
    cJSON *c = item(p, "combined");
    cr_assert_eq(num(c, "traces"), 2);
    cr_assert(cJSON_IsTrue(item(c, "peaks_are_upper_bounds")));
    cr_assert(cJSON_IsFalse(item(c, "complete"))); /* the second one did not end */
    cr_assert_eq(num(c, "events"), 18);
    cr_assert_eq(num(c, "leak_count"), 2);
    cJSON *h = item(c, "host");
    /* the same keys as each trace's host */
    cJSON *h0 = item(cJSON_GetArrayItem(item(p, "traces"), 0), "host"), *k;
    cr_assert_eq(cJSON_GetArraySize(h), cJSON_GetArraySize(h0));
    cJSON_ArrayForEach(k, h0)
        item(h, k->string);
    cr_assert(cJSON_IsNull(item(h, "peak_time_ns")));
    cr_assert_eq(num(h, "peak_bytes"), 6009);
    cr_assert_eq(num(h, "end_bytes"), 19);
    cr_assert_eq(num(h, "alloc_count"), 7);
    cr_assert_eq(num(h, "free_count"), 4);
    cr_assert_eq(num(h, "total_allocated_bytes"), 6326);
    cr_assert_eq(num(h, "rss_peak_bytes"), (3 << 20) + (1 << 20));
    cr_assert_eq(num(h, "mmap_peak_bytes"), 163840);
    cJSON *tmp = item(c, "temporaries");
    cr_assert_eq(num(tmp, "count"), 2);
    cr_assert_eq(num(tmp, "bytes"), 5007);
    cJSON_Delete(p);
    run_free(&r);

    char *b[] = { "report", t.path[0], t.path[1], NULL };
    r = run_cmd(mt_report_main, t.dir, 3, b);
    cr_assert_eq(r.status, 0, "%s", r.err);
    const char *c1 = strstr(r.out, "\nCombined: 2 processes\n");
    cr_assert_not_null(c1, "%s", r.out);
    cr_assert(strstr(c1, "upper bound"));
    cr_assert(strstr(c1, "  heap peak <=         5.87 KiB  (6009 bytes)\n"), "%s", c1);
    cr_assert(strstr(c1, "  allocated            6.18 KiB  (6326 bytes) in 7 allocations\n"), "%s", c1);
    cr_assert(strstr(c1, "  temporaries                 2\n"), "%s", c1);
    cr_assert_eq(count_of(r.out, "\nTop sites by bytes live at the peak\n"), 2);
    cr_assert_lt(strstr(r.out, t.path[1]), c1);
    run_free(&r);
    tw_destroy(w);
    tw_destroy(w2);
    tmpdir_remove(&t);
}

/* ---- symbolized frames of this very program ------------------------------------------------ */

struct self_modules {
    struct tw *w;
    bool bad_build_id;
    uint64_t malloc_ip;
    int found;
};

/* Writes MODULE records for the main program and the C library as the
 * recorder would: path, bias, PT_LOAD ranges, build-id. */
static int add_module(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct self_modules *m = arg;
    char path[PATH_MAX];
    if (!info->dlpi_name[0]) {
        if (!realpath("/proc/self/exe", path))
            return 0;
    } else if (strstr(info->dlpi_name, "/libc.so")) {
        snprintf(path, sizeof path, "%s", info->dlpi_name);
    } else {
        return 0;
    }
    bool is_main = !info->dlpi_name[0];
    uint64_t segs[16][2];
    unsigned nseg = 0;
    uint8_t bid[64];
    unsigned bid_len = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && nseg < 16) {
            segs[nseg][0] = info->dlpi_addr + ph->p_vaddr;
            segs[nseg][1] = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            nseg++;
        } else if (ph->p_type == PT_NOTE) {
            const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
            const uint8_t *end = p + ph->p_memsz;
            while (p + sizeof(ElfW(Nhdr)) <= end) {
                const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
                const uint8_t *name = p + sizeof *nh;
                const uint8_t *desc = name + ((nh->n_namesz + 3) & ~3u);
                if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4) &&
                    nh->n_descsz <= sizeof bid) {
                    memcpy(bid, desc, nh->n_descsz);
                    bid_len = nh->n_descsz;
                }
                p = desc + ((nh->n_descsz + 3) & ~3u);
            }
        }
    }
    if (is_main && m->bad_build_id)
        bid[0] ^= 0xff;
    tw_module_load(m->w, 1, info->dlpi_addr, nseg, (const uint64_t(*)[2])segs, bid, bid_len, path);
    m->found++;
    return 0;
}

static __attribute__((noinline)) void *allocating_function(size_t n)
{
    void *p = malloc(n);
    __asm__ volatile("" ::"r"(p) : "memory");
    return p;
}

static __attribute__((noinline)) void *calling_function(size_t n)
{
    void *p = allocating_function(n);
    __asm__ volatile("" ::"r"(p) : "memory");
    return p;
}

/* A trace whose one stack is malloc <- allocating_function <-
 * calling_function, at addresses of this process. */
static struct tw *self_trace(const char *path, bool bad_build_id)
{
    struct tw *w = tw_new(NULL);
    struct self_modules m = { w, bad_build_id, 0, 0 };
    dl_iterate_phdr(add_module, &m);
    cr_assert_eq(m.found, 2);
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    cr_assert_not_null(libc);
    uint64_t malloc_ip = (uint64_t)(uintptr_t)dlsym(libc, "malloc") + 4;
    dlclose(libc);
    free(calling_function(1));
    tw_stack(w, 1, 1, 0, (uint64_t)(uintptr_t)calling_function + 8);
    tw_stack(w, 1, 2, 1, (uint64_t)(uintptr_t)allocating_function + 8);
    tw_stack(w, 1, 3, 2, malloc_ip);
    tw_alloc(w, 1, MT_ALLOC_MALLOC, 1, 1, 0x1000, 64, 3);
    tw_end(w, 1, MT_END_EXIT, 2, 0);
    cr_assert_eq(tw_write(w, path, false), 0);
    return w;
}

Test(report, allocator_frame_names)
{
    static const char *const yes[] = {
        "malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
        "operator new(unsigned long)", "operator new[](unsigned long)",
        "operator new(unsigned long, std::align_val_t)",
        "operator new(unsigned long, std::nothrow_t const&)", "operator delete(void*)",
        "operator delete[](void*, unsigned long)", "__libc_malloc", "__libc_calloc",
        "__GI___libc_malloc", "__libc_alloc_buffer_allocate",
        "std::allocator<int>::allocate(unsigned long)",
        "std::__new_allocator<std::pair<int const, std::vector<int, std::allocator<int> > > >"
        "::allocate(unsigned long, void const*)",
        "__gnu_cxx::new_allocator<char>::allocate(unsigned long, void const*)",
        "std::allocator_traits<std::allocator<float> >::allocate(std::allocator<float>&, unsigned long)",
    };
    static const char *const no[] = {
        "main", "basic", "xmalloc", "my_malloc", "mallocx", "operator newline(int)",
        "std::vector<int, std::allocator<int> >::_M_realloc_insert(int&&)",
        "std::allocator<int>::deallocate(int*, unsigned long)", "Pool::allocate(unsigned long)",
        "std::_Vector_base<int, std::allocator<int> >::_M_allocate(unsigned long)",
        "operator()", "",
    };
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        cr_assert(mt_report_allocator_frame(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        cr_assert(!mt_report_allocator_frame(no[i]), "%s", no[i]);
    cr_assert(!mt_report_allocator_frame(NULL));
}

Test(report, symbolized_frames_leave_out_the_allocator)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = self_trace(t.path[0], false);
    struct mt_report rep;
    struct mt_error err;
    cr_assert_eq(mt_report_compute(t.path[0], &rep, &err), 0, "%s", err.msg);
    cr_assert_eq(rep.nlist[MT_LIST_LEAKS], 1);
    const struct mt_report_site *s = &rep.site[rep.list[MT_LIST_LEAKS][0]];
    cr_assert_eq(s->skipped, 1, "malloc is left out");
    cr_assert_geq(s->nframes, 2);
    cr_assert_str_eq(s->frames[0].function, "allocating_function");
    cr_assert_not_null(s->frames[0].file);
    cr_assert(strstr(s->frames[0].file, "test-report.c"), "%s", s->frames[0].file);
    cr_assert_gt(s->frames[0].line, 0);
    cr_assert_str_eq(s->frames[s->nframes - 1].function, "calling_function");
    cr_assert_eq(rep.sym_frames, 3);
    for (unsigned i = 0; i < 5; i++)
        cr_assert_eq(rep.sym_unresolved[i], 0);
    mt_report_destroy(&rep);

    char *a[] = { "report", t.path[0], NULL };
    struct run r = run_cmd(mt_report_main, t.dir, 2, a);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "\n      allocating_function (test-report.c:"), "%s", r.out);
    cr_assert(strstr(r.out, "\nSymbols: 3 addresses, all resolved\n"), "%s", r.out);
    run_free(&r);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(report, build_id_mismatch_is_reported)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = self_trace(t.path[0], true);
    char *a[] = { "report", t.path[0], NULL };
    struct run r = run_cmd(mt_report_main, t.dir, 2, a);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "\nSymbols: 2 of 3 addresses not resolved: 2 build-id mismatch (the "
                            "file changed since the run)\n"), "%s", r.out);
    cr_assert(strstr(r.out, "\n      ?? [test-report+0x"), "%s", r.out);
    run_free(&r);
    char *b[] = { "report", "--json", t.path[0], NULL };
    r = run_cmd(mt_report_main, t.dir, 3, b);
    cJSON *p = cJSON_Parse(r.out);
    cr_assert_not_null(p);
    cr_assert_eq(num(item(p, "symbolization"), "build_id_mismatch"), 2);
    cr_assert_eq(num(item(p, "symbolization"), "unresolved"), 2);
    cJSON_Delete(p);
    run_free(&r);
    tw_destroy(w);
    tmpdir_remove(&t);
}

/* ---- pack ------------------------------------------------------------------------------ */

/* Both traces yield the same records in the same order (cmp: TW_CMP_*).
 * Returns how many. */
static size_t same_records(const char *a, const char *b, unsigned cmp)
{
    struct mt_reader *ra, *rb;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(a, &ra, &err), 0, "%s", err.msg);
    cr_assert_eq(mt_reader_open(b, &rb, &err), 0, "%s", err.msg);
    struct mt_record x, y;
    char why[128];
    size_t n = 0;
    for (;; n++) {
        int ka = mt_reader_next(ra, &x), kb = mt_reader_next(rb, &y);
        cr_assert_eq(ka, kb, "record %zu: %s%s", n, mt_reader_error(ra), mt_reader_error(rb));
        cr_assert_geq(ka, 0);
        if (ka == 0)
            break;
        cr_assert(tw_rec_equal_ex(&x, &y, cmp, why, sizeof why), "record %zu: %s", n, why);
    }
    cr_assert_gt(n, 0);
    mt_reader_close(ra);
    mt_reader_close(rb);
    return n;
}

/* What a packed file holds of heap addresses: allocations with one, and
 * frees with one that do / do not name a block. */
static void count_addresses(const char *path, size_t *allocs, size_t *known, size_t *unknown)
{
    struct mt_reader *r;
    struct mt_error err;
    cr_assert_eq(mt_reader_open(path, &r, &err), 0, "%s", err.msg);
    struct mt_record rec;
    *allocs = *known = *unknown = 0;
    while (mt_reader_next(r, &rec) > 0) {
        if (rec.type == MT_REC_ALLOC && rec.has_addr)
            ++*allocs;
        if (rec.type == MT_REC_FREE && rec.has_addr)
            ++*(rec.block ? known : unknown);
    }
    mt_reader_close(r);
}

/* The report of a file as `memtrace report` prints it, text and JSON, with
 * what names the file itself (path, size, packed) left out. */
static char *report_of(const char *dir, const char *path, bool json)
{
    char *a[] = { "report", json ? "--json" : "--", (char *)path, NULL };
    struct run r = run_cmd(mt_report_main, dir, 3, a);
    cr_assert_eq(r.status, 0, "%s", r.err);
    char *out = r.out;
    r.out = NULL;
    run_free(&r);
    if (!json) {
        char *rest = strdup(strchr(out, '\n') + 1); /* the first line is the file name */
        free(out);
        return rest;
    }
    cJSON *o = cJSON_Parse(out);
    cr_assert_not_null(o);
    free(out);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "file");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "file_bytes");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "packed");
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

static void same_reports(const char *dir, const char *a, const char *b)
{
    for (int json = 0; json < 2; json++) {
        char *x = report_of(dir, a, json), *y = report_of(dir, b, json);
        cr_assert_str_eq(x, y);
        free(x);
        free(y);
    }
}

Test(pack, round_trip)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw_opts o;
    tw_default_opts(&o);
    o.slack = 1000;
    struct tw *w = tw_new(&o);
    tw_build_sample(w);
    tw_free_chunk(w, 8192);
    cr_assert_eq(tw_write(w, t.path[0], false), 0);
    cr_assert_eq(tw_write(w, t.path[1], false), 0);
    chmod(t.path[0], 0640);
    struct mt_error err;
    struct mt_pack_result res;
    cr_assert_eq(mt_pack_file_ex(t.path[0], 3, 0, &res, &err), 0, "%s", err.msg);
    cr_assert(!res.already_packed);
    cr_assert_eq(res.chunks, 5);
    cr_assert_lt(res.bytes_after, res.bytes_before);
    cr_assert_eq(same_records(t.path[0], t.path[1], TW_CMP_NO_ADDR), 28);
    size_t allocs, known, unknown;
    count_addresses(t.path[0], &allocs, &known, &unknown);
    cr_assert_eq(allocs, 0);
    cr_assert_eq(known, 0);
    cr_assert_eq(unknown, 1); /* the free of an address never allocated */
    same_reports(t.dir, t.path[0], t.path[1]);

    struct mt_reader *r;
    cr_assert_eq(mt_reader_open(t.path[0], &r, &err), 0);
    const struct mt_trace_info *in = mt_reader_info(r);
    cr_assert(in->packed);
    cr_assert(in->has_trailer);
    cr_assert_eq(in->data_chunks, 5);
    cr_assert_eq(in->pid, 4242424);
    cr_assert_eq(in->start_real_ns, 1700000000000000000ull);
    for (size_t i = 0; i < mt_reader_chunk_count(r); i++) {
        struct mt_chunk_info c;
        mt_reader_chunk(r, i, &c);
        cr_assert(c.type == MT_CHUNK_ZSTD || (c.type == MT_CHUNK_TRAILER && i + 1 == mt_reader_chunk_count(r)));
    }
    mt_reader_close(r);
    struct stat st;
    cr_assert_eq(stat(t.path[0], &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0640);
    cr_assert_eq((uint64_t)st.st_size, res.bytes_after);

    /* packing again changes nothing */
    size_t l1, l2;
    char *before = slurp(t.path[0], &l1);
    cr_assert_eq(mt_pack_file_ex(t.path[0], 3, 0, &res, &err), 0);
    cr_assert(res.already_packed);
    char *after = slurp(t.path[0], &l2);
    cr_assert(l1 == l2 && !memcmp(before, after, l1));
    free(before);
    free(after);
    cr_assert_eq(count_entries(t.dir), 2); /* no temporary file left */

    /* reports agree */
    struct mt_report ra, rb;
    cr_assert_eq(mt_report_compute(t.path[0], &ra, &err), 0);
    cr_assert_eq(mt_report_compute(t.path[1], &rb, &err), 0);
    cr_assert(!memcmp(&ra.host, &rb.host, sizeof ra.host));
    mt_report_destroy(&ra);
    mt_report_destroy(&rb);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(pack, keep_addresses)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 4, 0);
    cr_assert_eq(tw_write(w, t.path[1], false), 0);
    cr_assert_eq(tw_write(w, t.path[2], false), 0);
    struct mt_error err;
    struct mt_pack_result res, res2;
    cr_assert_eq(mt_pack_file_ex(t.path[0], 3, MT_PACK_KEEP_ADDRESSES, &res, &err), 0, "%s", err.msg);
    cr_assert_eq(res.chunks, 5);
    cr_assert_eq(same_records(t.path[0], t.path[1], 0), 28); /* addresses and all */
    size_t allocs, known, unknown;
    count_addresses(t.path[0], &allocs, &known, &unknown);
    cr_assert_eq(allocs, 5);
    cr_assert_eq(known, 4); /* 3 frees and the IMPLICIT one */
    cr_assert_eq(unknown, 1);
    same_reports(t.dir, t.path[0], t.path[1]);
    cr_assert_eq(mt_pack_file_ex(t.path[2], 3, 0, &res2, &err), 0, "%s", err.msg);
    cr_assert_lt(res2.bytes_after, res.bytes_after);

    /* the command's flag */
    cr_assert_eq(tw_write(w, t.path[2], false), 0);
    char *a[] = { "pack", "--keep-addresses", t.path[2], NULL };
    struct run r = run_cmd(mt_pack_main, t.dir, 3, a);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    count_addresses(t.path[2], &allocs, &known, &unknown);
    cr_assert_eq(allocs, 5);
    tw_destroy(w);
    tmpdir_remove(&t);
}

Test(pack, chunks_sharing_seq_base_and_tid_keep_their_order)
{
    /* The reader ranks chunks of one (seq_base, tid) by file offset: a
     * reused tid whose new thread's first chunk sits earlier in the file,
     * and a chunk without events followed by the thread's next chunk placed
     * before it. Pack must keep those chunks in that order although the
     * later-placed ones end first. */
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = tw_new(NULL);
    tw_chunk(w, 5, 0, 0); /* thread A */
    tw_stack(w, 5, 1, 0, 0x100);
    tw_stack(w, 5, 2, 1, 0x200);
    tw_alloc(w, 5, 0, 1, 1, 0x1000, 10, 2);
    tw_free(w, 5, 0, 2, 2, 0x1000);
    tw_chunk(w, 6, 0, 0); /* thread B */
    tw_alloc(w, 6, 0, 3, 3, 0x2000, 20, 0);
    tw_alloc(w, 6, 0, 4, 4, 0x3000, 30, 0);
    tw_chunk(w, 6, 4, 4); /* B: no events in this chunk */
    tw_stack(w, 6, 4, 0, 0x400);
    tw_lost(w, 6, 1);
    tw_chunk(w, 6, 4, 4); /* B's next chunk, in space earlier in the file */
    tw_place_chunk(w, 1);
    tw_stack(w, 6, 5, 4, 0x500);
    tw_alloc(w, 6, 0, 11, 11, 0x4000, 40, 5);
    tw_chunk(w, 5, 0, 0); /* thread C reuses tid 5, first in the file */
    tw_place_chunk(w, 0);
    tw_stack(w, 5, 3, 0, 0x300);
    tw_alloc(w, 5, 0, 10, 10, 0x5000, 50, 3);
    tw_free(w, 5, 0, 12, 12, 0x2000);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tw_write(w, t.path[i], false), 0);
    struct mt_error err;
    cr_assert_eq(mt_pack_file(t.path[1], 3, &err), 0, "%s", err.msg);
    cr_assert_eq(mt_pack_file_ex(t.path[2], 3, MT_PACK_KEEP_ADDRESSES, NULL, &err), 0, "%s",
                 err.msg);
    const struct mt_record *exp;
    size_t nexp = tw_expected(w, &exp);
    cr_assert_eq(nexp, 13);
    cr_assert_eq(exp[0].ip, 0x300); /* tid 5 at seq 0: C's chunk ranks first */
    cr_assert_eq(exp[0].tid, 5);
    cr_assert_eq(same_records(t.path[0], t.path[1], TW_CMP_NO_ADDR), nexp);
    cr_assert_eq(same_records(t.path[0], t.path[2], 0), nexp);
    same_reports(t.dir, t.path[0], t.path[1]);
    tw_destroy(w);
    tmpdir_remove(&t);
}

/* A random trace of many threads: allocations from a small pool of
 * addresses (so some are at live addresses and some frees are of nothing),
 * frees from any thread, reallocs, mappings, stack nodes, RSS samples,
 * several chunks per thread placed anywhere in the file, a tid reused by a
 * later thread. */
static uint64_t rnd(uint64_t *state, uint64_t n)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (*state >> 33) % n;
}

static struct tw *random_trace(uint64_t seed, uint32_t nthreads, uint64_t nevents)
{
    struct tw_opts o;
    tw_default_opts(&o);
    o.time_shift = 10;
    struct tw *w = tw_new(&o);
    cr_assert_leq(nthreads, 64);
    uint64_t rs = seed * 0x9E3779B97F4A7C15ull + 1;
    uint64_t last_seq[64] = { 0 }, last_time[64] = { 0 }, now = 0, seq = 0, node = 0;
    bool started[64] = { false };
    size_t nchunks = 0;
    for (uint64_t i = 0; i < nevents; i++) {
        uint32_t t = (uint32_t)rnd(&rs, nthreads);
        uint32_t tid = 1000 + t;
        now += rnd(&rs, 3000);
        uint64_t tu = now >> 10;
        if (!started[t] || rnd(&rs, 40) == 0) {
            if (started[t] && rnd(&rs, 8) == 0) /* the thread ends, a new one gets its tid */
                last_seq[t] = last_time[t] = 0;
            tw_chunk(w, tid, last_seq[t], last_time[t]);
            nchunks++;
            if (nchunks > 2 && rnd(&rs, 3) == 0)
                tw_place_chunk(w, (size_t)rnd(&rs, nchunks));
            started[t] = true;
        }
        uint64_t addr = 0x10000 + rnd(&rs, 48) * 0x40;
        uint64_t addr2 = 0x10000 + rnd(&rs, 48) * 0x40;
        uint64_t map = 0x7f0000000000ull + rnd(&rs, 16) * 0x10000;
        uint64_t len = (rnd(&rs, 16) + 1) * 4096;
        uint64_t size = rnd(&rs, 5000), size2 = rnd(&rs, 5000);
        uint64_t stack = node ? rnd(&rs, node) : 0;
        unsigned kind = (unsigned)rnd(&rs, 16);
        unsigned what = (unsigned)rnd(&rs, 100);
        if (what < 5) {
            node++;
            uint64_t parent = rnd(&rs, node);
            tw_stack(w, tid, node, parent, 0x400000 + rnd(&rs, 0x10000));
        } else if (what < 7) {
            tw_rss(w, tid, kind % 2, tu, rnd(&rs, 1u << 30));
            last_time[t] = tu;
        } else if (what < 10) {
            tw_mmap(w, tid, kind % 3, ++seq, tu, map, len, 3, 0x22, stack);
        } else if (what < 12) {
            tw_munmap(w, tid, kind % 2, ++seq, tu, map, len);
        } else if (what < 55) {
            tw_alloc(w, tid, kind % MT_ALLOC_KIND_COUNT, ++seq, tu, addr, size, stack);
        } else if (what < 90) {
            tw_free(w, tid, MT_FREE_FREE, ++seq, tu, addr);
        } else {
            tw_free(w, tid, MT_FREE_REALLOC, ++seq, tu, addr);
            tw_alloc(w, tid, MT_ALLOC_REALLOC, ++seq, tu, addr2, size2, 0);
        }
        if (what >= 7) {
            last_seq[t] = seq;
            last_time[t] = tu;
        }
    }
    tw_end(w, 1000, MT_END_EXIT, (now >> 10) + 1, 0);
    return w;
}

Test(pack, random_traces_keep_records_and_report)
{
    struct tmpdir t;
    tmpdir_make(&t);
    for (uint64_t seed = 1; seed <= 12; seed++) {
        struct tw *w = random_trace(seed, (uint32_t)(2 + seed * 3 % 60), 3000 + seed % 8 * 500);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(tw_write(w, t.path[i], false), 0);
        struct mt_error err;
        cr_assert_eq(mt_pack_file(t.path[1], 3, &err), 0, "%s", err.msg);
        cr_assert_eq(mt_pack_file_ex(t.path[2], 3, MT_PACK_KEEP_ADDRESSES, NULL, &err), 0, "%s",
                     err.msg);
        /* the reader's view of the RAW file is the writer's model */
        const struct mt_record *exp;
        size_t nexp = tw_expected(w, &exp);
        struct mt_reader *r;
        cr_assert_eq(mt_reader_open(t.path[0], &r, &err), 0);
        struct mt_record rec;
        char why[128];
        size_t n = 0, implicit = 0;
        while (mt_reader_next(r, &rec) > 0) {
            cr_assert_lt(n, nexp);
            cr_assert(tw_rec_equal(&rec, &exp[n], why, sizeof why), "seed %llu record %zu: %s",
                      (unsigned long long)seed, n, why);
            implicit += rec.type == MT_REC_FREE && rec.kind == MT_FREE_IMPLICIT;
            n++;
        }
        cr_assert_eq(n, nexp);
        cr_assert_gt(implicit, 0);
        mt_reader_close(r);

        cr_assert_eq(same_records(t.path[0], t.path[1], TW_CMP_NO_ADDR), nexp);
        cr_assert_eq(same_records(t.path[0], t.path[2], 0), nexp);
        same_reports(t.dir, t.path[0], t.path[1]);
        same_reports(t.dir, t.path[0], t.path[2]);
        tw_destroy(w);
    }
    tmpdir_remove(&t);
}

Test(pack, refusals_leave_the_file_alone)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct mt_error err;
    size_t l1, l2;

    /* the traced process is alive (this one) */
    struct tw *w = sample(t.path[0], false, 0, (uint32_t)getpid());
    char *before = slurp(t.path[0], &l1);
    cr_assert_eq(mt_pack_file(t.path[0], 3, &err), -EBUSY);
    cr_assert(strstr(err.msg, "still running") && strstr(err.msg, "--force"), "%s", err.msg);
    char *after = slurp(t.path[0], &l2);
    cr_assert(l1 == l2 && !memcmp(before, after, l1));
    free(after);
    cr_assert_eq(mt_pack_file_ex(t.path[0], 3, MT_PACK_FORCE, NULL, &err), 0, "%s", err.msg);
    tw_destroy(w);

    /* truncated */
    FILE *f = fopen(t.path[1], "wb");
    fwrite(before, 1, l1 - 3, f);
    fclose(f);
    free(before);
    before = slurp(t.path[1], &l1);
    cr_assert_eq(mt_pack_file(t.path[1], 3, &err), -EINVAL);
    cr_assert(strstr(err.msg, "truncated"), "%s", err.msg);
    after = slurp(t.path[1], &l2);
    cr_assert(l1 == l2 && !memcmp(before, after, l1));
    free(before);
    free(after);

    /* not a trace, missing, bad level */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope.bin", t.dir);
    cr_assert_eq(mt_pack_file(missing, 3, &err), -ENOENT);
    char want[256];
    snprintf(want, sizeof want, "cannot open '%s': No such file or directory", missing);
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(mt_pack_file(t.path[0], 99, &err), -EINVAL);
    cr_assert_eq(count_entries(t.dir), 2);
    tmpdir_remove(&t);
}

Test(pack, command)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct tw *w = sample(t.path[0], false, 0, 0);
    cr_assert_eq(tw_write(w, t.path[1], true), 0);
    char *a1[] = { "pack", "--level", "5", t.path[0], t.path[1], NULL };
    struct run r = run_cmd(mt_pack_main, t.dir, 5, a1);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "packed"), "%s", r.out);
    cr_assert(strstr(r.out, "already packed"), "%s", r.out);
    run_free(&r);

    char *a2[] = { "pack", "--level", "x", t.path[0], NULL };
    r = run_cmd(mt_pack_main, t.dir, 4, a2);
    cr_assert_eq(r.status, 2);
    run_free(&r);
    char *a3[] = { "pack", NULL };
    r = run_cmd(mt_pack_main, t.dir, 1, a3);
    cr_assert_eq(r.status, 2);
    run_free(&r);
    char *a4[] = { "pack", "-h", NULL };
    r = run_cmd(mt_pack_main, t.dir, 2, a4);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "Usage: memtrace pack"));
    run_free(&r);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope.bin", t.dir);
    char *a5[] = { "pack", missing, NULL };
    r = run_cmd(mt_pack_main, t.dir, 2, a5);
    cr_assert_eq(r.status, 1);
    cr_assert_eq(count_lines(r.err), 1);
    run_free(&r);
    tw_destroy(w);
    tmpdir_remove(&t);
}
