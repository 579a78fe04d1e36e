/* report: summary of a trace (see report.h).
 *
 * mt_report_compute runs the reader once; each record updates running
 * counters, the live table (heap blocks by block id, the seq of their
 * allocation, with their size) and two range sets (mappings). Heap records
 * are taken as the reader normalizes them, so a RAW trace and its packed
 * form (which has no heap addresses) give the same numbers.
 * Peaks are checked only after the events that can raise them. Nothing is
 * printed there; mt_report_main parses arguments, runs one pass per file
 * (with a progress line on a terminal when a pass takes over a second) and
 * prints text or JSON. All state is local to a call.
 */
#include "report.h"
#include "progress.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "live-table.h"
#include "range-set.h"
#include "reader.h"

/* ---- the pass --------------------------------------------------------------- */

static uint64_t page_round(uint64_t len, uint32_t page)
{
    if (page == 0 || (page & (page - 1)))
        return len;
    uint64_t r = (len + page - 1) & ~(uint64_t)(page - 1);
    return r < len ? UINT64_MAX & ~(uint64_t)(page - 1) : r;
}

static uint64_t range_end(uint64_t addr, uint64_t len)
{
    return addr + len < addr ? UINT64_MAX : addr + len;
}

void mt_report_destroy(struct mt_report *rep)
{
    if (!rep)
        return;
    free(rep->file);
    free(rep->exe);
    free(rep->argv);
    rep->file = rep->exe = rep->argv = NULL;
}

int mt_report_compute_ex(const char *path, mt_report_progress_fn progress, void *arg,
                         struct mt_report *out, struct mt_error *err)
{
    struct mt_reader *r = NULL;
    int rc = mt_reader_open(path, &r, err);
    if (rc < 0)
        return rc;
    const struct mt_trace_info *info = mt_reader_info(r);
    struct mt_report rep = {
        .version = info->version, .pid = info->pid, .ppid = info->ppid,
        .session_pid = info->session_pid, .start_real_ns = info->start_real_ns,
        .file_size = info->file_size, .packed = info->packed, .threads = info->threads,
    };
    struct mt_report_host *h = &rep.host;
    struct mt_live_table live, remap_from; /* remap_from: tid -> old range of an mremap */
    mt_live_table_init(&live);
    mt_live_table_init(&remap_from);
    struct mt_range_set *anon = NULL, *file = NULL;
    if (mt_range_set_new(&anon) < 0 || mt_range_set_new(&file) < 0) {
        rc = -ENOMEM;
        goto nomem;
    }
    const uint32_t page = info->page_size;
    uint64_t live_bytes = 0;
    struct mt_record rec;

    while ((rc = mt_reader_next(r, &rec)) > 0) {
        rep.records++;
        if (rec.time_ns > rep.duration_ns)
            rep.duration_ns = rec.time_ns;
        switch (rec.type) {
        case MT_REC_ALLOC: {
            rep.events++;
            h->alloc_count++;
            h->total_allocated_bytes += rec.size;
            struct mt_live_entry e = { rec.block, rec.size }, old;
            int k = mt_live_table_insert(&live, &e, &old);
            if (k < 0) {
                rc = k;
                goto nomem;
            }
            if (k == 1) /* two allocations with one seq: a damaged trace */
                live_bytes -= old.value;
            live_bytes += rec.size;
            if (live_bytes > h->peak_bytes) {
                h->peak_bytes = live_bytes;
                h->peak_time_ns = rec.time_ns;
            }
            break;
        }
        case MT_REC_FREE: {
            struct mt_live_entry old;
            bool released = rec.block && mt_live_table_remove(&live, rec.block, &old);
            if (released)
                live_bytes -= old.value;
            if (rec.kind == MT_FREE_IMPLICIT) {
                /* Not an event of the program: the allocation that follows
                 * reused the block's address. */
                rep.records--;
                h->inconsistent_count++;
                break;
            }
            rep.events++;
            if (released)
                h->free_count++;
            else
                h->unmatched_free_count++;
            break;
        }
        case MT_REC_MMAP: {
            rep.events++;
            uint64_t end = range_end(rec.addr, page_round(rec.size, page));
            bool is_anon = rec.kind == MT_MAP_ANON;
            if (rec.kind == MT_MAP_REMAP) {
                /* Same backing as the old range this thread just gave up. */
                struct mt_live_entry old;
                is_anon = !mt_live_table_remove(&remap_from, rec.tid, &old) || old.value == 0;
            }
            if (mt_range_set_remove(is_anon ? file : anon, rec.addr, end, NULL) < 0 ||
                mt_range_set_insert(is_anon ? anon : file, rec.addr, end) < 0) {
                rc = -ENOMEM;
                goto nomem;
            }
            uint64_t a = mt_range_set_total(anon), f = mt_range_set_total(file);
            if (a > h->mmap_peak_bytes)
                h->mmap_peak_bytes = a;
            if (f > h->mmap_file_peak_bytes)
                h->mmap_file_peak_bytes = f;
            break;
        }
        case MT_REC_MUNMAP: {
            rep.events++;
            uint64_t end = range_end(rec.addr, page_round(rec.size, page));
            uint64_t ra, rf;
            if (mt_range_set_remove(anon, rec.addr, end, &ra) < 0 ||
                mt_range_set_remove(file, rec.addr, end, &rf) < 0) {
                rc = -ENOMEM;
                goto nomem;
            }
            if (rec.kind == MT_UNMAP_REMAP) {
                /* value 1: the old range was file-backed (mostly) */
                struct mt_live_entry e = { .key = rec.tid, .value = rf > ra };
                if (mt_live_table_insert(&remap_from, &e, NULL) < 0) {
                    rc = -ENOMEM;
                    goto nomem;
                }
            }
            break;
        }
        case MT_REC_STACK:
            rep.stacks++;
            break;
        case MT_REC_MODULE:
            if (rec.kind == MT_MODULE_LOAD)
                rep.modules++;
            break;
        case MT_REC_RSS:
            if (rec.rss_bytes > h->rss_peak_bytes)
                h->rss_peak_bytes = rec.rss_bytes;
            break;
        case MT_REC_END:
            rep.end_kind = rec.kind;
            rep.exit_status = rec.status;
            break;
        case MT_REC_LOST:
            rep.lost += rec.lost;
            break;
        default:
            break;
        }
        if (progress && (rep.records & 0xffff) == 0) {
            uint64_t done, total;
            mt_reader_progress(r, &done, &total);
            progress(done, total, arg);
        }
    }
    if (rc < 0) {
        mti_error_set(err, "%s", mt_reader_error(r));
        goto out;
    }

    h->end_bytes = live_bytes;
    h->mmap_end_bytes = mt_range_set_total(anon);
    h->mmap_file_end_bytes = mt_range_set_total(file);
    rep.partial = mt_reader_partial(r);
    rep.ended = mt_reader_ended(r);
    rep.complete = rep.ended && !rep.partial;
    const struct mt_process_info *proc = mt_reader_process(r);
    rep.file = strdup(path);
    if (!rep.file)
        goto nomem_rc;
    if (proc) {
        rep.has_process = true;
        rep.proc_pid = proc->pid;
        rep.proc_ppid = proc->ppid;
        rep.exe = strdup(proc->exe);
        rep.argv = malloc(proc->argv_len + 1);
        if (!rep.exe || !rep.argv)
            goto nomem_rc;
        memcpy(rep.argv, proc->argv, proc->argv_len + 1);
        rep.argv_len = proc->argv_len;
    }
    rc = 0;
    goto out;

nomem_rc:
    rc = -ENOMEM;
nomem:
    mti_error_set(err, "%s: out of memory", path);
out:
    mt_live_table_destroy(&live);
    mt_live_table_destroy(&remap_from);
    mt_range_set_free(anon);
    mt_range_set_free(file);
    mt_reader_close(r);
    if (rc < 0) {
        mt_report_destroy(&rep);
        return rc;
    }
    *out = rep;
    return 0;
}

int mt_report_compute(const char *path, struct mt_report *out, struct mt_error *err)
{
    return mt_report_compute_ex(path, NULL, NULL, out, err);
}

/* ---- formatting --------------------------------------------------------------- */

void mt_human_size(uint64_t bytes, char *buf, size_t n)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    if (bytes < 1024) {
        snprintf(buf, n, "%" PRIu64 " B", bytes);
        return;
    }
    double v = (double)bytes / 1024.0;
    unsigned u = 0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof *units) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, n, v < 10.0 ? "%.2f %s" : v < 100.0 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void human_duration(uint64_t ns, char *buf, size_t n)
{
    if (ns >= 1000000000ull)
        snprintf(buf, n, "%.3f s", (double)ns / 1e9);
    else if (ns >= 1000000ull)
        snprintf(buf, n, "%.3f ms", (double)ns / 1e6);
    else if (ns >= 1000ull)
        snprintf(buf, n, "%.3f us", (double)ns / 1e3);
    else
        snprintf(buf, n, "%" PRIu64 " ns", ns);
}

static const char *status_text(const struct mt_report *rep)
{
    if (rep->partial)
        return "partial";
    if (rep->ended)
        return "complete";
    return "ended without exit: killed, crashed or still running";
}

static cJSON *add_u64(cJSON *o, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    cJSON *n = cJSON_CreateRaw(buf);
    if (n)
        cJSON_AddItemToObject(o, key, n);
    return n;
}

cJSON *mt_report_to_json(const struct mt_report *rep)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = cJSON_AddStringToObject(o, "file", rep->file ? rep->file : "") &&
              add_u64(o, "format_version", rep->version) && add_u64(o, "pid", rep->pid) &&
              add_u64(o, "ppid", rep->ppid) && add_u64(o, "session_pid", rep->session_pid) &&
              cJSON_AddStringToObject(o, "status", status_text(rep)) &&
              cJSON_AddBoolToObject(o, "complete", rep->complete) &&
              cJSON_AddBoolToObject(o, "partial", rep->partial) &&
              cJSON_AddBoolToObject(o, "packed", rep->packed);
    if (ok && rep->ended) {
        cJSON *e = cJSON_AddObjectToObject(o, "end");
        const char *how = rep->end_kind == MT_END_UNDERSCORE_EXIT ? "_exit" : "exit";
        ok = e && cJSON_AddStringToObject(e, "kind", how) && add_u64(e, "status", rep->exit_status);
    } else if (ok) {
        ok = cJSON_AddNullToObject(o, "end") != NULL;
    }
    ok = ok && add_u64(o, "start_real_ns", rep->start_real_ns) &&
         add_u64(o, "duration_ns", rep->duration_ns) && add_u64(o, "file_bytes", rep->file_size) &&
         add_u64(o, "threads", rep->threads) && add_u64(o, "records", rep->records) &&
         add_u64(o, "events", rep->events) && add_u64(o, "stack_nodes", rep->stacks) &&
         add_u64(o, "modules", rep->modules) && add_u64(o, "lost_events", rep->lost);
    cJSON *p = ok ? cJSON_AddObjectToObject(o, "process") : NULL;
    ok = p != NULL;
    if (ok) {
        ok = add_u64(p, "pid", rep->has_process ? rep->proc_pid : rep->pid) &&
             add_u64(p, "ppid", rep->has_process ? rep->proc_ppid : rep->ppid);
        if (ok && rep->exe)
            ok = cJSON_AddStringToObject(p, "exe", rep->exe) != NULL;
        else if (ok)
            ok = cJSON_AddNullToObject(p, "exe") != NULL;
        cJSON *av = ok ? cJSON_AddArrayToObject(p, "argv") : NULL;
        ok = av != NULL;
        for (size_t i = 0; ok && rep->argv && i < rep->argv_len;) {
            const char *a = rep->argv + i;
            size_t l = strlen(a);
            cJSON *s = cJSON_CreateString(a);
            ok = s != NULL;
            if (ok)
                cJSON_AddItemToArray(av, s);
            i += l + 1;
        }
    }
    const struct mt_report_host *h = &rep->host;
    cJSON *ho = ok ? cJSON_AddObjectToObject(o, "host") : NULL;
    ok = ho && add_u64(ho, "peak_bytes", h->peak_bytes) &&
         add_u64(ho, "peak_time_ns", h->peak_time_ns) && add_u64(ho, "end_bytes", h->end_bytes) &&
         add_u64(ho, "alloc_count", h->alloc_count) && add_u64(ho, "free_count", h->free_count) &&
         add_u64(ho, "total_allocated_bytes", h->total_allocated_bytes) &&
         add_u64(ho, "unmatched_free_count", h->unmatched_free_count) &&
         add_u64(ho, "inconsistent_count", h->inconsistent_count) &&
         add_u64(ho, "rss_peak_bytes", h->rss_peak_bytes) &&
         add_u64(ho, "mmap_peak_bytes", h->mmap_peak_bytes) &&
         add_u64(ho, "mmap_end_bytes", h->mmap_end_bytes) &&
         add_u64(ho, "mmap_file_peak_bytes", h->mmap_file_peak_bytes) &&
         add_u64(ho, "mmap_file_end_bytes", h->mmap_file_end_bytes);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Prints argv (NUL-separated) space-separated, quoting what needs it. */
static void print_argv(FILE *f, const char *argv, size_t len)
{
    for (size_t i = 0; i < len;) {
        const char *a = argv + i;
        size_t l = strlen(a);
        bool quote = l == 0 || strpbrk(a, " \t\n'\"\\$`*?;&|<>()") != NULL;
        fputs(i ? " " : "", f);
        if (!quote) {
            fputs(a, f);
        } else {
            fputc('\'', f);
            for (const char *c = a; *c; c++) {
                if (*c == '\'')
                    fputs("'\\''", f);
                else
                    fputc(*c, f);
            }
            fputc('\'', f);
        }
        i += l + 1;
    }
}

static void print_size_line(FILE *f, const char *label, uint64_t v)
{
    char hs[32];
    mt_human_size(v, hs, sizeof hs);
    fprintf(f, "  %-18s %10s  (%" PRIu64 " bytes)", label, hs, v);
}

static void print_text(FILE *f, const struct mt_report *rep)
{
    const struct mt_report_host *h = &rep->host;
    char buf[64];
    fprintf(f, "%s\n", rep->file);
    fprintf(f, "  %-18s %" PRIu32, "process", rep->has_process ? rep->proc_pid : rep->pid);
    if (rep->exe) {
        fprintf(f, "  ");
        if (rep->argv_len)
            print_argv(f, rep->argv, rep->argv_len);
        else
            fputs(rep->exe, f);
        if (rep->argv_len && strcmp(rep->exe, rep->argv) != 0)
            fprintf(f, "  [%s]", rep->exe);
    }
    fputc('\n', f);
    fprintf(f, "  %-18s %s", "status", status_text(rep));
    if (rep->ended)
        fprintf(f, ": %s(%" PRIu64 ")%s", rep->end_kind == MT_END_UNDERSCORE_EXIT ? "_exit" : "exit",
                rep->exit_status, rep->partial ? ", then the file was cut" : "");
    else if (rep->partial)
        fprintf(f, " (the file was cut short; numbers cover what it holds)");
    fputc('\n', f);
    human_duration(rep->duration_ns, buf, sizeof buf);
    fprintf(f, "  %-18s %s\n", "duration", buf);
    fprintf(f, "  %-18s %" PRIu64 "\n", "threads", rep->threads);
    fprintf(f, "  %-18s %" PRIu64 "  (%" PRIu64 " stack node%s, %" PRIu64 " module%s)\n", "events",
            rep->events, rep->stacks, rep->stacks == 1 ? "" : "s", rep->modules,
            rep->modules == 1 ? "" : "s");
    if (rep->lost)
        fprintf(f, "  %-18s %" PRIu64 "\n", "lost events", rep->lost);
    fputc('\n', f);
    print_size_line(f, "heap peak", h->peak_bytes);
    human_duration(h->peak_time_ns, buf, sizeof buf);
    fprintf(f, " at %s\n", buf);
    print_size_line(f, "heap at end", h->end_bytes);
    fputc('\n', f);
    print_size_line(f, "allocated", h->total_allocated_bytes);
    fprintf(f, " in %" PRIu64 " allocations\n", h->alloc_count);
    fprintf(f, "  %-18s %10" PRIu64 "\n", "frees", h->free_count);
    if (h->unmatched_free_count)
        fprintf(f, "  %-18s %10" PRIu64 "  (address not live)\n", "unmatched frees",
                h->unmatched_free_count);
    if (h->inconsistent_count)
        fprintf(f, "  %-18s %10" PRIu64 "  (allocation at a live address)\n", "inconsistent",
                h->inconsistent_count);
    print_size_line(f, "anon mmap peak", h->mmap_peak_bytes);
    fputc('\n', f);
    print_size_line(f, "file mmap peak", h->mmap_file_peak_bytes);
    fputc('\n', f);
    print_size_line(f, "RSS peak", h->rss_peak_bytes);
    fputc('\n', f);
}

/* ---- command line -------------------------------------------------------------- */

static void report_usage(FILE *f)
{
    fprintf(f,
            "Usage: memtrace report [--json] FILE...\n"
            "\n"
            "Summarize traces: heap peak (live requested bytes) and when it was reached,\n"
            "live bytes at the end, allocation and free counts, anonymous and file\n"
            "mapping peaks, RSS peak, threads, duration and how the process ended.\n"
            "\n"
            "Options:\n"
            "  --json      print JSON: one object, or {\"traces\": [...]} for several FILEs\n"
            "  -h, --help  show this help\n"
            "\n"
            "Exit status: 0 fine, 1 error (unreadable, not a trace, corrupted),\n"
            "2 usage error, 3 a trace is truncated (its report is marked partial).\n");
}

static int report_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memtrace report: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'memtrace report --help'.\n");
    return 2;
}

int mt_report_main(int argc, char **argv)
{
    bool json = false, opts = true;
    int nfiles = 0;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) {
        fprintf(stderr, "memtrace: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && !strcmp(a, "--")) {
            opts = false;
        } else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            report_usage(stdout);
            free(files);
            return 0;
        } else if (opts && !strcmp(a, "--json")) {
            json = true;
        } else if (opts && a[0] == '-' && a[1]) {
            free(files);
            return report_usage_error("unknown option '%s'", a);
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (nfiles == 0) {
        free(files);
        return report_usage_error("%s", "no trace file given");
    }

    struct mt_report *reps = calloc((size_t)nfiles, sizeof *reps);
    if (!reps) {
        free(files);
        fprintf(stderr, "memtrace: out of memory\n");
        return 1;
    }
    bool failed = false, partial = false;
    for (int i = 0; i < nfiles; i++) {
        struct mt_progress pr;
        mt_progress_init(&pr, "reading", files[i]);
        struct mt_error err;
        int rc = mt_report_compute_ex(files[i], mt_progress_update, &pr, &reps[i], &err);
        mt_progress_done(&pr);
        if (rc < 0) {
            fprintf(stderr, "memtrace: %s\n", err.msg);
            failed = true;
            continue;
        }
        partial |= reps[i].partial;
    }

    int status = failed ? 1 : partial ? 3 : 0;
    if (!failed) {
        if (json) {
            cJSON *doc = NULL, *arr = NULL;
            bool ok = true;
            if (nfiles > 1) {
                doc = cJSON_CreateObject();
                arr = doc ? cJSON_AddArrayToObject(doc, "traces") : NULL;
                ok = arr != NULL;
            }
            for (int i = 0; ok && i < nfiles; i++) {
                cJSON *o = mt_report_to_json(&reps[i]);
                ok = o != NULL;
                if (ok && arr)
                    cJSON_AddItemToArray(arr, o);
                else if (ok)
                    doc = o;
            }
            char *s = ok ? cJSON_Print(doc) : NULL;
            if (s) {
                printf("%s\n", s);
                cJSON_free(s);
            } else {
                fprintf(stderr, "memtrace: out of memory\n");
                status = 1;
            }
            cJSON_Delete(doc);
        } else {
            for (int i = 0; i < nfiles; i++) {
                if (i)
                    putchar('\n');
                print_text(stdout, &reps[i]);
            }
        }
        fflush(stdout);
        for (int i = 0; status != 1 && i < nfiles; i++)
            if (reps[i].partial)
                fprintf(stderr, "memtrace: warning: %s is truncated; the report covers what was"
                                " recorded before the cut\n", reps[i].file);
    }
    for (int i = 0; i < nfiles; i++)
        mt_report_destroy(&reps[i]);
    free(reps);
    free(files);
    return status;
}
