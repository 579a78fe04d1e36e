/* script: perf script's text format (see script.h). The writer keeps only
 * the call tree (sites.h's node table) and the symbolizer's caches; every
 * allocation's stack is walked and printed as it comes.
 */
#include "script.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "out-file.h"
#include "reader.h"
#include "report.h"
#include "sites.h"
#include "symbolize.h"

#define MAX_INLINED 64
#define PERF_MAX_FRAMES 1024

/* ---- reading --------------------------------------------------------------- */

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    return true;
}

/* "\t    7f12 func+0x1f (/lib/x.so)": the function, offset stripped, into
 * out (NUL-terminated); false if the line is no frame. */
static bool frame_line(const char *line, char *out, size_t n)
{
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    const char *ip = p;
    while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
        p++;
    if (p == ip || (*p != ' ' && *p != '\t'))
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    const char *end = p + strlen(p);
    while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
        end--;
    /* the module in parentheses at the end */
    if (end > p && end[-1] == ')') {
        int depth = 0;
        const char *q = end - 1;
        for (; q >= p; q--) {
            if (*q == ')')
                depth++;
            else if (*q == '(' && --depth == 0)
                break;
        }
        if (q >= p) {
            end = q;
            while (end > p && end[-1] == ' ')
                end--;
        }
    }
    /* "+0x1f" */
    for (const char *q = end; q > p + 1; q--) {
        if (q[-1] == '+' && q[0] == '0' && q + 1 < end && q[1] == 'x') {
            end = q - 1;
            break;
        }
    }
    size_t len = (size_t)(end - p);
    if (len == 0)
        return false;
    if (len >= n)
        len = n - 1;
    memcpy(out, p, len);
    out[len] = 0;
    return true;
}

int mt_perf_parse(const char *path, mt_perf_sample_fn fn, void *arg, uint64_t *samples, struct mt_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        mti_error_set(err, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    char *line = NULL;
    size_t cap = 0;
    char **frames = calloc(PERF_MAX_FRAMES, sizeof *frames);
    const char **rev = calloc(PERF_MAX_FRAMES, sizeof *rev);
    unsigned n = 0;
    bool in_sample = false;
    uint64_t count = 0;
    int rc = 0;
    if (!frames || !rev) {
        rc = -ENOMEM;
        goto out;
    }
    for (;;) {
        ssize_t got = getline(&line, &cap, f);
        bool eof = got < 0;
        if (eof || is_blank(line)) {
            if (in_sample && n) {
                for (unsigned i = 0; i < n; i++)
                    rev[i] = frames[n - 1 - i];
                if ((rc = fn(rev, n, arg)) < 0)
                    goto out;
                count++;
            }
            for (unsigned i = 0; i < n; i++)
                free(frames[i]);
            n = 0;
            in_sample = false;
            if (eof)
                break;
            continue;
        }
        if (line[0] != ' ' && line[0] != '\t') {
            if (line[0] == '#')
                continue;
            for (unsigned i = 0; i < n; i++)
                free(frames[i]);
            n = 0;
            in_sample = true; /* a header: its sample's frames follow */
            continue;
        }
        char name[1024];
        if (in_sample && n < PERF_MAX_FRAMES && frame_line(line, name, sizeof name)) {
            if (!(frames[n] = strdup(name))) {
                rc = -ENOMEM;
                goto out;
            }
            n++;
        }
    }
    if (!count) {
        mti_error_set(err, "%s: no samples with call chains (perf script output of perf record -g expected)",
                      path);
        rc = -EINVAL;
    }
out:
    if (rc == -ENOMEM)
        mti_error_set(err, "out of memory");
    for (unsigned i = 0; frames && i < n; i++)
        free(frames[i]);
    free(frames);
    free(rev);
    free(line);
    fclose(f);
    if (rc == 0 && samples)
        *samples = count;
    return rc;
}

/* ---- writing --------------------------------------------------------------- */

struct script_state {
    struct mt_sites sites;
    struct mt_symbolizer *sym;
    char *comm;
    uint64_t start_ns;
    uint32_t pid;
};

static int load_tree(const char *path, struct script_state *st, struct mt_error *err)
{
    struct mt_reader *r;
    int rc = mt_reader_open(path, &r, err);
    if (rc < 0)
        return rc;
    st->pid = mt_reader_info(r)->pid;
    st->start_ns = mt_reader_info(r)->start_mono_ns;
    struct mt_record rec;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        if (rec.type == MT_REC_STACK) {
            rc = mt_sites_node(&st->sites, rec.stack_id, rec.parent_id, rec.ip);
        } else if (rec.type == MT_REC_MODULE && rec.kind == MT_MODULE_LOAD && st->sym) {
            rc = mt_symbolizer_add_module(st->sym, rec.path, rec.path_len, rec.bias, rec.segs, rec.nsegs,
                                          rec.build_id, rec.build_id_len);
        } else if (rec.type == MT_REC_PROCESS && !st->comm && rec.exe_len) {
            const char *e = rec.exe, *end = rec.exe + rec.exe_len;
            for (const char *p = rec.exe; p < end; p++)
                if (*p == '/')
                    e = p + 1;
            if (!(st->comm = strndup(e, (size_t)(end - e))))
                rc = -ENOMEM;
        }
        if (rc < 0) {
            mti_error_set(err, "out of memory");
            break;
        }
    }
    if (rc < 0 && rc != -ENOMEM)
        mti_error_set(err, "%s", mt_reader_error(r));
    mt_reader_close(r);
    return rc < 0 ? rc : 0;
}

static void print_frame(FILE *f, uint64_t ip, const struct mt_frame_info *fi)
{
    /* perf's names have no spaces around them; keep the function whole
     * (C++ signatures have spaces, which collapsers accept) */
    fprintf(f, "\t%16llx %s (%s)\n", (unsigned long long)ip, fi->function ? fi->function : "[unknown]",
            fi->module ? fi->module : "[unknown]");
}

static void print_sample(FILE *f, struct script_state *st, const struct mt_record *rec)
{
    uint64_t t = st->start_ns + rec->time_ns;
    fprintf(f, "%s %u/%u %llu.%06llu: %llu memtrace:malloc:\n", st->comm, st->pid, rec->tid,
            (unsigned long long)(t / 1000000000u), (unsigned long long)(t % 1000000000u / 1000u),
            (unsigned long long)rec->size);
    uint64_t ips[MT_MAX_FRAMES];
    unsigned nips = mt_sites_frames(&st->sites, rec->stack_id, ips, MT_MAX_FRAMES);
    struct mt_frame_info info[MAX_INLINED];
    bool trimming = true;
    unsigned printed = 0;
    for (int pass = 0; pass < 2 && !printed; pass++) {
        trimming = pass == 0;
        for (unsigned i = 0; i < nips; i++) {
            unsigned k = 1;
            if (st->sym)
                k = mt_symbolize(st->sym, ips[i], false, info, MAX_INLINED);
            else
                info[0] = (struct mt_frame_info){ .offset = ips[i], .status = MT_FRAME_NO_MODULE };
            for (unsigned j = 0; j < k; j++) {
                if (trimming && mt_report_allocator_frame(info[j].function))
                    continue;
                trimming = false;
                print_frame(f, ips[i], &info[j]);
                printed++;
            }
        }
    }
    fputc('\n', f);
}

static void script_usage(FILE *f)
{
    fprintf(f, "Usage: memtrace script [-o OUT] [--no-symbols] FILE\n\n"
               "Prints every heap allocation of the trace in perf script's text format\n"
               "(event memtrace:malloc, period = bytes), for perf tools (stackcollapse-perf.pl,\n"
               "inferno-collapse-perf, speedscope). See docs/FLAMEGRAPH.md.\n\n"
               "  -o, --output OUT  write to OUT instead of stdout\n"
               "  --no-symbols      addresses only\n");
}

int mt_script_main(int argc, char **argv)
{
    const char *file = NULL, *outp = "-";
    bool no_symbols = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            script_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) {
            if (++i == argc)
                return mt_usage_error("script", "%s needs a file", argv[i - 1]);
            outp = argv[i];
        } else if (!strcmp(argv[i], "--no-symbols")) {
            no_symbols = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return mt_usage_error("script", "unknown option %s", argv[i]);
        } else if (file) {
            return mt_usage_error("script", "one trace at a time (extra argument %s)", argv[i]);
        } else {
            file = argv[i];
        }
    }
    if (!file)
        return mt_usage_error("script", "%s", "no trace given");
    struct mt_error err = { "" };
    struct script_state st = { 0 };
    mt_sites_init(&st.sites);
    struct mt_out *out = NULL;
    struct mt_reader *r = NULL;
    int rc = 0;
    if (!no_symbols && (rc = mt_symbolizer_new(&st.sym, &err)) < 0)
        goto fail;
    if ((rc = load_tree(file, &st, &err)) < 0)
        goto fail;
    if (!st.comm && !(st.comm = strdup("memtrace"))) {
        rc = -ENOMEM;
        mti_error_set(&err, "out of memory");
        goto fail;
    }
    if ((rc = mt_reader_open(file, &r, &err)) < 0)
        goto fail;
    if ((rc = mt_out_open(outp, &out, &err)) < 0)
        goto fail;
    struct mt_record rec;
    while ((rc = mt_reader_next(r, &rec)) > 0)
        if (rec.type == MT_REC_ALLOC)
            print_sample(out->f, &st, &rec);
    if (rc < 0) {
        mti_error_set(&err, "%s", mt_reader_error(r));
        goto fail;
    }
    rc = mt_out_commit(out, &err);
    out = NULL;
    if (rc < 0)
        goto fail;
    mt_reader_close(r);
    mt_sites_destroy(&st.sites);
    mt_symbolizer_free(st.sym);
    free(st.comm);
    return 0;
fail:
    fprintf(stderr, "memtrace script: %s\n", err.msg[0] ? err.msg : strerror(-rc));
    mt_out_abort(out);
    mt_reader_close(r);
    mt_sites_destroy(&st.sites);
    mt_symbolizer_free(st.sym);
    free(st.comm);
    return 1;
}
