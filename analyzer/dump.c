/* dump: every record of a trace as one line of text, in merged order.
 *
 * For looking inside a trace and for tests that check what was recorded:
 * the lines are what the reader hands out (heap records normalized, host
 * tags resolved to blocks), one record per line, fields as name=value.
 * Names of phases, scopes and categories are printed as ids; the STRING
 * lines define them. `--type` keeps only some record types.
 */
#include "dump.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "reader.h"
#include "report.h"

static const char *const type_names[] = {
    [MT_REC_ALLOC] = "alloc", [MT_REC_FREE] = "free",     [MT_REC_MMAP] = "mmap",
    [MT_REC_MUNMAP] = "munmap", [MT_REC_STACK] = "stack", [MT_REC_MODULE] = "module",
    [MT_REC_RSS] = "rss",     [MT_REC_PROCESS] = "process", [MT_REC_END] = "end",
    [MT_REC_LOST] = "lost",   [MT_REC_MARK] = "mark",     [MT_REC_GPU] = "gpu",
};

static const char *const mark_names[] = {
    [MT_MARK_STRING] = "string",   [MT_MARK_PHASE_PUSH] = "phase_push",
    [MT_MARK_PHASE_POP] = "phase_pop", [MT_MARK_STEP] = "step",
    [MT_MARK_SCOPE_PUSH] = "scope_push", [MT_MARK_SCOPE_POP] = "scope_pop",
    [MT_MARK_TAG] = "tag",         [MT_MARK_TAG_BLOCK] = "tag",
};

static const char *const gpu_kind_names[] = { "alloc", "free", "oom" };

static void print_record(FILE *f, const struct mt_record *rec)
{
    const char *name = rec->type < sizeof type_names / sizeof *type_names && type_names[rec->type]
                           ? type_names[rec->type]
                           : "?";
    fprintf(f, "%" PRIu64 " %" PRIu64 " %u %s", rec->seq, rec->time_ns, rec->tid, name);
    switch (rec->type) {
    case MT_REC_ALLOC:
        fprintf(f, " kind=%u block=%" PRIu64 " size=%" PRIu64 " stack=%" PRIu64, rec->kind,
                rec->block, rec->size, rec->stack_id);
        break;
    case MT_REC_FREE:
        fprintf(f, " kind=%u block=%" PRIu64, rec->kind, rec->block);
        break;
    case MT_REC_MMAP:
    case MT_REC_MUNMAP:
        fprintf(f, " kind=%u addr=0x%" PRIx64 " size=%" PRIu64, rec->kind, rec->addr, rec->size);
        break;
    case MT_REC_STACK:
        fprintf(f, " id=%" PRIu64 " parent=%" PRIu64 " ip=0x%" PRIx64, rec->stack_id,
                rec->parent_id, rec->ip);
        break;
    case MT_REC_MODULE:
        fprintf(f, " kind=%u bias=0x%" PRIx64 " path=%.*s", rec->kind, rec->bias,
                (int)rec->path_len, rec->path ? rec->path : "");
        break;
    case MT_REC_RSS:
        fprintf(f, " kind=%u bytes=%" PRIu64, rec->kind, rec->rss_bytes);
        break;
    case MT_REC_PROCESS:
        fprintf(f, " pid=%u ppid=%u exe=%.*s", rec->pid, rec->ppid, (int)rec->exe_len, rec->exe);
        break;
    case MT_REC_END:
        fprintf(f, " kind=%u status=%" PRIu64, rec->kind, rec->status);
        break;
    case MT_REC_LOST:
        fprintf(f, " count=%" PRIu64, rec->lost);
        break;
    case MT_REC_MARK:
        fprintf(f, " %s", mark_names[rec->kind]);
        switch (rec->kind) {
        case MT_MARK_STRING:
            fprintf(f, " id=%" PRIu64 " text=%.*s", rec->value, (int)rec->str_len, rec->str);
            break;
        case MT_MARK_PHASE_PUSH:
        case MT_MARK_SCOPE_PUSH:
            fprintf(f, " name=%" PRIu64, rec->value);
            break;
        case MT_MARK_STEP:
            fprintf(f, " step=%" PRIu64, rec->value);
            break;
        case MT_MARK_TAG:
            fprintf(f, " space=%u addr=0x%" PRIx64 " category=%" PRIu64, rec->space, rec->addr,
                    rec->value);
            break;
        case MT_MARK_TAG_BLOCK:
            fprintf(f, " space=%u block=%" PRIu64 " category=%" PRIu64, rec->space, rec->block,
                    rec->value);
            break;
        }
        break;
    case MT_REC_GPU:
        fprintf(f, " %s device=%u api=%u space=%u", gpu_kind_names[rec->kind], rec->device, rec->api,
                rec->space);
        if (rec->kind != MT_GPU_OOM)
            fprintf(f, " addr=0x%" PRIx64, rec->addr);
        if (rec->kind != MT_GPU_FREE)
            fprintf(f, " size=%" PRIu64 " stack=%" PRIu64, rec->size, rec->stack_id);
        if (rec->kind == MT_GPU_ALLOC)
            fprintf(f, " stream=0x%" PRIx64, rec->stream);
        if (rec->kind == MT_GPU_OOM)
            fprintf(f, " result=%" PRIu64, rec->result);
        break;
    }
    fputc('\n', f);
}

static void dump_usage(FILE *f)
{
    fprintf(f, "Usage: memtrace dump [--type TYPE[,TYPE...]] FILE\n"
               "\n"
               "Prints every record of the trace in merged order, one per line:\n"
               "  SEQ TIME_NS TID TYPE FIELD=VALUE...\n"
               "TYPE is alloc, free, mmap, munmap, stack, module, rss, process, end,\n"
               "lost, mark or gpu. Heap records come out as the report sees them (a free\n"
               "names the block, i.e. the seq of its allocation); names of phases, scopes\n"
               "and categories are ids defined by 'mark string' lines.\n"
               "\n"
               "  --type LIST   only these record types (comma-separated)\n"
               "  -h, --help    this text\n");
}

/* Parses "alloc,free" into a bit set of record types; false on an unknown name. */
static bool parse_types(const char *s, unsigned *mask, char *bad, size_t badlen)
{
    *mask = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        bool found = false;
        for (unsigned t = 0; t < sizeof type_names / sizeof *type_names; t++) {
            if (type_names[t] && strlen(type_names[t]) == n && !strncmp(type_names[t], s, n)) {
                *mask |= 1u << t;
                found = true;
            }
        }
        if (!found) {
            snprintf(bad, badlen, "%.*s", (int)n, s);
            return false;
        }
        s += n + (s[n] == ',');
    }
    return *mask != 0;
}

int mt_dump_main(int argc, char **argv)
{
    unsigned mask = ~0u;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            dump_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--type") || !strncmp(a, "--type=", 7)) {
            const char *v = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
            char bad[64];
            if (!v)
                return mt_usage_error("dump", "--type needs a value%s", "");
            if (!parse_types(v, &mask, bad, sizeof bad))
                return mt_usage_error("dump", "unknown record type '%s'", bad);
        } else if (a[0] == '-' && a[1]) {
            return mt_usage_error("dump", "unknown option '%s'", a);
        } else if (path) {
            return mt_usage_error("dump", "one trace at a time (got '%s' too)", a);
        } else {
            path = a;
        }
    }
    if (!path)
        return mt_usage_error("dump", "no trace given%s", "");

    struct mt_reader *r;
    struct mt_error err;
    if (mt_reader_open(path, &r, &err) < 0) {
        fprintf(stderr, "memtrace dump: %s\n", err.msg);
        return 1;
    }
    struct mt_record rec;
    int rc;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        unsigned t = rec.type == MT_REC_BLOCK_ALLOC ? MT_REC_ALLOC : rec.type;
        if (t < 32 && (mask >> t & 1))
            print_record(stdout, &rec);
    }
    int status = 0;
    if (rc < 0) {
        fflush(stdout);
        fprintf(stderr, "memtrace dump: %s: %s\n", path, mt_reader_error(r));
        status = 1;
    } else if (mt_reader_partial(r)) {
        fprintf(stderr, "memtrace dump: %s: the trace was cut short; these are the records before the cut\n",
                path);
    }
    mt_reader_close(r);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "memtrace dump: cannot write the output: %s\n", strerror(errno));
        return 1;
    }
    return status;
}
