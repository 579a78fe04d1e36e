/* diff: two traces compared (see diff.h).
 *
 * mt_diff_compute runs one report pass per trace (report.h, MT_DIFF_SITES
 * sites per list), then names every kept site of both reports by its first
 * frames (a string of fields separated by 0x1f, frames by 0x1e), sorts the
 * names of both traces together and walks the runs of equal names, adding
 * up each list's bytes per trace into one mt_diff_site per name. The grew
 * and shrank lists are the sites with the largest positive and negative
 * change, sorted by the size of the change and cut at `top`. Nothing is
 * printed there; mt_diff_main parses arguments, runs the two passes itself
 * (each with its progress line on a terminal, progress.h), hands the
 * reports to mt_diff_reports and prints text or JSON. Changes are kept
 * as the two unsigned values and printed as sign and magnitude, so no
 * counter overflows. All state is local to a call.
 */
#include "diff.h"
#include "progress.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- naming and matching sites ------------------------------------------------ */

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* The name of a site (malloc'ed) or NULL if out of memory. */
static char *site_key(const struct mt_report_site *site)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    if (site->stack_id == 0)
        fputs("(no stack)", f);
    else if (site->nframes == 0)
        fputs("(stack not in the trace)", f);
    unsigned n = site->nframes < MT_DIFF_KEY_FRAMES ? site->nframes : MT_DIFF_KEY_FRAMES;
    for (unsigned i = 0; i < n; i++) {
        const struct mt_report_frame *fr = &site->frames[i];
        if (i)
            fputc('\x1e', f);
        if (fr->function)
            fprintf(f, "F\x1f%s\x1f%s\x1f%u\x1f%s", fr->function, fr->file ? base_name(fr->file) : "",
                    fr->line, fr->module ? base_name(fr->module) : "");
        else if (fr->module)
            fprintf(f, "M\x1f%s\x1f%" PRIx64, base_name(fr->module), fr->offset);
        else
            fprintf(f, "A\x1f%" PRIx64, fr->ip);
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}

struct named {
    char *key;
    unsigned side; /* 0: A, 1: B */
    size_t index;  /* into that report's site */
};

static int named_cmp(const void *x, const void *y)
{
    const struct named *a = x, *b = y;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    if (a->side != b->side)
        return a->side < b->side ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

struct ranked {
    uint64_t change;
    size_t index;
};

static int ranked_cmp(const void *x, const void *y)
{
    const struct ranked *a = x, *b = y;
    if (a->change != b->change)
        return a->change > b->change ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* The sites of list l that grew (grow) or shrank, largest change first, at
 * most top, into a malloc'ed array. 0 or -ENOMEM. */
static int pick_changes(const struct mt_diff *d, unsigned l, bool grow, unsigned top, size_t **out,
                        size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (!d->nsite || !top)
        return 0;
    struct ranked *r = malloc(d->nsite * sizeof *r);
    if (!r)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < d->nsite; i++) {
        uint64_t a = d->site[i].bytes[l][0], b = d->site[i].bytes[l][1];
        if (grow && b > a)
            r[n++] = (struct ranked){ b - a, i };
        else if (!grow && a > b)
            r[n++] = (struct ranked){ a - b, i };
    }
    qsort(r, n, sizeof *r, ranked_cmp);
    if (n > top)
        n = top;
    if (n) {
        *out = malloc(n * sizeof **out);
        if (!*out) {
            free(r);
            return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
            (*out)[i] = r[i].index;
    }
    *nout = n;
    free(r);
    return 0;
}

static uint64_t list_bytes(const struct mt_report_site *s, unsigned l)
{
    return l == MT_DIFF_PEAK ? s->peak_bytes : s->alloc_bytes;
}

/* Names and matches the sites of d->a and d->b. 0 or -ENOMEM. */
static int match_sites(struct mt_diff *d, unsigned top)
{
    const struct mt_report *rep[2] = { &d->a, &d->b };
    size_t total = d->a.nsite + d->b.nsite, n = 0;
    struct named *v = total ? calloc(total, sizeof *v) : NULL;
    if (total && !v)
        return -ENOMEM;
    int rc = 0;
    for (unsigned s = 0; s < 2 && rc == 0; s++)
        for (size_t i = 0; i < rep[s]->nsite; i++) {
            char *k = site_key(&rep[s]->site[i]);
            if (!k) {
                rc = -ENOMEM;
                break;
            }
            v[n++] = (struct named){ k, s, i };
        }
    if (rc == 0 && n) {
        qsort(v, n, sizeof *v, named_cmp);
        d->site = calloc(n, sizeof *d->site);
        if (!d->site)
            rc = -ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < n;) {
        struct mt_diff_site *ds = &d->site[d->nsite++];
        size_t j = i;
        for (; j < n && !strcmp(v[j].key, v[i].key); j++) {
            const struct mt_report_site *site = &rep[v[j].side]->site[v[j].index];
            for (unsigned l = 0; l < MT_DIFF_LISTS; l++)
                ds->bytes[l][v[j].side] += list_bytes(site, l);
            if (!ds->site)
                ds->site = site; /* sorted by side: A's first */
        }
        i = j;
    }
    for (size_t i = 0; i < n; i++)
        free(v[i].key);
    free(v);
    for (unsigned l = 0; rc == 0 && l < MT_DIFF_LISTS; l++) {
        rc = pick_changes(d, l, true, top, &d->grew[l], &d->ngrew[l]);
        if (rc == 0)
            rc = pick_changes(d, l, false, top, &d->shrank[l], &d->nshrank[l]);
    }
    return rc;
}

void mt_diff_destroy(struct mt_diff *d)
{
    if (!d)
        return;
    for (unsigned l = 0; l < MT_DIFF_LISTS; l++) {
        free(d->grew[l]);
        free(d->shrank[l]);
        d->grew[l] = d->shrank[l] = NULL;
        d->ngrew[l] = d->nshrank[l] = 0;
    }
    free(d->site);
    d->site = NULL;
    d->nsite = 0;
    mt_report_destroy(&d->a);
    mt_report_destroy(&d->b);
}

int mt_diff_reports(struct mt_report *a, struct mt_report *b, unsigned top, struct mt_diff *out,
                    struct mt_error *err)
{
    struct mt_diff d = { .a = *a, .b = *b };
    *a = (struct mt_report){ 0 };
    *b = (struct mt_report){ 0 };
    d.limited = d.a.sites > MT_DIFF_SITES || d.b.sites > MT_DIFF_SITES;
    int rc = match_sites(&d, top);
    if (rc < 0) {
        mti_error_set(err, "out of memory");
        mt_diff_destroy(&d);
        return rc;
    }
    *out = d;
    return 0;
}

int mt_diff_compute(const char *a, const char *b, const struct mt_diff_opts *opts,
                    struct mt_diff *out, struct mt_error *err)
{
    static const struct mt_diff_opts defaults = { .top = MT_DIFF_DEFAULT_TOP };
    if (!opts)
        opts = &defaults;
    struct mt_report ra, rb;
    struct mt_report_opts ro = { .top = MT_DIFF_SITES, .no_symbols = opts->no_symbols };
    int rc = mt_report_compute_opts(a, &ro, &ra, err);
    if (rc < 0)
        return rc;
    rc = mt_report_compute_opts(b, &ro, &rb, err);
    if (rc < 0) {
        mt_report_destroy(&ra);
        return rc;
    }
    return mt_diff_reports(&ra, &rb, opts->top, out, err);
}

/* ---- JSON ------------------------------------------------------------------------ */

static cJSON *add_raw(cJSON *o, const char *key, const char *lit)
{
    cJSON *n = cJSON_CreateRaw(lit);
    if (n)
        cJSON_AddItemToObject(o, key, n);
    return n;
}


/* b - a as an exact signed literal. */
static void change_literal(uint64_t a, uint64_t b, char *buf, size_t n)
{
    if (b >= a)
        snprintf(buf, n, "%" PRIu64, b - a);
    else
        snprintf(buf, n, "-%" PRIu64, a - b);
}

static cJSON *add_change(cJSON *o, const char *key, uint64_t a, uint64_t b)
{
    char buf[24];
    change_literal(a, b, buf, sizeof buf);
    return add_raw(o, key, buf);
}



static bool add_host_change(cJSON *o, const struct mt_report_host *a, const struct mt_report_host *b)
{
    bool ok = true;
#define X(f) ok = ok && add_change(o, #f, a->f, b->f);
    MT_REPORT_HOST_FIELDS(X)
#undef X
    return ok;
}

static cJSON *trace_json(const struct mt_report *rep)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *h = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "file", rep->file ? rep->file : "") &&
              cJSON_AddBoolToObject(o, "partial", rep->partial) &&
              mt_json_add_u64(o, "allocation_sites", rep->sites) &&
              (h = cJSON_AddObjectToObject(o, "host")) && mt_report_add_host_json(h, &rep->host, true);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}


static bool add_changes(cJSON *o, const char *key, const struct mt_diff *d, unsigned l,
                        const size_t *idx, size_t n)
{
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    bool ok = arr != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        const struct mt_diff_site *s = &d->site[idx[i]];
        cJSON *so = cJSON_CreateObject();
        ok = so != NULL;
        if (!ok)
            break;
        cJSON_AddItemToArray(arr, so);
        ok = mt_json_add_u64(so, "bytes_a", s->bytes[l][0]) && mt_json_add_u64(so, "bytes_b", s->bytes[l][1]) &&
             add_change(so, "change", s->bytes[l][0], s->bytes[l][1]) && mt_report_add_frames_json(so, s->site);
    }
    return ok;
}

cJSON *mt_diff_to_json(const struct mt_diff *d)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON *a = trace_json(&d->a), *b = a ? trace_json(&d->b) : NULL, *c = NULL, *ch = NULL;
    if (a)
        cJSON_AddItemToObject(o, "a", a);
    if (b)
        cJSON_AddItemToObject(o, "b", b);
    bool ok = a && b && (c = cJSON_AddObjectToObject(o, "change")) &&
              (ch = cJSON_AddObjectToObject(c, "host")) && add_host_change(ch, &d->a.host, &d->b.host) &&
              mt_json_add_u64(o, "sites_per_list", MT_DIFF_SITES) &&
              cJSON_AddBoolToObject(o, "all_sites_compared", !d->limited) &&
              add_changes(o, "grew", d, MT_DIFF_PEAK, d->grew[MT_DIFF_PEAK], d->ngrew[MT_DIFF_PEAK]) &&
              add_changes(o, "shrank", d, MT_DIFF_PEAK, d->shrank[MT_DIFF_PEAK],
                          d->nshrank[MT_DIFF_PEAK]) &&
              add_changes(o, "allocated_grew", d, MT_DIFF_ALLOCATED, d->grew[MT_DIFF_ALLOCATED],
                          d->ngrew[MT_DIFF_ALLOCATED]) &&
              add_changes(o, "allocated_shrank", d, MT_DIFF_ALLOCATED, d->shrank[MT_DIFF_ALLOCATED],
                          d->nshrank[MT_DIFF_ALLOCATED]);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- text ------------------------------------------------------------------------ */

/* "+6144 (+6.00 KiB)", "-12", "0": the change b - a; human size for bytes. */
static void change_text(uint64_t a, uint64_t b, bool bytes, char *buf, size_t n)
{
    uint64_t mag = b >= a ? b - a : a - b;
    char sign = b > a ? '+' : '-';
    if (mag == 0) {
        snprintf(buf, n, "0");
    } else if (bytes && mag >= 1024) {
        char hs[32];
        mt_human_size(mag, hs, sizeof hs);
        snprintf(buf, n, "%c%" PRIu64 " (%c%s)", sign, mag, sign, hs);
    } else {
        snprintf(buf, n, "%c%" PRIu64, sign, mag);
    }
}

static void print_row(FILE *f, const char *label, uint64_t a, uint64_t b, bool bytes)
{
    char ch[64];
    change_text(a, b, bytes, ch, sizeof ch);
    fprintf(f, "  %-20s %16" PRIu64 " %16" PRIu64 "  %s\n", label, a, b, ch);
}


static void print_site(FILE *f, const struct mt_diff_site *s, unsigned l)
{
    uint64_t a = s->bytes[l][0], b = s->bytes[l][1];
    char ch[32], hs[32];
    change_text(a, b, false, ch, sizeof ch);
    mt_human_size(b >= a ? b - a : a - b, hs, sizeof hs);
    fprintf(f, "  %s bytes (%c%s)  %" PRIu64 " -> %" PRIu64 "%s\n", ch, b > a ? '+' : '-', hs, a, b,
            a == 0 ? "  (not in A)" : b == 0 ? "  (not in B)" : "");
    mt_report_print_site_frames(f, s->site, MT_REPORT_DEFAULT_FRAMES);
}

static void print_changes(FILE *f, const char *title, const struct mt_diff *d, unsigned l,
                          const size_t *idx, size_t n)
{
    fprintf(f, "\n%s\n", title);
    if (!n)
        fputs("  (none)\n", f);
    for (size_t i = 0; i < n; i++)
        print_site(f, &d->site[idx[i]], l);
}

static void print_trace_line(FILE *f, const char *which, const struct mt_report *rep)
{
    fprintf(f, "%s  %s", which, rep->file);
    if (rep->partial)
        fputs("  (partial)", f);
    fputc('\n', f);
}

static void print_text(FILE *f, const struct mt_diff *d, unsigned top)
{
    const struct mt_report_host *a = &d->a.host, *b = &d->b.host;
    print_trace_line(f, "A", &d->a);
    print_trace_line(f, "B", &d->b);
    fprintf(f, "\n  %-20s %16s %16s  %s\n", "", "A", "B", "change");
    print_row(f, "heap peak", a->peak_bytes, b->peak_bytes, true);
    print_row(f, "heap peak at (ns)", a->peak_time_ns, b->peak_time_ns, false);
    print_row(f, "heap at end", a->end_bytes, b->end_bytes, true);
    print_row(f, "allocations", a->alloc_count, b->alloc_count, false);
    print_row(f, "frees", a->free_count, b->free_count, false);
    print_row(f, "allocated", a->total_allocated_bytes, b->total_allocated_bytes, true);
    print_row(f, "RSS peak", a->rss_peak_bytes, b->rss_peak_bytes, true);
    print_row(f, "anon mmap peak", a->mmap_peak_bytes, b->mmap_peak_bytes, true);
    print_row(f, "file mmap peak", a->mmap_file_peak_bytes, b->mmap_file_peak_bytes, true);
    print_row(f, "allocation sites", d->a.sites, d->b.sites, false);
    if (!top)
        return;
    print_changes(f, "Sites whose bytes live at the heap peak grew most", d, MT_DIFF_PEAK,
                  d->grew[MT_DIFF_PEAK], d->ngrew[MT_DIFF_PEAK]);
    print_changes(f, "Sites whose bytes live at the heap peak shrank most", d, MT_DIFF_PEAK,
                  d->shrank[MT_DIFF_PEAK], d->nshrank[MT_DIFF_PEAK]);
    print_changes(f, "Sites whose total bytes allocated grew most", d, MT_DIFF_ALLOCATED,
                  d->grew[MT_DIFF_ALLOCATED], d->ngrew[MT_DIFF_ALLOCATED]);
    print_changes(f, "Sites whose total bytes allocated shrank most", d, MT_DIFF_ALLOCATED,
                  d->shrank[MT_DIFF_ALLOCATED], d->nshrank[MT_DIFF_ALLOCATED]);
    if (d->limited)
        fprintf(f, "\nNote: only the %u largest sites per list of each trace are compared;"
                   " smaller ones count as 0.\n", MT_DIFF_SITES);
}

/* ---- command line ---------------------------------------------------------------- */

static void diff_usage(FILE *f)
{
    fprintf(f,
            "Usage: memtrace diff [--json] [--top N] [--no-symbols] A B\n"
            "\n"
            "Compare two traces (say, before and after a change): the heap peak and\n"
            "when it was reached, live bytes at the end, allocations, frees, bytes\n"
            "allocated, RSS and mapping peaks side by side with the change B - A;\n"
            "then the allocation sites whose bytes live at the heap peak grew and\n"
            "shrank the most, and likewise for total bytes allocated.\n"
            "\n"
            "Sites are matched by their first %u frames (function, source file, line\n"
            "and module name; unresolved frames by module name and offset, which\n"
            "match only for the same binary). A site in one trace only counts as 0\n"
            "in the other. The %u largest sites per list of each trace are compared.\n"
            "\n"
            "Options:\n"
            "  --json        print JSON (docs/REPORT.md lists the keys)\n"
            "  --top N       sites shown per list (default %u; 0: none)\n"
            "  --no-symbols  do not read symbols: frames match by recorded address\n"
            "                only (same binary at the same address)\n"
            "  -h, --help    show this help\n"
            "\n"
            "Exit status: 0 fine, 1 error (unreadable, not a trace, corrupted),\n"
            "2 usage error, 3 a trace is truncated (compared as far as it goes).\n",
            MT_DIFF_KEY_FRAMES, MT_DIFF_SITES, MT_DIFF_DEFAULT_TOP);
}

static int diff_usage_error(const char *fmt, const char *arg)
{
    return mt_usage_error("diff", fmt, arg);
}


int mt_diff_main(int argc, char **argv)
{
    bool json = false, opts = true, no_symbols = false;
    unsigned top = MT_DIFF_DEFAULT_TOP;
    const char *files[2];
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && !strcmp(a, "--")) {
            opts = false;
        } else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            diff_usage(stdout);
            return 0;
        } else if (opts && !strcmp(a, "--json")) {
            json = true;
        } else if (opts && !strcmp(a, "--no-symbols")) {
            no_symbols = true;
        } else if (opts && !strcmp(a, "--top")) {
            if (i + 1 >= argc || !mt_parse_count(argv[i + 1], &top))
                return diff_usage_error("%s needs a count (0 to 1000000)", a);
            i++;
        } else if (opts && !strncmp(a, "--top=", 6)) {
            if (!mt_parse_count(a + 6, &top))
                return diff_usage_error("%s needs a count (0 to 1000000)", "--top");
        } else if (opts && a[0] == '-' && a[1]) {
            return diff_usage_error("unknown option '%s'", a);
        } else if (nfiles == 2) {
            return diff_usage_error("too many files: '%s' (give two traces, A and B)", a);
        } else {
            files[nfiles++] = a;
        }
    }
    if (nfiles < 2)
        return diff_usage_error("%s", "two trace files needed (A and B)");

    struct mt_report reps[2];
    struct mt_error err;
    for (int i = 0; i < 2; i++) {
        struct mt_progress pr;
        mt_progress_init(&pr, "reading", files[i]);
        struct mt_report_opts o = { .top = MT_DIFF_SITES, .no_symbols = no_symbols,
                                    .progress = mt_progress_update, .progress_arg = &pr };
        int rc = mt_report_compute_opts(files[i], &o, &reps[i], &err);
        mt_progress_done(&pr);
        if (rc < 0) {
            fprintf(stderr, "memtrace: %s\n", err.msg);
            if (i)
                mt_report_destroy(&reps[0]);
            return 1;
        }
    }
    struct mt_diff d;
    if (mt_diff_reports(&reps[0], &reps[1], top, &d, &err) < 0) {
        fprintf(stderr, "memtrace: %s\n", err.msg);
        return 1;
    }
    int status = d.a.partial || d.b.partial ? 3 : 0;
    if (json) {
        cJSON *doc = mt_diff_to_json(&d);
        char *s = doc ? cJSON_Print(doc) : NULL;
        if (s) {
            printf("%s\n", s);
            cJSON_free(s);
        } else {
            fprintf(stderr, "memtrace: out of memory\n");
            status = 1;
        }
        cJSON_Delete(doc);
    } else {
        print_text(stdout, &d, top);
    }
    fflush(stdout);
    const struct mt_report *both[2] = { &d.a, &d.b };
    for (int i = 0; status != 1 && i < 2; i++)
        if (both[i]->partial)
            fprintf(stderr, "memtrace: warning: %s is truncated; the comparison covers what was"
                            " recorded before the cut\n", both[i]->file);
    mt_diff_destroy(&d);
    return status;
}
