/* report: summary of a trace (see report.h).
 *
 * mt_report_compute runs the reader once; each record updates running
 * counters, the sites module (heap blocks by block id, the seq of their
 * allocation, with their size and site; per-site numbers, temporaries,
 * histogram, timeline, call tree), two range sets (mappings) and the
 * symbolizer's module list. Heap records are taken as the reader normalizes
 * them, so a RAW trace and its packed form (which has no heap addresses)
 * give the same numbers. Peaks are checked only after the events that can
 * raise them. After the pass the best sites of each list are chosen in one
 * scan per list (insertion into a sorted array of --top entries), their
 * stacks walked and symbolized (each distinct address once, the
 * symbolizer caches) and copied into the report; the symbolizer is freed.
 * Nothing is printed there; mt_report_main parses arguments, runs one pass
 * per file (with a progress line on a terminal when a pass takes over a
 * second) and prints text or JSON, then the combined numbers for several
 * files. All state is local to a call.
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
#include "sites.h"
#include "symbolize.h"

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

static void free_site(struct mt_report_site *site)
{
    for (unsigned i = 0; i < site->nframes; i++) {
        free(site->frames[i].function);
        free(site->frames[i].file);
        free(site->frames[i].module);
    }
    free(site->frames);
    site->frames = NULL;
    site->nframes = 0;
}

void mt_report_destroy(struct mt_report *rep)
{
    if (!rep)
        return;
    free(rep->file);
    free(rep->exe);
    free(rep->argv);
    rep->file = rep->exe = rep->argv = NULL;
    for (size_t i = 0; i < rep->nsite; i++)
        free_site(&rep->site[i]);
    free(rep->site);
    rep->site = NULL;
    rep->nsite = 0;
    for (unsigned l = 0; l < MT_REPORT_LISTS; l++) {
        free(rep->list[l]);
        rep->list[l] = NULL;
        rep->nlist[l] = 0;
    }
    free(rep->timeline);
    rep->timeline = NULL;
    rep->ntimeline = 0;
    for (size_t d = 0; rep->phases.oom_sites && d < rep->phases.ndev; d++) {
        for (size_t i = 0; rep->phases.oom_sites[d] && i < rep->phases.dev[d].noom; i++)
            free_site(&rep->phases.oom_sites[d][i]);
        free(rep->phases.oom_sites[d]);
    }
    free(rep->phases.oom_sites);
    rep->phases.oom_sites = NULL;
    mt_phases_destroy(&rep->phases);
    rep->has_phases = false;
}

/* ---- picking and resolving sites ----------------------------------------------- */

/* The ranking key of a site in list l: primary, secondary; 0 primary and
 * secondary: not in the list. */
static void site_key(const struct mt_site *x, unsigned l, uint64_t *k1, uint64_t *k2)
{
    switch (l) {
    case MT_LIST_PEAK:
        *k1 = x->peak_bytes, *k2 = x->peak_count;
        break;
    case MT_LIST_ALLOCATED:
        *k1 = x->alloc_bytes, *k2 = x->alloc_count;
        break;
    case MT_LIST_ALLOCS:
        *k1 = x->alloc_count, *k2 = x->alloc_bytes;
        break;
    case MT_LIST_LEAKS:
        *k1 = x->live_bytes, *k2 = x->live_count;
        break;
    default:
        *k1 = x->temp_count, *k2 = x->temp_bytes;
        break;
    }
}

/* a ranks before b: larger keys first, then the site allocated first. */
static bool site_before(const struct mt_sites *s, unsigned l, size_t a, size_t b)
{
    uint64_t a1, a2, b1, b2;
    site_key(&s->sites[a], l, &a1, &a2);
    site_key(&s->sites[b], l, &b1, &b2);
    if (a1 != b1)
        return a1 > b1;
    if (a2 != b2)
        return a2 > b2;
    return a < b;
}

/* The best n sites of list l, best first, into out (room for n); returns
 * how many. One pass, insertion into a sorted array. */
static size_t pick_sites(const struct mt_sites *s, unsigned l, size_t *out, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nsites && n; i++) {
        uint64_t k1, k2;
        site_key(&s->sites[i], l, &k1, &k2);
        if (!k1 && !k2)
            continue;
        if (k == n && !site_before(s, l, i, out[k - 1]))
            continue;
        size_t lo = 0, hi = k == n ? k - 1 : k;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (site_before(s, l, out[mid], i))
                lo = mid + 1;
            else
                hi = mid;
        }
        size_t move = (k == n ? k - 1 : k) - lo;
        memmove(&out[lo + 1], &out[lo], move * sizeof *out);
        out[lo] = i;
        if (k < n)
            k++;
    }
    return k;
}

/* The part of a demangled name before its parameter list. */
static size_t name_len(const char *fn)
{
    int depth = 0;
    size_t i = 0;
    if (!strncmp(fn, "operator", 8)) { /* operator new[], operator(), operator< */
        i = 8;
        if (fn[i] == '(' && fn[i + 1] == ')')
            return i + 2;
        while (fn[i] && fn[i] != '(')
            i++;
        return i;
    }
    for (; fn[i]; i++) {
        if (fn[i] == '<')
            depth++;
        else if (fn[i] == '>' && depth > 0)
            depth--;
        else if (fn[i] == '(' && depth == 0)
            break;
    }
    return i;
}

static bool name_is(const char *fn, size_t n, const char *want)
{
    return strlen(want) == n && !memcmp(fn, want, n);
}

bool mt_report_allocator_frame(const char *fn)
{
    static const char *const exact[] = {
        "malloc", "calloc", "realloc", "reallocarray", "free", "posix_memalign",
        "aligned_alloc", "memalign", "valloc", "pvalloc", "operator new", "operator new[]",
        "operator delete", "operator delete[]",
    };
    static const char *const classes[] = {
        "std::allocator<", "std::__new_allocator<", "__gnu_cxx::new_allocator<",
        "std::allocator_traits<", "__gnu_cxx::__alloc_traits<",
    };
    if (!fn)
        return false;
    if (!strncmp(fn, "__libc_", 7) || !strncmp(fn, "__GI_", 5))
        return true;
    size_t n = name_len(fn);
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
        if (name_is(fn, n, exact[i]))
            return true;
    static const char alloc[] = "::allocate";
    if (n < sizeof alloc - 1 || memcmp(fn + n - (sizeof alloc - 1), alloc, sizeof alloc - 1))
        return false;
    for (size_t i = 0; i < sizeof classes / sizeof *classes; i++)
        if (!strncmp(fn, classes[i], strlen(classes[i])))
            return true;
    return false;
}

static char *dup_or_null(const char *str, bool *ok)
{
    if (!str)
        return NULL;
    char *d = strdup(str);
    if (!d)
        *ok = false;
    return d;
}

#define MAX_INLINED 64 /* frames one address expands to, at most */

/* A frame of the GPU stack's innermost layers, left out like allocator
 * frames: memtrace's own wrappers and the CUDA runtime and driver, which a
 * GPU allocation passes through on its way from the program. */
static bool gpu_runtime_module(const char *path)
{
    const char *base = path ? strrchr(path, '/') : NULL;
    base = base ? base + 1 : path;
    return base && (!strncmp(base, "libmemtrace.so", 14) || !strncmp(base, "libcudart.so", 12) ||
                    !strncmp(base, "libcuda.so", 10));
}

/* Fills site->frames for its stack: walks the call tree and symbolizes
 * (sym may be NULL: addresses only), leaving out allocator frames at the
 * innermost end if trim. 0 or -ENOMEM. */
static int resolve_site(const struct mt_sites *s, struct mt_symbolizer *sym,
                        struct mt_report_site *site, bool trim)
{
    uint64_t ips[MT_MAX_FRAMES];
    unsigned nips = mt_sites_frames(s, site->stack_id, ips, MT_MAX_FRAMES);
    size_t cap = nips, n = 0;
    struct mt_report_frame *fr = cap ? calloc(cap, sizeof *fr) : NULL;
    if (cap && !fr)
        return -ENOMEM;
    struct mt_frame_info info[MAX_INLINED];
    bool ok = true, trimming = trim;
    unsigned skipped = 0;
    for (unsigned i = 0; i < nips && ok; i++) {
        unsigned k = 1;
        if (sym) {
            k = mt_symbolize(sym, ips[i], false, info, MAX_INLINED);
        } else {
            info[0] = (struct mt_frame_info){ .offset = ips[i], .status = MT_FRAME_NO_MODULE };
        }
        for (unsigned j = 0; j < k && ok; j++) {
            if (trimming && (mt_report_allocator_frame(info[j].function) || gpu_runtime_module(info[j].module))) {
                skipped++;
                continue;
            }
            trimming = false;
            if (n == cap) {
                size_t ncap = cap * 2 + 4;
                struct mt_report_frame *nf = realloc(fr, ncap * sizeof *nf);
                if (!nf) {
                    ok = false;
                    break;
                }
                fr = nf;
                cap = ncap;
            }
            struct mt_report_frame *f = &fr[n++];
            *f = (struct mt_report_frame){
                .line = info[j].line, .ip = ips[i], .offset = info[j].offset,
                .inlined = info[j].inlined, .status = info[j].status,
            };
            f->function = dup_or_null(info[j].function, &ok);
            f->file = dup_or_null(info[j].file, &ok);
            f->module = dup_or_null(info[j].module, &ok);
        }
    }
    site->frames = fr;
    site->nframes = (unsigned)n;
    site->skipped = skipped;
    if (!ok)
        return -ENOMEM;
    if (n == 0 && skipped) {
        /* Nothing but allocator frames: show them after all. */
        free_site(site);
        return resolve_site(s, sym, site, false);
    }
    return 0;
}

/* Whether a GPU allocation's stack passes through a framework's caching
 * allocator (PyTorch's lives in libc10_cuda): that memory is what the
 * framework calls reserved; the rest of the device memory (libraries'
 * workspaces, NCCL) it does not account for. Needs the module map (not
 * with --no-symbols: then no allocation is the framework's). */
struct framework_ctx {
    const struct mt_sites *sites;
    const struct mt_symbolizer *sym;
};

static int framework_stack(uint64_t stack_id, void *arg)
{
    const struct framework_ctx *c = arg;
    if (!c->sym || !stack_id)
        return 0;
    uint64_t ips[MT_MAX_FRAMES];
    unsigned n = mt_sites_frames(c->sites, stack_id, ips, MT_MAX_FRAMES);
    for (unsigned i = 0; i < n; i++) {
        const char *path = mt_symbolizer_module_path(c->sym, ips[i]);
        const char *base = path ? strrchr(path, '/') : NULL;
        base = base ? base + 1 : path;
        if (base && !strncmp(base, "libc10_cuda", 11))
            return 1;
    }
    return 0;
}

/* The stacks of the GPU OOM events, resolved like sites' (kept whole). */
static int resolve_ooms(struct mt_phases *p, const struct mt_sites *s, struct mt_symbolizer *sym)
{
    if (!p->ndev)
        return 0;
    if (!(p->oom_sites = calloc(p->ndev, sizeof *p->oom_sites)))
        return -ENOMEM;
    for (size_t d = 0; d < p->ndev; d++) {
        const struct mt_device_stat *dev = &p->dev[d];
        if (!dev->noom)
            continue;
        if (!(p->oom_sites[d] = calloc(dev->noom, sizeof **p->oom_sites)))
            return -ENOMEM;
        for (size_t i = 0; i < dev->noom; i++) {
            p->oom_sites[d][i].stack_id = dev->oom[i].stack_id;
            int rc = resolve_site(s, sym, &p->oom_sites[d][i], true);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* Picks the sites of every list (top each), resolves their stacks and
 * stores them in rep. 0 or -ENOMEM. */
static int build_lists(struct mt_report *rep, const struct mt_sites *s, struct mt_symbolizer *sym,
                       unsigned top)
{
    size_t n = top < s->nsites ? top : s->nsites;
    struct mt_live_table seen; /* site index -> index in rep->site */
    mt_live_table_init(&seen);
    int rc = 0;
    for (unsigned l = 0; l < MT_REPORT_LISTS && n; l++) {
        rep->list[l] = malloc(n * sizeof *rep->list[l]);
        if (!rep->list[l]) {
            rc = -ENOMEM;
            break;
        }
        rep->nlist[l] = pick_sites(s, l, rep->list[l], n);
        for (size_t i = 0; i < rep->nlist[l] && rc == 0; i++) {
            size_t si = rep->list[l][i];
            struct mt_live_entry *e = mt_live_table_find(&seen, si);
            if (e) {
                rep->list[l][i] = e->value;
                continue;
            }
            if (rep->nsite % 16 == 0) {
                struct mt_report_site *ns = realloc(rep->site, (rep->nsite + 16) * sizeof *ns);
                if (!ns) {
                    rc = -ENOMEM;
                    break;
                }
                rep->site = ns;
            }
            const struct mt_site *x = &s->sites[si];
            struct mt_report_site *site = &rep->site[rep->nsite];
            *site = (struct mt_report_site){
                .stack_id = x->stack_id, .alloc_count = x->alloc_count,
                .alloc_bytes = x->alloc_bytes, .peak_count = x->peak_count,
                .peak_bytes = x->peak_bytes, .leak_count = x->live_count,
                .leak_bytes = x->live_bytes, .temp_count = x->temp_count,
                .temp_bytes = x->temp_bytes,
            };
            struct mt_live_entry ne = { si, rep->nsite };
            rc = mt_live_table_insert(&seen, &ne, NULL);
            if (rc < 0)
                break;
            rep->list[l][i] = rep->nsite++;
            rc = resolve_site(s, sym, site, true);
        }
        if (rc < 0)
            break;
    }
    mt_live_table_destroy(&seen);
    return rc;
}

int mt_report_compute_opts(const char *path, const struct mt_report_opts *opts,
                           struct mt_report *out, struct mt_error *err)
{
    static const struct mt_report_opts defaults = { .top = MT_REPORT_DEFAULT_TOP };
    if (!opts)
        opts = &defaults;
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
    struct mt_sites sites;
    mt_sites_init(&sites);
    struct mt_live_table remap_from; /* tid -> old range of an mremap */
    mt_live_table_init(&remap_from);
    struct mt_range_set *anon = NULL, *file = NULL;
    struct mt_symbolizer *sym = NULL;
    if (!opts->no_symbols && (rc = mt_symbolizer_new(&sym, err)) < 0)
        goto out;
    if (mt_range_set_new(&anon) < 0 || mt_range_set_new(&file) < 0) {
        rc = -ENOMEM;
        goto nomem;
    }
    const uint32_t page = info->page_size;
    struct mt_record rec;

    while ((rc = mt_reader_next(r, &rec)) > 0) {
        rep.records++;
        if (rec.time_ns > rep.duration_ns)
            rep.duration_ns = rec.time_ns;
        switch (rec.type) {
        case MT_REC_ALLOC:
            rep.events++;
            rc = mt_sites_alloc(&sites, rec.block, rec.size, rec.stack_id, rec.tid, rec.time_ns);
            if (rc < 0)
                goto nomem;
            break;
        case MT_REC_FREE:
            rc = mt_sites_free(&sites, rec.block, rec.tid, rec.time_ns,
                               rec.kind == MT_FREE_IMPLICIT, NULL);
            if (rc < 0)
                goto nomem;
            /* An IMPLICIT free is not an event of the program: the
             * allocation that follows reused the block's address. */
            if (rec.kind == MT_FREE_IMPLICIT)
                rep.records--;
            else
                rep.events++;
            break;
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
            if ((rc = mt_sites_node(&sites, rec.stack_id, rec.parent_id, rec.ip)) < 0)
                goto nomem;
            break;
        case MT_REC_MODULE:
            if (rec.kind != MT_MODULE_LOAD)
                break;
            rep.modules++;
            if (sym && (rc = mt_symbolizer_add_module(sym, rec.path, rec.path_len, rec.bias,
                                                      rec.segs, rec.nsegs, rec.build_id,
                                                      rec.build_id_len)) < 0)
                goto nomem;
            break;
        case MT_REC_RSS:
            if (rec.rss_bytes > h->rss_peak_bytes)
                h->rss_peak_bytes = rec.rss_bytes;
            if (rec.kind == MT_RSS_SAMPLE)
                mt_sites_rss(&sites, rec.time_ns, rec.rss_bytes);
            break;
        case MT_REC_END:
            rep.end_kind = rec.kind;
            rep.exit_status = rec.status;
            break;
        case MT_REC_LOST:
            rep.lost += rec.lost;
            break;
        case MT_REC_MARK:
            if (rec.kind != MT_MARK_STRING)
                rep.marks++;
            break;
        case MT_REC_GPU:
            rep.gpu_events++;
            break;
        default:
            break;
        }
        if (opts->progress && (rep.records & 0xffff) == 0) {
            uint64_t done, total;
            mt_reader_progress(r, &done, &total);
            opts->progress(done, total, opts->progress_arg);
        }
    }
    if (rc < 0) {
        mti_error_set(err, "%s", mt_reader_error(r));
        goto out;
    }

    mt_sites_finish(&sites, rep.duration_ns);
    h->peak_bytes = sites.peak_bytes;
    h->peak_time_ns = sites.peak_time_ns;
    h->end_bytes = sites.live_bytes;
    h->alloc_count = sites.alloc_count;
    h->free_count = sites.free_count;
    h->total_allocated_bytes = sites.alloc_bytes;
    h->unmatched_free_count = sites.unmatched_frees;
    h->inconsistent_count = sites.implicit_frees;
    h->mmap_end_bytes = mt_range_set_total(anon);
    h->mmap_file_end_bytes = mt_range_set_total(file);
    rep.sites = sites.nsites;
    rep.leak_count = sites.live_count;
    rep.temp_count = sites.temp_count;
    rep.temp_bytes = sites.temp_bytes;
    memcpy(rep.sizes, sites.sizes, sizeof rep.sizes);
    rep.partial = mt_reader_partial(r);
    rep.ended = mt_reader_ended(r);
    rep.complete = rep.ended && !rep.partial;

    rep.timeline = calloc(sites.tl_used, sizeof *rep.timeline);
    if (!rep.timeline)
        goto nomem_rc;
    rep.ntimeline = sites.tl_used;
    for (unsigned i = 0; i < sites.tl_used; i++) {
        const struct mt_timeline_bucket *b = &sites.timeline[i];
        unsigned sh = sites.tl_shift;
        uint64_t start = (uint64_t)i << sh, end = (uint64_t)(i + 1) << sh;
        if (sh >= 64 - 6 && (end >> sh) != i + 1u)
            end = UINT64_MAX; /* the last bucket of a run of 2^64 ns */
        rep.timeline[i] = (struct mt_report_timeline){
            .start_ns = start, .end_ns = end, .heap_bytes = b->heap_bytes,
            .rss_bytes = b->rss_bytes, .has_rss = b->has_rss,
        };
    }
    if ((rc = build_lists(&rep, &sites, sym, opts->top)) < 0)
        goto nomem;
    if (rep.marks || rep.gpu_events) {
        struct framework_ctx fc = { &sites, sym };
        if ((rc = mt_phases_compute_ex(path, framework_stack, &fc, &rep.phases, err)) < 0)
            goto out;
        rep.has_phases = true;
        if ((rc = resolve_ooms(&rep.phases, &sites, sym)) < 0)
            goto nomem;
    }
    if (sym) {
        rep.symbolized = true;
        mt_symbolizer_stats(sym, &rep.sym_frames, rep.sym_unresolved);
    }

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
    mt_sites_destroy(&sites);
    mt_live_table_destroy(&remap_from);
    mt_range_set_free(anon);
    mt_range_set_free(file);
    mt_symbolizer_free(sym);
    mt_reader_close(r);
    if (rc < 0) {
        mt_report_destroy(&rep);
        return rc;
    }
    *out = rep;
    return 0;
}

int mt_report_compute_ex(const char *path, mt_report_progress_fn progress, void *arg,
                         struct mt_report *out, struct mt_error *err)
{
    struct mt_report_opts o = { .top = MT_REPORT_DEFAULT_TOP, .progress = progress,
                                .progress_arg = arg };
    return mt_report_compute_opts(path, &o, out, err);
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

cJSON *mt_json_add_u64(cJSON *o, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    cJSON *n = cJSON_CreateRaw(buf);
    if (n)
        cJSON_AddItemToObject(o, key, n);
    return n;
}

cJSON *mt_json_add_str_or_null(cJSON *o, const char *key, const char *v)
{
    return v ? cJSON_AddStringToObject(o, key, v) : cJSON_AddNullToObject(o, key);
}

#define add_u64 mt_json_add_u64
#define add_str_or_null mt_json_add_str_or_null

bool mt_report_add_host_json(cJSON *o, const struct mt_report_host *h, bool with_time)
{
    bool ok = true;
#define X(f)                                                                                       \
    ok = ok && (with_time || strcmp(#f, "peak_time_ns") ? add_u64(o, #f, h->f) != NULL             \
                                                        : cJSON_AddNullToObject(o, #f) != NULL);
    MT_REPORT_HOST_FIELDS(X)
#undef X
    return ok;
}

bool mt_report_add_frames_json(cJSON *o, const struct mt_report_site *site)
{
    cJSON *fa = cJSON_AddArrayToObject(o, "frames");
    bool ok = fa != NULL;
    for (unsigned j = 0; ok && j < site->nframes; j++) {
        const struct mt_report_frame *f = &site->frames[j];
        cJSON *fo = cJSON_CreateObject();
        ok = fo != NULL;
        if (!ok)
            break;
        cJSON_AddItemToArray(fa, fo);
        ok = add_str_or_null(fo, "function", f->function) && add_str_or_null(fo, "file", f->file) &&
             (f->line ? add_u64(fo, "line", f->line) : cJSON_AddNullToObject(fo, "line")) &&
             add_str_or_null(fo, "module", f->module) && cJSON_AddBoolToObject(fo, "inlined", f->inlined) &&
             add_u64(fo, "offset", f->offset);
    }
    return ok;
}

/* One list of sites: [{"bytes", "count", "frames": [...]}, ...]. */
static bool add_site_list(cJSON *o, const char *key, const struct mt_report *rep, unsigned l)
{
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    bool ok = arr != NULL;
    for (size_t i = 0; ok && i < rep->nlist[l]; i++) {
        const struct mt_report_site *site = &rep->site[rep->list[l][i]];
        uint64_t bytes, count;
        switch (l) {
        case MT_LIST_PEAK:
            bytes = site->peak_bytes, count = site->peak_count;
            break;
        case MT_LIST_LEAKS:
            bytes = site->leak_bytes, count = site->leak_count;
            break;
        case MT_LIST_TEMPORARIES:
            bytes = site->temp_bytes, count = site->temp_count;
            break;
        default:
            bytes = site->alloc_bytes, count = site->alloc_count;
            break;
        }
        cJSON *so = cJSON_CreateObject();
        ok = so != NULL;
        if (!ok)
            break;
        cJSON_AddItemToArray(arr, so);
        ok = add_u64(so, "bytes", bytes) && add_u64(so, "count", count) && mt_report_add_frames_json(so, site);
    }
    return ok;
}

/* The keys of the per-site pass (docs/REPORT.md). */
static bool add_sites_json(cJSON *o, const struct mt_report *rep)
{
    bool ok = add_u64(o, "allocation_sites", rep->sites) && add_u64(o, "leak_count", rep->leak_count) &&
              add_site_list(o, "top_sites", rep, MT_LIST_PEAK) &&
              add_site_list(o, "top_sites_allocated", rep, MT_LIST_ALLOCATED) &&
              add_site_list(o, "top_sites_count", rep, MT_LIST_ALLOCS) &&
              add_site_list(o, "leaks", rep, MT_LIST_LEAKS);
    cJSON *t = ok ? cJSON_AddObjectToObject(o, "temporaries") : NULL;
    ok = t && add_u64(t, "count", rep->temp_count) && add_u64(t, "bytes", rep->temp_bytes) &&
         add_site_list(t, "top_sites", rep, MT_LIST_TEMPORARIES);
    cJSON *hist = ok ? cJSON_AddArrayToObject(o, "histogram") : NULL;
    ok = hist != NULL;
    unsigned lo = MT_SIZE_BUCKETS, hi = 0;
    for (unsigned k = 0; k < MT_SIZE_BUCKETS; k++) {
        if (rep->sizes[k].count) {
            lo = lo < k ? lo : k;
            hi = k;
        }
    }
    for (unsigned k = lo; ok && k <= hi && k < MT_SIZE_BUCKETS; k++) {
        cJSON *b = cJSON_CreateObject();
        ok = b != NULL;
        if (ok) {
            cJSON_AddItemToArray(hist, b);
            ok = add_u64(b, "min", mt_size_bucket_min(k)) && add_u64(b, "max", mt_size_bucket_max(k)) &&
                 add_u64(b, "count", rep->sizes[k].count) && add_u64(b, "bytes", rep->sizes[k].bytes);
        }
    }
    cJSON *tl = ok ? cJSON_AddArrayToObject(o, "timeline") : NULL;
    ok = tl != NULL;
    for (unsigned i = 0; ok && i < rep->ntimeline; i++) {
        const struct mt_report_timeline *b = &rep->timeline[i];
        cJSON *bo = cJSON_CreateObject();
        ok = bo != NULL;
        if (ok) {
            cJSON_AddItemToArray(tl, bo);
            ok = add_u64(bo, "start_ns", b->start_ns) && add_u64(bo, "end_ns", b->end_ns) &&
                 add_u64(bo, "heap_bytes", b->heap_bytes) &&
                 (b->has_rss ? add_u64(bo, "rss_bytes", b->rss_bytes)
                             : cJSON_AddNullToObject(bo, "rss_bytes"));
        }
    }
    if (ok && !rep->symbolized)
        return cJSON_AddNullToObject(o, "symbolization") != NULL;
    cJSON *sy = ok ? cJSON_AddObjectToObject(o, "symbolization") : NULL;
    uint64_t unresolved = 0;
    for (unsigned i = 0; i < 5; i++)
        unresolved += rep->sym_unresolved[i];
    return sy && add_u64(sy, "frames", rep->sym_frames) && add_u64(sy, "unresolved", unresolved) &&
           add_u64(sy, "no_module", rep->sym_unresolved[MT_FRAME_NO_MODULE]) &&
           add_u64(sy, "no_file", rep->sym_unresolved[MT_FRAME_NO_FILE]) &&
           add_u64(sy, "build_id_mismatch", rep->sym_unresolved[MT_FRAME_MISMATCH]) &&
           add_u64(sy, "no_symbol", rep->sym_unresolved[MT_FRAME_NO_SYMBOL]);
}

/* Sums over reports: the host numbers, events, temporaries and leaks. */
static void combine(const struct mt_report *reps, size_t n, struct mt_report *sum)
{
    memset(sum, 0, sizeof *sum);
    sum->complete = true;
    for (size_t i = 0; i < n; i++) {
        const struct mt_report *r = &reps[i];
        struct mt_report_host *h = &sum->host;
        h->peak_bytes += r->host.peak_bytes;
        h->end_bytes += r->host.end_bytes;
        h->alloc_count += r->host.alloc_count;
        h->free_count += r->host.free_count;
        h->total_allocated_bytes += r->host.total_allocated_bytes;
        h->unmatched_free_count += r->host.unmatched_free_count;
        h->inconsistent_count += r->host.inconsistent_count;
        h->rss_peak_bytes += r->host.rss_peak_bytes;
        h->mmap_peak_bytes += r->host.mmap_peak_bytes;
        h->mmap_end_bytes += r->host.mmap_end_bytes;
        h->mmap_file_peak_bytes += r->host.mmap_file_peak_bytes;
        h->mmap_file_end_bytes += r->host.mmap_file_end_bytes;
        sum->events += r->events;
        sum->records += r->records;
        sum->threads += r->threads;
        sum->lost += r->lost;
        sum->leak_count += r->leak_count;
        sum->temp_count += r->temp_count;
        sum->temp_bytes += r->temp_bytes;
        sum->complete = sum->complete && r->complete;
        sum->partial = sum->partial || r->partial;
    }
}

cJSON *mt_report_combined_json(const struct mt_report *reps, size_t n)
{
    struct mt_report c;
    combine(reps, n, &c);
    const struct mt_report_host *h = &c.host;
    cJSON *o = cJSON_CreateObject();
    cJSON *ho = NULL, *t = NULL;
    bool ok = o && add_u64(o, "traces", n) && cJSON_AddBoolToObject(o, "complete", c.complete) &&
              cJSON_AddBoolToObject(o, "partial", c.partial) &&
              cJSON_AddBoolToObject(o, "peaks_are_upper_bounds", true) &&
              add_u64(o, "threads", c.threads) && add_u64(o, "records", c.records) &&
              add_u64(o, "events", c.events) && add_u64(o, "lost_events", c.lost) &&
              (ho = cJSON_AddObjectToObject(o, "host")) != NULL && mt_report_add_host_json(ho, h, false) &&
              (t = cJSON_AddObjectToObject(o, "temporaries")) != NULL &&
              add_u64(t, "count", c.temp_count) && add_u64(t, "bytes", c.temp_bytes) &&
              add_u64(o, "leak_count", c.leak_count);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
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
    ok = ho && mt_report_add_host_json(ho, h, true);
    ok = ok && add_sites_json(o, rep);
    ok = ok && mt_phases_add_json(o, rep->has_phases ? &rep->phases : NULL, SIZE_MAX);
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

static void print_summary(FILE *f, const struct mt_report *rep)
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


static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* "5.86 KiB (6000 bytes)" */
static void size_pair(uint64_t v, char *buf, size_t n)
{
    char hs[32];
    mt_human_size(v, hs, sizeof hs);
    if (v < 1024)
        snprintf(buf, n, "%s", hs);
    else
        snprintf(buf, n, "%s (%" PRIu64 " bytes)", hs, v);
}

static const char *plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* function (file:line) [module], ?? [module+0xoffset] when unresolved. */
void mt_report_print_frame(FILE *f, const struct mt_report_frame *fr)
{
    fprintf(f, "      %s", fr->function ? fr->function : "??");
    if (fr->file && fr->line)
        fprintf(f, " (%s:%u)", base_name(fr->file), fr->line);
    else if (fr->file)
        fprintf(f, " (%s)", base_name(fr->file));
    if (!fr->module)
        fprintf(f, " [0x%" PRIx64 "]", fr->ip);
    else if (fr->function)
        fprintf(f, " [%s]", base_name(fr->module));
    else
        fprintf(f, " [%s+0x%" PRIx64 "]", base_name(fr->module), fr->offset);
    if (fr->inlined)
        fputs(" [inlined]", f);
    fputc('\n', f);
}

void mt_report_print_site_frames(FILE *f, const struct mt_report_site *site, unsigned frames)
{
    if (site->stack_id == 0) {
        fputs("      (no stack recorded)\n", f);
        return;
    }
    if (site->nframes == 0) {
        fputs("      (stack not in the trace)\n", f);
        return;
    }
    unsigned n = site->nframes < frames ? site->nframes : frames;
    for (unsigned i = 0; i < n; i++)
        mt_report_print_frame(f, &site->frames[i]);
    if (n < site->nframes)
        fprintf(f, "      ... %u more frame%s\n", site->nframes - n, site->nframes - n == 1 ? "" : "s");
}

static void print_list(FILE *f, const struct mt_report *rep, unsigned l, unsigned frames)
{
    if (rep->nlist[l] == 0) {
        fputs("  none\n", f);
        return;
    }
    for (size_t i = 0; i < rep->nlist[l]; i++) {
        const struct mt_report_site *site = &rep->site[rep->list[l][i]];
        char a[64];
        fprintf(f, "  #%zu  ", i + 1);
        switch (l) {
        case MT_LIST_PEAK:
            size_pair(site->peak_bytes, a, sizeof a);
            fprintf(f, "%s in %" PRIu64 " %s\n", a, site->peak_count,
                    plural(site->peak_count, "block", "blocks"));
            break;
        case MT_LIST_ALLOCATED:
            size_pair(site->alloc_bytes, a, sizeof a);
            fprintf(f, "%s in %" PRIu64 " %s\n", a, site->alloc_count,
                    plural(site->alloc_count, "allocation", "allocations"));
            break;
        case MT_LIST_ALLOCS:
            size_pair(site->alloc_bytes, a, sizeof a);
            fprintf(f, "%" PRIu64 " %s, %s\n", site->alloc_count,
                    plural(site->alloc_count, "allocation", "allocations"), a);
            break;
        case MT_LIST_LEAKS:
            size_pair(site->leak_bytes, a, sizeof a);
            fprintf(f, "%s in %" PRIu64 " %s\n", a, site->leak_count,
                    plural(site->leak_count, "block", "blocks"));
            break;
        default:
            size_pair(site->temp_bytes, a, sizeof a);
            fprintf(f, "%" PRIu64 " %s of %" PRIu64 " %s, %s\n", site->temp_count,
                    plural(site->temp_count, "temporary", "temporaries"), site->alloc_count,
                    plural(site->alloc_count, "allocation", "allocations"), a);
            break;
        }
        mt_report_print_site_frames(f, site, frames);
    }
}

/* 2^e bytes in the largest unit that keeps it whole. */
static void pow2_name(unsigned e, char *buf, size_t n)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    unsigned u = e / 10 < 6 ? e / 10 : 6;
    snprintf(buf, n, "%llu %s", 1ull << (e - 10 * u), units[u]);
}

static void print_bar(FILE *f, uint64_t v, uint64_t max, unsigned width)
{
    unsigned n = max ? (unsigned)((double)v / (double)max * width + 0.5) : 0;
    if (v && !n)
        n = 1;
    if (n)
        fputs("  ", f);
    for (unsigned i = 0; i < n; i++)
        fputc('#', f);
}

static void print_histogram(FILE *f, const struct mt_report *rep)
{
    fputs("\nAllocation sizes\n", f);
    unsigned lo = MT_SIZE_BUCKETS, hi = 0;
    uint64_t max = 0;
    for (unsigned k = 0; k < MT_SIZE_BUCKETS; k++) {
        if (rep->sizes[k].count) {
            lo = lo < k ? lo : k;
            hi = k;
            max = rep->sizes[k].count > max ? rep->sizes[k].count : max;
        }
    }
    if (lo == MT_SIZE_BUCKETS) {
        fputs("  none\n", f);
        return;
    }
    for (unsigned k = lo; k <= hi; k++) {
        char range[64], a[24], b[24], hs[32];
        if (k == 0) {
            snprintf(range, sizeof range, "0 B");
        } else {
            pow2_name(k - 1, a, sizeof a);
            pow2_name(k, b, sizeof b);
            snprintf(range, sizeof range, "[%s, %s)", a, b);
        }
        mt_human_size(rep->sizes[k].bytes, hs, sizeof hs);
        fprintf(f, "  %-20s %12" PRIu64 " %10s", range, rep->sizes[k].count, hs);
        print_bar(f, rep->sizes[k].count, max, 30);
        fputc('\n', f);
    }
}

#define TIMELINE_ROWS 16u

static void print_timeline(FILE *f, const struct mt_report *rep)
{
    unsigned n = rep->ntimeline;
    if (n == 0)
        return;
    unsigned g = (n + TIMELINE_ROWS - 1) / TIMELINE_ROWS;
    uint64_t max = 0;
    for (unsigned i = 0; i < n; i++)
        max = rep->timeline[i].heap_bytes > max ? rep->timeline[i].heap_bytes : max;
    char step[32];
    human_duration(rep->timeline[0].end_ns * g, step, sizeof step);
    fprintf(f, "\nHeap and RSS over time (most in each step of %s)\n", step);
    fprintf(f, "  %12s %12s %12s\n", "from", "heap", "RSS");
    for (unsigned i = 0; i < n; i += g) {
        uint64_t heap = 0, rss = 0;
        bool has_rss = false;
        for (unsigned j = i; j < i + g && j < n; j++) {
            const struct mt_report_timeline *b = &rep->timeline[j];
            heap = b->heap_bytes > heap ? b->heap_bytes : heap;
            if (b->has_rss && (!has_rss || b->rss_bytes > rss))
                rss = b->rss_bytes;
            has_rss |= b->has_rss;
        }
        char t[32], hs[32], rs[32];
        human_duration(rep->timeline[i].start_ns, t, sizeof t);
        mt_human_size(heap, hs, sizeof hs);
        if (has_rss)
            mt_human_size(rss, rs, sizeof rs);
        else
            snprintf(rs, sizeof rs, "-");
        fprintf(f, "  %12s %12s %12s", t, hs, rs);
        print_bar(f, heap, max, 30);
        fputc('\n', f);
    }
}

static void print_symbols(FILE *f, const struct mt_report *rep)
{
    if (!rep->symbolized)
        return;
    static const char *const why[5] = {
        NULL, "in no recorded module", "file not found", "build-id mismatch (the file changed since the run)",
        "without a symbol",
    };
    uint64_t bad = 0;
    for (unsigned i = 1; i < 5; i++)
        bad += rep->sym_unresolved[i];
    if (bad == 0) {
        fprintf(f, "\nSymbols: %" PRIu64 " %s, all resolved\n", rep->sym_frames,
                plural(rep->sym_frames, "address", "addresses"));
        return;
    }
    fprintf(f, "\nSymbols: %" PRIu64 " of %" PRIu64 " %s not resolved:", bad, rep->sym_frames,
            plural(rep->sym_frames, "address", "addresses"));
    const char *sep = " ";
    for (unsigned i = 1; i < 5; i++) {
        if (rep->sym_unresolved[i]) {
            fprintf(f, "%s%" PRIu64 " %s", sep, rep->sym_unresolved[i], why[i]);
            sep = ", ";
        }
    }
    fputc('\n', f);
}

static void print_text(FILE *f, const struct mt_report *rep, unsigned top, unsigned frames)
{
    char a[64];
    print_summary(f, rep);
    fprintf(f, "  %-18s %10" PRIu64 "\n", "allocation sites", rep->sites);
    if (top) {
        fputs("\nTop sites by bytes live at the peak\n", f);
        print_list(f, rep, MT_LIST_PEAK, frames);
        fputs("\nTop sites by total bytes allocated\n", f);
        print_list(f, rep, MT_LIST_ALLOCATED, frames);
        fputs("\nTop sites by number of allocations\n", f);
        print_list(f, rep, MT_LIST_ALLOCS, frames);
    }
    size_pair(rep->host.end_bytes, a, sizeof a);
    fprintf(f, "\nLeaks (live at %s): %s in %" PRIu64 " %s\n",
            rep->ended ? "exit" : "the end of the trace", a, rep->leak_count,
            plural(rep->leak_count, "block", "blocks"));
    if (top && rep->leak_count)
        print_list(f, rep, MT_LIST_LEAKS, frames);
    size_pair(rep->temp_bytes, a, sizeof a);
    fprintf(f, "\nTemporaries: %" PRIu64 " of %" PRIu64 " allocations", rep->temp_count,
            rep->host.alloc_count);
    if (rep->host.alloc_count)
        fprintf(f, " (%.1f%%)", 100.0 * (double)rep->temp_count / (double)rep->host.alloc_count);
    fprintf(f, ", %s\n", a);
    if (top && rep->temp_count)
        print_list(f, rep, MT_LIST_TEMPORARIES, frames);
    if (rep->has_phases)
        mt_phases_print(f, &rep->phases, top ? top : MT_REPORT_DEFAULT_TOP);
    print_histogram(f, rep);
    print_timeline(f, rep);
    print_symbols(f, rep);
}

static void print_combined(FILE *f, const struct mt_report *reps, size_t n)
{
    struct mt_report c;
    combine(reps, n, &c);
    const struct mt_report_host *h = &c.host;
    fprintf(f, "Combined: %zu processes\n", n);
    fputs("  (peaks are sums of each process's peak: an upper bound of the combined\n"
          "  peak, as the processes are not time-aligned)\n", f);
    fprintf(f, "  %-18s %" PRIu64 "\n", "events", c.events);
    print_size_line(f, "heap peak <=", h->peak_bytes);
    fputc('\n', f);
    print_size_line(f, "heap at end", h->end_bytes);
    fprintf(f, " in %" PRIu64 " %s\n", c.leak_count, plural(c.leak_count, "block", "blocks"));
    print_size_line(f, "allocated", h->total_allocated_bytes);
    fprintf(f, " in %" PRIu64 " allocations\n", h->alloc_count);
    fprintf(f, "  %-18s %10" PRIu64 "\n", "frees", h->free_count);
    fprintf(f, "  %-18s %10" PRIu64 "\n", "temporaries", c.temp_count);
    print_size_line(f, "anon mmap peak <=", h->mmap_peak_bytes);
    fputc('\n', f);
    print_size_line(f, "file mmap peak <=", h->mmap_file_peak_bytes);
    fputc('\n', f);
    print_size_line(f, "RSS peak <=", h->rss_peak_bytes);
    fputc('\n', f);
}

/* ---- command line -------------------------------------------------------------- */

static void report_usage(FILE *f)
{
    fprintf(f,
            "Usage: memtrace report [--json] [--top N] [--frames N] [--no-symbols] FILE...\n"
            "\n"
            "Summarize traces: heap peak (live requested bytes) and when it was reached,\n"
            "live bytes at the end, allocation and free counts, anonymous and file\n"
            "mapping peaks, RSS peak, threads, duration and how the process ended;\n"
            "then, per allocation site (call stack), the top sites by bytes live at the\n"
            "heap peak, by total bytes allocated and by number of allocations, the leaks\n"
            "(live at exit) by site, the temporaries, a histogram of allocation sizes\n"
            "and the heap beside RSS over time. Several FILEs (one per process) are\n"
            "reported one by one, then combined (sums; summed peaks are upper bounds).\n"
            "\n"
            "A temporary is an allocation freed by the same thread with no other\n"
            "allocation or free by that thread in between.\n"
            "\n"
            "Stacks are printed innermost first, as function (file:line) [module],\n"
            "with the allocator's own frames (malloc, operator new, ...) left out.\n"
            "\n"
            "Options:\n"
            "  --json        print JSON: one object, or {\"traces\": [...], \"combined\": {...}}\n"
            "                for several FILEs (docs/REPORT.md lists the keys)\n"
            "  --top N       sites shown per list (default %u; 0: none)\n"
            "  --frames N    frames shown per site in text (default %u)\n"
            "  --no-symbols  do not read symbols: frames are shown as recorded\n"
            "                addresses (fast; no debug info opened)\n"
            "  -h, --help    show this help\n"
            "\n"
            "Exit status: 0 fine, 1 error (unreadable, not a trace, corrupted),\n"
            "2 usage error, 3 a trace is truncated (its report is marked partial).\n",
            MT_REPORT_DEFAULT_TOP, MT_REPORT_DEFAULT_FRAMES);
}

int mt_usage_error(const char *command, const char *fmt, const char *arg)
{
    fprintf(stderr, "memtrace %s: ", command);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'memtrace %s --help'.\n", command);
    return 2;
}

static int report_usage_error(const char *fmt, const char *arg)
{
    return mt_usage_error("report", fmt, arg);
}

/* A count option's value: digits only, at most 1000000. */
bool mt_parse_count(const char *s, unsigned *out)
{
    if (!s || !*s)
        return false;
    unsigned long v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9')
            return false;
        v = v * 10 + (unsigned long)(*c - '0');
        if (v > 1000000)
            return false;
    }
    *out = (unsigned)v;
    return true;
}

/* --name N or --name=N at argv[*i]: 1 and *out (advancing *i past a
 * separate value), 0 if argv[*i] is not this option, -1 if its value is bad. */
static int count_option(int argc, char **argv, int *i, const char *name, unsigned *out)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n))
        return 0;
    if (a[n] == '=')
        return mt_parse_count(a + n + 1, out) ? 1 : -1;
    if (a[n])
        return 0;
    if (*i + 1 >= argc || !mt_parse_count(argv[*i + 1], out))
        return -1;
    ++*i;
    return 1;
}

int mt_report_main(int argc, char **argv)
{
    bool json = false, opts = true, no_symbols = false;
    unsigned top = MT_REPORT_DEFAULT_TOP, frames = MT_REPORT_DEFAULT_FRAMES;
    int nfiles = 0;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) {
        fprintf(stderr, "memtrace: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k;
        if (opts && !strcmp(a, "--")) {
            opts = false;
        } else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            report_usage(stdout);
            free(files);
            return 0;
        } else if (opts && !strcmp(a, "--json")) {
            json = true;
        } else if (opts && !strcmp(a, "--no-symbols")) {
            no_symbols = true;
        } else if (opts && ((k = count_option(argc, argv, &i, "--top", &top)) != 0 ||
                            (k = count_option(argc, argv, &i, "--frames", &frames)) != 0)) {
            if (k < 0) {
                free(files);
                return report_usage_error("%s needs a count (0 to 1000000)", a);
            }
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
        struct mt_report_opts o = { .top = top, .no_symbols = no_symbols,
                                    .progress = mt_progress_update, .progress_arg = &pr };
        int rc = mt_report_compute_opts(files[i], &o, &reps[i], &err);
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
            if (ok && nfiles > 1) {
                cJSON *c = mt_report_combined_json(reps, (size_t)nfiles);
                ok = c != NULL;
                if (ok)
                    cJSON_AddItemToObject(doc, "combined", c);
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
                print_text(stdout, &reps[i], top, frames);
            }
            if (nfiles > 1) {
                putchar('\n');
                print_combined(stdout, reps, (size_t)nfiles);
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
