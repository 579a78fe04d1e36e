/* heap-view: the passes behind the pictures (see heap-view.h for what they
 * compute). Pass A is this file's loop over the reader; pass B is
 * mt_phases_compute_obs with the observer callbacks below. Frames are
 * symbolized on demand per stack, names interned so that trees built from
 * them compare names by pointer.
 */
#include "heap-view.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices.h"
#include "reader.h"
#include "report.h"

/* ---- tables (hash-table.h) ------------------------------------------------- */

struct vs_table {
    struct mt_view_site *slots;
    size_t mask, count;
    unsigned shift;
    bool has_zero;
    struct mt_view_site zero;
};
#define HT_PREFIX vs
#define HT_TABLE struct vs_table
#define HT_ENTRY struct mt_view_site
#define HT_MIN_BITS 8
#include "hash-table.h"

struct vg_entry {
    uint64_t key;  /* mt_gpu_key */
    uint64_t size;
    uint32_t gpu;  /* index into view->gpu */
    uint32_t flags; /* 1 reserved, 2 tensor, 4 async */
};
struct vg_table {
    struct vg_entry *slots;
    size_t mask, count;
    unsigned shift;
    bool has_zero;
    struct vg_entry zero;
};
#define HT_PREFIX vg
#define HT_TABLE struct vg_table
#define HT_ENTRY struct vg_entry
#define HT_MIN_BITS 6
#include "hash-table.h"

/* String pool: open addressing over pointers, by FNV-1a. */
struct pool {
    char **slot;
    size_t mask, count;
};

struct view_internal {
    struct pool pool;
    struct vs_table sites;
    int64_t last;               /* last bucket filled, -1: none */
    uint64_t cur[MT_VIEW_SERIES];
    uint64_t cur_seq;           /* last heap event */
    uint64_t *diff;             /* [cat][bucket + 1] */
    uint64_t *ptime;            /* [bucket][phase] ns */
    unsigned cur_phase;
    uint64_t phase_since;
    uint64_t step_since, step_value;
    bool in_step;
    bool failed;                /* out of memory in a callback */
};

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

const char *mt_view_intern(struct mt_view *v, const char *s)
{
    struct pool *p = &((struct view_internal *)v->internal)->pool;
    if (!p->slot || (p->count + 1) * 10 > (p->mask + 1) * 7) {
        size_t n = p->slot ? (p->mask + 1) * 2 : 1024;
        char **ns = calloc(n, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = 0; p->slot && i <= p->mask; i++) {
            if (!p->slot[i])
                continue;
            size_t j = fnv(p->slot[i]) & (n - 1);
            while (ns[j])
                j = (j + 1) & (n - 1);
            ns[j] = p->slot[i];
        }
        free(p->slot);
        p->slot = ns;
        p->mask = n - 1;
    }
    size_t j = fnv(s) & p->mask;
    while (p->slot[j]) {
        if (!strcmp(p->slot[j], s))
            return p->slot[j];
        j = (j + 1) & p->mask;
    }
    if (!(p->slot[j] = strdup(s)))
        return NULL;
    p->count++;
    return p->slot[j];
}

/* ---- the grid -------------------------------------------------------------- */

/* Halves the resolution: bucket i becomes the max of 2i and 2i + 1. */
static void grid_merge(struct mt_view *v, struct view_internal *in)
{
    for (unsigned i = 0; i < MT_VIEW_BUCKETS / 2; i++) {
        struct mt_view_bucket a = v->b[2 * i], c = v->b[2 * i + 1];
        if ((int64_t)(2 * i + 1) <= in->last) {
            for (unsigned s = 0; s < MT_VIEW_SERIES; s++)
                if (c.v[s] > a.v[s]) {
                    a.v[s] = c.v[s];
                    if (s == MT_SER_HEAP)
                        a.heap_seq = c.heap_seq;
                }
        }
        v->b[i] = a;
    }
    memset(v->b + MT_VIEW_BUCKETS / 2, 0, MT_VIEW_BUCKETS / 2 * sizeof *v->b);
    in->last = in->last < 0 ? -1 : in->last / 2;
    v->shift++;
}

/* The bucket of time t, buckets up to it filled with the levels carried in. */
static struct mt_view_bucket *grid_at(struct mt_view *v, struct view_internal *in, uint64_t t)
{
    while ((t >> v->shift) >= MT_VIEW_BUCKETS)
        grid_merge(v, in);
    int64_t idx = (int64_t)(t >> v->shift);
    while (in->last < idx) {
        struct mt_view_bucket *b = &v->b[++in->last];
        memcpy(b->v, in->cur, sizeof b->v);
        b->heap_seq = in->cur_seq;
    }
    return &v->b[idx];
}

static void grid_level(struct mt_view *v, struct view_internal *in, unsigned s, uint64_t t, uint64_t level,
                       uint64_t seq)
{
    struct mt_view_bucket *b = grid_at(v, in, t);
    in->cur[s] = level;
    if (s == MT_SER_HEAP)
        in->cur_seq = seq;
    if (level > b->v[s]) {
        b->v[s] = level;
        if (s == MT_SER_HEAP)
            b->heap_seq = seq;
    }
}

/* ---- pass A ---------------------------------------------------------------- */

static int gpu_index(struct mt_view *v, uint32_t device)
{
    for (unsigned i = 0; i < v->ngpu; i++)
        if (v->gpu[i].device == device)
            return (int)i;
    if (v->ngpu == MT_VIEW_GPUS)
        return -1;
    v->gpu[v->ngpu] = (struct mt_view_gpu){ .device = device };
    return (int)v->ngpu++;
}

static int pass_gpu(struct mt_view *v, struct view_internal *in, struct vg_table *live,
                    const struct mt_record *rec)
{
    if (rec->kind == MT_GPU_OOM)
        return 0;
    uint64_t key = mt_gpu_key(rec->space, rec->device, rec->addr);
    struct vg_entry e;
    if (rec->kind == MT_GPU_FREE) {
        if (!vg_remove(live, key, &e))
            return 0;
    } else {
        int g = gpu_index(v, rec->device);
        if (g < 0)
            return 0;
        e = (struct vg_entry){ .key = key, .size = rec->size, .gpu = (uint32_t)g };
        if (mt_gpu_is_reserved(rec->api, rec->space))
            e.flags |= 1;
        if (mt_gpu_is_allocated(rec->api, rec->space, MT_ALLOCATED_TENSOR))
            e.flags |= 2;
        if (mt_gpu_is_allocated(rec->api, rec->space, MT_ALLOCATED_ASYNC))
            e.flags |= 4;
        if (!e.flags)
            return 0;
        struct vg_entry old;
        int rc = vg_insert(live, &e, &old);
        if (rc < 0)
            return rc;
        if (rc == 1) { /* the old one ends here */
            for (unsigned k = 0; k < MT_SER_PER_GPU; k++)
                if (old.flags & (1u << k))
                    in->cur[MT_SER_GPU0 + old.gpu * MT_SER_PER_GPU + k] -= old.size;
        }
        struct mt_view_gpu *gd = &v->gpu[g];
        gd->has_reserved |= (e.flags & 1) != 0;
        gd->has_tensor |= (e.flags & 2) != 0;
        gd->has_async |= (e.flags & 4) != 0;
    }
    for (unsigned k = 0; k < MT_SER_PER_GPU; k++) {
        if (!(e.flags & (1u << k)))
            continue;
        unsigned s = MT_SER_GPU0 + e.gpu * MT_SER_PER_GPU + k;
        uint64_t level = rec->kind == MT_GPU_FREE ? in->cur[s] - e.size : in->cur[s] + e.size;
        grid_level(v, in, s, rec->time_ns, level, 0);
    }
    return 0;
}

static int pass_a(const char *path, struct mt_view *v, struct view_internal *in, bool *has_marks,
                  struct mt_error *err)
{
    struct mt_reader *r;
    int rc = mt_reader_open(path, &r, err);
    if (rc < 0)
        return rc;
    v->pid = mt_reader_info(r)->pid;
    struct vg_table gl;
    vg_init(&gl);
    struct mt_record rec;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        if (rec.time_ns > v->end_ns)
            v->end_ns = rec.time_ns;
        switch (rec.type) {
        case MT_REC_ALLOC:
            if ((rc = mt_sites_alloc(&v->sites, rec.block, rec.size, rec.stack_id, rec.tid, rec.time_ns)) < 0)
                goto nomem;
            if (v->sites.live_bytes > v->peak_bytes || !v->peak_seq) {
                v->peak_bytes = v->sites.live_bytes;
                v->peak_seq = rec.seq;
                v->peak_time_ns = rec.time_ns;
            }
            grid_level(v, in, MT_SER_HEAP, rec.time_ns, v->sites.live_bytes, rec.seq);
            break;
        case MT_REC_FREE:
            if (mt_sites_free(&v->sites, rec.block, rec.tid, rec.time_ns, rec.kind == MT_FREE_IMPLICIT, NULL))
                grid_level(v, in, MT_SER_HEAP, rec.time_ns, v->sites.live_bytes, rec.seq);
            break;
        case MT_REC_STACK:
            if ((rc = mt_sites_node(&v->sites, rec.stack_id, rec.parent_id, rec.ip)) < 0)
                goto nomem;
            break;
        case MT_REC_MODULE:
            if (rec.kind == MT_MODULE_LOAD && v->sym &&
                (rc = mt_symbolizer_add_module(v->sym, rec.path, rec.path_len, rec.bias, rec.segs, rec.nsegs,
                                               rec.build_id, rec.build_id_len)) < 0)
                goto nomem;
            break;
        case MT_REC_RSS:
            if (rec.kind == MT_RSS_SAMPLE) {
                struct mt_view_bucket *b = grid_at(v, in, rec.time_ns);
                in->cur[MT_SER_RSS] = rec.rss_bytes;
                if (rec.rss_bytes > b->v[MT_SER_RSS])
                    b->v[MT_SER_RSS] = rec.rss_bytes;
            }
            break;
        case MT_REC_PROCESS:
            if (!v->comm && rec.exe_len) {
                const char *e = rec.exe, *end = rec.exe + rec.exe_len;
                for (const char *p = rec.exe; p < end; p++)
                    if (*p == '/')
                        e = p + 1;
                if (e < end && !(v->comm = strndup(e, (size_t)(end - e))))
                    goto nomem;
            }
            break;
        case MT_REC_MARK:
            if (rec.kind != MT_MARK_STRING)
                *has_marks = true;
            break;
        case MT_REC_GPU:
            *has_marks = true;
            if ((rc = pass_gpu(v, in, &gl, &rec)) < 0)
                goto nomem;
            break;
        default:
            break;
        }
    }
    if (rc < 0)
        mti_error_set(err, "%s", mt_reader_error(r));
    v->partial = mt_reader_partial(r);
    mt_reader_close(r);
    vg_destroy(&gl);
    if (rc < 0)
        return rc;
    mt_sites_finish(&v->sites, v->end_ns);
    grid_at(v, in, v->end_ns);
    v->nbuckets = (unsigned)in->last + 1;
    v->alloc_count = v->sites.alloc_count;
    v->alloc_bytes = v->sites.alloc_bytes;
    v->end_bytes = v->sites.live_bytes;
    v->end_count = v->sites.live_count;
    return 0;
nomem:
    mt_reader_close(r);
    vg_destroy(&gl);
    mti_error_set(err, "out of memory");
    return -ENOMEM;
}

/* ---- pass B: the observer -------------------------------------------------- */

/* First bucket whose sample seq is >= seq (nbuckets if none). */
static unsigned first_at_or_after(const struct mt_view *v, uint64_t seq)
{
    unsigned lo = 0, hi = v->nbuckets;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (v->b[mid].heap_seq >= seq)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void on_block(const struct mt_block_life *bl, void *arg)
{
    struct mt_view *v = arg;
    struct view_internal *in = v->internal;
    if (bl->gpu || in->failed)
        return;
    unsigned ph = bl->phase < 64 ? bl->phase : 0;
    struct mt_view_site *s = vs_find(&in->sites, bl->stack_id << 6 | ph);
    if (!s) {
        struct mt_view_site n = { .key = bl->stack_id << 6 | ph, .stack_id = bl->stack_id, .phase = ph };
        if (vs_insert(&in->sites, &n, NULL) < 0) {
            in->failed = true;
            return;
        }
        s = vs_find(&in->sites, n.key);
    }
    s->alloc_count++;
    s->alloc_bytes += bl->size;
    bool live_after_end = bl->end_seq == 0;
    if (bl->seq <= v->peak_seq && (live_after_end || bl->end_seq > v->peak_seq)) {
        s->peak_count++;
        s->peak_bytes += bl->size;
    }
    if (live_after_end) {
        s->leak_count++;
        s->leak_bytes += bl->size;
    }
    if (bl->category >= MT_CAT_MAX)
        return;
    unsigned lo = first_at_or_after(v, bl->seq);
    unsigned hi = live_after_end ? v->nbuckets : first_at_or_after(v, bl->end_seq);
    if (lo < hi) {
        uint64_t *d = in->diff + (size_t)bl->category * (MT_VIEW_BUCKETS + 1);
        d[lo] += bl->size;
        d[hi] -= bl->size;
    }
}

static unsigned bucket_of(const struct mt_view *v, uint64_t t)
{
    uint64_t i = t >> v->shift;
    return i < v->nbuckets ? (unsigned)i : v->nbuckets - 1;
}

static void add_slice(struct mt_view *v, uint64_t start, uint64_t end, uint64_t value, bool step)
{
    struct view_internal *in = v->internal;
    if (v->nslice == MT_VIEW_SLICES) {
        v->slices_cut = true;
        return;
    }
    if (!v->slice && !(v->slice = malloc(MT_VIEW_SLICES * sizeof *v->slice))) {
        in->failed = true;
        return;
    }
    v->slice[v->nslice++] = (struct mt_view_slice){ start, end, value, step };
}

/* The time [phase_since, t) of the current phase, spread over buckets. */
static void phase_time(struct mt_view *v, uint64_t t)
{
    struct view_internal *in = v->internal;
    uint64_t a = in->phase_since;
    if (t <= a)
        return;
    if (in->cur_phase)
        add_slice(v, a, t, in->cur_phase, false);
    while (a < t) {
        unsigned i = bucket_of(v, a);
        uint64_t end = mt_view_bucket_ns(v, i + 1);
        if (end > t || i == v->nbuckets - 1)
            end = t;
        in->ptime[(size_t)i * 64 + in->cur_phase] += end - a;
        a = end;
    }
    in->phase_since = t;
}

static void on_phase(unsigned p, uint64_t t, void *arg)
{
    struct mt_view *v = arg;
    struct view_internal *in = v->internal;
    phase_time(v, t);
    in->cur_phase = p < 64 ? p : 0;
}

static void on_step(uint64_t step, uint64_t t, void *arg)
{
    struct mt_view *v = arg;
    struct view_internal *in = v->internal;
    v->steps++;
    unsigned i = bucket_of(v, t);
    if (!v->step_at[i])
        v->step_at[i] = step + 1;
    if (in->in_step)
        add_slice(v, in->step_since, t, in->step_value, true);
    in->in_step = true;
    in->step_since = t;
    in->step_value = step;
}

static int collect_sites(struct mt_view *v, struct view_internal *in)
{
    size_t n = in->sites.count + (in->sites.has_zero ? 1 : 0), k = 0;
    if (!(v->site = calloc(n ? n : 1, sizeof *v->site)))
        return -ENOMEM;
    if (in->sites.has_zero)
        v->site[k++] = in->sites.zero;
    for (size_t i = 0; in->sites.slots && i <= in->sites.mask; i++)
        if (in->sites.slots[i].key)
            v->site[k++] = in->sites.slots[i];
    v->nsite = k;
    return 0;
}

int mt_view_compute(const char *path, const struct mt_view_opts *opts, struct mt_view **out,
                    struct mt_error *err)
{
    struct mt_view *v = calloc(1, sizeof *v);
    struct view_internal *in = calloc(1, sizeof *in);
    int rc = -ENOMEM;
    if (!v || !in) {
        free(v);
        free(in);
        mti_error_set(err, "out of memory");
        return -ENOMEM;
    }
    v->internal = in;
    in->last = -1;
    vs_init(&in->sites);
    mt_sites_init(&v->sites);
    if (!(v->b = calloc(MT_VIEW_BUCKETS, sizeof *v->b)))
        goto nomem;
    if ((!opts || !opts->no_symbols) && (rc = mt_symbolizer_new(&v->sym, err)) < 0)
        goto fail;
    bool has_marks = false;
    if ((rc = pass_a(path, v, in, &has_marks, err)) < 0)
        goto fail;
    if (!v->comm && !(v->comm = strdup("memtrace")))
        goto nomem;

    in->diff = calloc((size_t)MT_CAT_MAX * (MT_VIEW_BUCKETS + 1), sizeof *in->diff);
    in->ptime = calloc((size_t)MT_VIEW_BUCKETS * 64, sizeof *in->ptime);
    v->band = calloc(MT_VIEW_BUCKETS, 1);
    v->step_at = calloc(MT_VIEW_BUCKETS, sizeof *v->step_at);
    v->cat_live = calloc((size_t)MT_CAT_MAX * MT_VIEW_BUCKETS, sizeof *v->cat_live);
    if (!in->diff || !in->ptime || !v->band || !v->step_at || !v->cat_live)
        goto nomem;
    struct mt_phases_observer obs = { .block = on_block, .phase = on_phase, .step = on_step, .arg = v };
    if ((rc = mt_phases_compute_obs(path, NULL, NULL, &obs, &v->phases, err)) < 0)
        goto fail;
    (void)has_marks;
    phase_time(v, v->end_ns + 1);
    if (in->in_step)
        add_slice(v, in->step_since, v->end_ns + 1, in->step_value, true);
    if (in->failed)
        goto nomem;
    for (size_t c = 0; c < v->phases.ncat; c++) {
        uint64_t acc = 0;
        const uint64_t *d = in->diff + c * (MT_VIEW_BUCKETS + 1);
        for (unsigned i = 0; i < v->nbuckets; i++) {
            acc += d[i];
            v->cat_live[c * MT_VIEW_BUCKETS + i] = acc;
        }
    }
    for (unsigned i = 0; i < v->nbuckets; i++) {
        unsigned best = 0;
        for (unsigned p = 1; p < 64; p++)
            if (in->ptime[(size_t)i * 64 + p] > in->ptime[(size_t)i * 64 + best])
                best = p;
        v->band[i] = (uint8_t)best;
    }
    if ((rc = collect_sites(v, in)) < 0)
        goto nomem;
    free(in->diff);
    free(in->ptime);
    in->diff = NULL;
    in->ptime = NULL;
    vs_destroy(&in->sites);
    *out = v;
    return 0;
nomem:
    rc = -ENOMEM;
    mti_error_set(err, "out of memory");
fail:
    mt_view_destroy(v);
    return rc;
}

void mt_view_destroy(struct mt_view *v)
{
    if (!v)
        return;
    struct view_internal *in = v->internal;
    if (in) {
        for (size_t i = 0; in->pool.slot && i <= in->pool.mask; i++)
            free(in->pool.slot[i]);
        free(in->pool.slot);
        free(in->diff);
        free(in->ptime);
        vs_destroy(&in->sites);
        free(in);
    }
    free(v->comm);
    free(v->b);
    free(v->cat_live);
    free(v->band);
    free(v->step_at);
    free(v->slice);
    free(v->site);
    mt_phases_destroy(&v->phases);
    mt_sites_destroy(&v->sites);
    mt_symbolizer_free(v->sym);
    free(v);
}

/* ---- frames ---------------------------------------------------------------- */

#define MAX_INLINED 64

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int mt_view_frames(struct mt_view *v, uint64_t stack_id, struct mt_view_frame *out, unsigned max)
{
    uint64_t ips[MT_MAX_FRAMES];
    unsigned nips = mt_sites_frames(&v->sites, stack_id, ips, MT_MAX_FRAMES);
    struct mt_frame_info info[MAX_INLINED];
    unsigned n = 0;
    for (int pass = 0; pass < 2 && n == 0; pass++) {
        bool trimming = pass == 0;
        /* innermost first into out, reversed at the end */
        for (unsigned i = 0; i < nips && n < max; i++) {
            unsigned k = 1;
            if (v->sym)
                k = mt_symbolize(v->sym, ips[i], false, info, MAX_INLINED);
            else
                info[0] = (struct mt_frame_info){ .offset = ips[i], .status = MT_FRAME_NO_MODULE };
            for (unsigned j = 0; j < k && n < max; j++) {
                if (trimming && mt_report_allocator_frame(info[j].function))
                    continue;
                trimming = false;
                char buf[512];
                const char *name = info[j].function;
                if (!name) {
                    if (info[j].module)
                        snprintf(buf, sizeof buf, "[%s+0x%llx]", base_name(info[j].module),
                                 (unsigned long long)info[j].offset);
                    else
                        snprintf(buf, sizeof buf, "[0x%llx]", (unsigned long long)ips[i]);
                    name = buf;
                }
                const char *in = mt_view_intern(v, name);
                const char *file = info[j].file ? mt_view_intern(v, info[j].file) : NULL;
                if (!in || (info[j].file && !file))
                    return -ENOMEM;
                out[n++] = (struct mt_view_frame){ .name = in, .file = file, .line = info[j].line,
                                                   .inlined = info[j].inlined };
            }
        }
    }
    if (n == 0 && max) {
        const char *ns = mt_view_intern(v, "[no stack]");
        if (!ns)
            return -ENOMEM;
        out[n++] = (struct mt_view_frame){ .name = ns };
    }
    for (unsigned i = 0; i < n / 2; i++) {
        struct mt_view_frame t = out[i];
        out[i] = out[n - 1 - i];
        out[n - 1 - i] = t;
    }
    return (int)n;
}

/* ---- colours --------------------------------------------------------------- */

static const uint32_t hues[] = {
    0xe6550d, 0x3182bd, 0x31a354, 0x9467bd, 0xd6a429, 0xd6616b, 0x17becf, 0x8c564b,
    0xbcbd22, 0xe377c2, 0x637939, 0x7b4173,
};
#define NHUES (sizeof hues / sizeof hues[0])

uint32_t mt_view_phase_rgb(unsigned p)
{
    return p == 0 ? 0xa8a8a8 : hues[(p - 1) % NHUES];
}

uint32_t mt_view_category_rgb(unsigned c)
{
    static const uint32_t fixed[MT_CAT_FIXED] = {
        0x3182bd, 0x9ecae1, 0x31a354, 0xe6550d, 0xfdae6b, 0x9467bd, 0xbdbdbd,
    };
    return c < MT_CAT_FIXED ? fixed[c] : hues[(c - MT_CAT_FIXED + 4) % NHUES];
}
