/* simulate: the replay engine and `memtrace simulate` (see simulate.h).
 *
 * mt_sim_open runs phases.h's pass 1 once with an observer that keeps each
 * allocation's category in one byte per seq, then replays the trace
 * untransformed to measure the repeated blocks (activation bytes, output,
 * forward transient and forward time of each). mt_sim_run replays it
 * again under a set of techniques: the replay keeps its own phase and
 * scope stacks from the MARK records, one table entry per live allocation
 * (baseline and predicted size, the checkpoint segment it belongs to,
 * whether it is currently dropped), and "accounts" of live bytes (the host
 * heap, and one per GPU for per-tensor memory) whose peaks, global and per
 * phase, are the result. Checkpoint schedules other than the fixed ones
 * are chosen on an analytic model of the chain built from the measured
 * blocks, then replayed like any other.
 */
#include "simulate.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices.h"
#include "reader.h"
#include "report.h"

#define SIM_PHASES 64u
#define SIM_STACK 256u
#define SIM_SMALL_STATE 16384u /* optimizer state tensors under 4096 fp32 values stay fp32 */
#define SIM_DEFAULT_BANDWIDTH 25.0
#define SIM_CHAIN_MIN 4096u    /* activations this large form a checkpointed block's chain */
#define SIM_BOUNDARY_ACCTS 16u /* accounts (host + GPUs) whose segment output is kept */

/* ---- the live-allocation table: hash-table.h for 40-byte entries --------------- */

struct sim_ent {
    uint64_t key;
    uint64_t base, pred;   /* bytes in the baseline, predicted */
    int32_t seg;           /* checkpoint segment, -1 */
    uint32_t fwd;          /* the forward it was made in (checkpointed ones) */
    uint16_t acct;         /* 0 host, 1 + device index */
    uint8_t cat;
    uint8_t dropped;       /* freed early by checkpointing, not yet remade */
    uint8_t offloaded;     /* counted off the device */
    uint8_t remade;        /* made again by a recompute, not yet freed */
};

struct sim_table {
    struct sim_ent *slots;
    size_t mask;
    size_t count;
    unsigned shift;
    bool has_zero;
    struct sim_ent zero;
};

#define HT_PREFIX st
#define HT_TABLE struct sim_table
#define HT_ENTRY struct sim_ent
#define HT_MIN_BITS 10
#include "hash-table.h"

/* ---- the base --------------------------------------------------------------------- */

struct mt_sim_base {
    char *path;
    struct mt_phases ph;
    uint8_t *cat;        /* category per seq */
    size_t ncat;
    struct mt_sim_chain chain;
    bool cat_failed;
};

static void observe(const struct mt_block_life *b, void *arg)
{
    struct mt_sim_base *s = arg;
    if (b->seq >= SIZE_MAX / 4)
        return;
    if (b->seq >= s->ncat) {
        size_t n = s->ncat ? s->ncat : 4096;
        while (n <= b->seq)
            n *= 2;
        uint8_t *c = realloc(s->cat, n);
        if (!c) {
            s->cat_failed = true;
            return;
        }
        memset(c + s->ncat, MT_CAT_OTHER, n - s->ncat);
        s->cat = c;
        s->ncat = n;
    }
    s->cat[b->seq] = (uint8_t)b->category;
}

/* The repeated blocks: module paths PREFIX.N with N a number, directly
 * under the root; the prefix with the most of them (at least 2). */
static void find_chain(struct mt_sim_base *s)
{
    struct mt_sim_chain *c = &s->chain;
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < s->ph.nmodule; i++) {
        const char *p = s->ph.module[i].path, *dot = strrchr(p, '.');
        if (!dot || dot == p || !isdigit((unsigned char)dot[1]) || strchr(p, '.') != dot)
            continue;
        char *end;
        unsigned long k = strtoul(dot + 1, &end, 10);
        if (*end || k >= MT_SIM_MAX_BLOCKS || (size_t)(dot - p) >= sizeof c->prefix)
            continue;
        /* count this prefix's blocks */
        unsigned n = 0;
        for (size_t j = 0; j < s->ph.nmodule; j++) {
            const char *q = s->ph.module[j].path;
            if (!strncmp(q, p, (size_t)(dot - p) + 1) && isdigit((unsigned char)q[dot - p + 1]) &&
                !strchr(q + (dot - p) + 1, '.'))
                n++;
        }
        if (n >= 2 && n > c->n) {
            memcpy(c->prefix, p, (size_t)(dot - p));
            c->prefix[dot - p] = 0;
            c->n = n;
        }
    }
}

/* The block of a module path (PREFIX.N or below it), or -1. */
static int block_of(const struct mt_sim_chain *c, const char *path)
{
    size_t l = strlen(c->prefix);
    if (!c->n || strncmp(path, c->prefix, l) || path[l] != '.' || !isdigit((unsigned char)path[l + 1]))
        return -1;
    char *end;
    unsigned long k = strtoul(path + l + 1, &end, 10);
    if ((*end && *end != '.') || k >= c->n)
        return -1;
    return (int)k;
}

/* ---- the replay -------------------------------------------------------------------- */

enum { KIND_OTHER, KIND_FORWARD, KIND_BACKWARD, KIND_OPTIMIZER };

struct sim_str {
    char *text;
    int block;      /* block of the path, -1 */
    bool exact;     /* the block's own path (not a submodule) */
    int kind;       /* KIND_* of a phase of this name */
    int phase;      /* index into the phase names, -1 until used */
};

struct acct {
    uint64_t live_base, live_pred, peak_base, peak_pred;
    uint64_t ph_base[SIM_PHASES], ph_pred[SIM_PHASES];
    bool ph_seen[SIM_PHASES];
    uint64_t offl_live, offl_peak;
    bool per_tensor; /* a device with per-tensor allocations */
    uint32_t device;
};

struct seg_state {
    uint64_t *keys;     /* activations of this segment's current forward */
    size_t nkeys, cap;
    uint64_t boundary[SIM_BOUNDARY_ACCTS]; /* per account, the key kept: the
                                           * last block's output */
    uint64_t chain[SIM_BOUNDARY_ACCTS];    /* per account, the last tensor-sized one */
    uint64_t chain2[SIM_BOUNDARY_ACCTS];   /* and the one before it */
    bool remat;         /* remade in the current backward */
    bool dropped;       /* its activations were dropped in the current forward */
    uint64_t t_start;   /* forward start of the segment */
    uint64_t temp[2];   /* transient of its forward (the largest block's), host and GPU */
};

struct sim_run {
    struct mt_sim_base *b;
    const struct mt_sim_opts *o;
    bool measure;                  /* the baseline replay: fill the chain */
    struct sim_table tab;
    struct sim_str *str;
    size_t nstr;
    char phase_name[SIM_PHASES][64];
    unsigned nphase;
    int pstack[SIM_STACK];         /* phase string ids */
    unsigned pdepth;
    int sstack[SIM_STACK];         /* scope string ids */
    unsigned sdepth;
    unsigned cur_phase;            /* index into phase_name */
    int cur_kind;
    struct acct *acct;             /* [0] host, [1 + i] device i */
    size_t nacct;
    struct seg_state seg[MT_SIM_MAX_BLOCKS];
    uint64_t steps;
    int last_remat;                /* the segment remade last in this backward, -1 */
    uint32_t fwd_inst;             /* forwards seen */
    double recompute_s;
    /* measurement of the chain (baseline replay) */
    /* [blk][0] the host heap, [blk][1] the first GPU's per-tensor memory */
    uint64_t blk_t0[MT_SIM_MAX_BLOCKS], blk_live0[MT_SIM_MAX_BLOCKS][2], blk_grow[MT_SIM_MAX_BLOCKS][2];
    uint64_t blk_act2[MT_SIM_MAX_BLOCKS][2], min_temp[MT_SIM_MAX_BLOCKS][2];
    uint64_t blk_act[MT_SIM_MAX_BLOCKS], blk_last[MT_SIM_MAX_BLOCKS];
    double sum_act[MT_SIM_MAX_BLOCKS], sum_out[MT_SIM_MAX_BLOCKS], sum_t[MT_SIM_MAX_BLOCKS];
    unsigned nfwd[MT_SIM_MAX_BLOCKS];
    uint64_t kv_unit;              /* bytes per token of the KV cache (window) */
    int err;
};

static int ensure_str(struct sim_run *r, uint64_t id)
{
    if (id >= (1u << 24))
        return -EINVAL;
    if (id < r->nstr)
        return 0;
    size_t n = r->nstr ? r->nstr : 64;
    while (n <= id)
        n *= 2;
    struct sim_str *s = realloc(r->str, n * sizeof *s);
    if (!s)
        return -ENOMEM;
    for (size_t i = r->nstr; i < n; i++)
        s[i] = (struct sim_str){ .block = -1, .phase = -1 };
    r->str = s;
    r->nstr = n;
    return 0;
}

static unsigned phase_index(struct sim_run *r, int id)
{
    if (id < 0 || (size_t)id >= r->nstr)
        return 0;
    struct sim_str *s = &r->str[id];
    if (s->phase >= 0)
        return (unsigned)s->phase;
    const char *name = s->text ? s->text : "?";
    for (unsigned i = 0; i < r->nphase; i++) {
        if (!strcmp(r->phase_name[i], name)) {
            s->phase = (int)i;
            return i;
        }
    }
    if (r->nphase == SIM_PHASES)
        return 0;
    snprintf(r->phase_name[r->nphase], sizeof r->phase_name[0], "%s", name);
    s->phase = (int)r->nphase;
    return r->nphase++;
}

static void acct_peak(struct sim_run *r, struct acct *a)
{
    if (a->live_base > a->peak_base)
        a->peak_base = a->live_base;
    if (a->live_pred > a->peak_pred)
        a->peak_pred = a->live_pred;
    unsigned p = r->cur_phase;
    a->ph_seen[p] = true;
    if (a->live_base > a->ph_base[p])
        a->ph_base[p] = a->live_base;
    if (a->live_pred > a->ph_pred[p])
        a->ph_pred[p] = a->live_pred;
    if (a->offl_live > a->offl_peak)
        a->offl_peak = a->offl_live;
}

/* A momentary extra on top of what is live (a recompute's transient). */
static void acct_spike(struct sim_run *r, struct acct *a, uint64_t extra)
{
    a->live_pred += extra;
    acct_peak(r, a);
    a->live_pred -= extra;
}

static void retire(struct sim_run *r, int s);
static bool later_pending(const struct sim_run *r, int s);

static void set_phase(struct sim_run *r)
{
    int id = r->pdepth && r->pdepth <= SIM_STACK ? r->pstack[r->pdepth - 1] : -1;
    r->cur_phase = id < 0 ? 0 : phase_index(r, id);
    int kind = id < 0 || (size_t)id >= r->nstr ? KIND_OTHER : r->str[id].kind;
    if (r->cur_kind == KIND_BACKWARD && kind != KIND_BACKWARD) {
        retire(r, r->last_remat);
        r->last_remat = -1;
    }
    if (kind == KIND_FORWARD && r->cur_kind != KIND_FORWARD) {
        /* A new forward: the segments start afresh. */
        r->fwd_inst++;
        for (unsigned i = 0; i < MT_SIM_MAX_BLOCKS; i++) {
            r->seg[i].nkeys = 0;
            memset(r->seg[i].boundary, 0, sizeof r->seg[i].boundary);
            memset(r->seg[i].chain, 0, sizeof r->seg[i].chain);
            memset(r->seg[i].chain2, 0, sizeof r->seg[i].chain2);
            r->seg[i].remat = false;
            r->seg[i].dropped = false;
        }
    }
    r->cur_kind = kind;
    for (size_t i = 0; i < r->nacct; i++)
        acct_peak(r, &r->acct[i]);
}

static int cur_block(const struct sim_run *r)
{
    for (unsigned d = r->sdepth < SIM_STACK ? r->sdepth : SIM_STACK; d > 0; d--) {
        int id = r->sstack[d - 1];
        if (id >= 0 && (size_t)id < r->nstr && r->str[id].block >= 0)
            return r->str[id].block;
    }
    return -1;
}

/* The predicted size of an allocation of a category, made in the current phase. */
static uint64_t transform(const struct sim_run *r, unsigned cat, uint64_t size)
{
    const struct mt_sim_opts *o = r->o;
    double v = (double)size;
    bool fwd_bwd = r->cur_kind == KIND_FORWARD || r->cur_kind == KIND_BACKWARD;
    switch (cat) {
    case MT_CAT_OPTIMIZER_STATE:
        if ((o->opt_bits || o->galore_rank) && size >= SIM_SMALL_STATE) {
            double values = v / 4.0;
            if (o->galore_rank) {
                double side = sqrt(values);
                if (o->galore_rank < side)
                    values = (double)o->galore_rank * side;
            }
            if (o->opt_bits) {
                unsigned blk = o->opt_block ? o->opt_block : 128;
                v = ceil(values * o->opt_bits / 8.0) + 4.0 * ceil(values / blk);
            } else {
                v = values * 4.0;
            }
        }
        break;
    case MT_CAT_ACTIVATIONS:
    case MT_CAT_TEMPORARIES:
        if (cat == MT_CAT_TEMPORARIES && !fwd_bwd)
            break;
        if (o->act_bytes && o->act_bytes < 4)
            v = v * o->act_bytes / 4.0;
        if (o->grad_accum > 1)
            v = v / o->grad_accum;
        break;
    case MT_CAT_KV_CACHE:
        if (o->kv_window && r->kv_unit && size > o->kv_window * r->kv_unit)
            v = (double)(o->kv_window * r->kv_unit);
        if (o->kv_latent_ratio > 1.0)
            v = v / o->kv_latent_ratio;
        if (o->kv_bits) {
            unsigned g = o->kv_group ? o->kv_group : 32, e = o->kv_elem_bytes ? o->kv_elem_bytes : 4;
            v = v * (o->kv_bits + 32.0 / g) / (8.0 * e);
        }
        break;
    }
    return v < 1.0 && size ? 1 : (uint64_t)ceil(v);
}

static bool offloaded(const struct sim_run *r, unsigned cat, unsigned acct)
{
    unsigned m = cat == MT_CAT_OPTIMIZER_STATE ? MT_OFFLOAD_OPTIMIZER
                 : cat == MT_CAT_ACTIVATIONS   ? MT_OFFLOAD_ACTIVATIONS
                 : cat == MT_CAT_KV_CACHE      ? MT_OFFLOAD_KV
                                               : 0;
    if (!(r->o->offload & m))
        return false;
    /* Off a device: to the host (or disk); off the host: only to disk. */
    return acct > 0 || r->o->offload_disk;
}

/* A recompute's tensors do not outlive the backward of their segment:
 * when backward moves on to another segment (or ends), what segment s
 * remade and is still live goes (its later free in the trace, where the
 * baseline held it longer, then changes nothing). */
static void retire(struct sim_run *r, int s)
{
    if (s < 0)
        return;
    struct seg_state *g = &r->seg[s];
    for (size_t i = 0; i < g->nkeys; i++) {
        struct sim_ent *e = st_find(&r->tab, g->keys[i]);
        if (!e || !e->remade || e->dropped)
            continue;
        e->remade = 0;
        e->dropped = 1;
        if (e->acct < r->nacct)
            r->acct[e->acct].live_pred -= e->pred;
    }
}

static void remat(struct sim_run *r, int s)
{
    struct seg_state *g = &r->seg[s];
    if (g->remat)
        return;
    g->remat = true;
    if (r->last_remat != s)
        retire(r, r->last_remat);
    r->last_remat = s;
    uint64_t back[64] = { 0 };
    for (size_t i = 0; i < g->nkeys; i++) {
        struct sim_ent *e = st_find(&r->tab, g->keys[i]);
        if (!e || !e->dropped)
            continue;
        e->dropped = 0;
        e->remade = 1;
        if (e->acct < r->nacct && e->acct < 64) {
            r->acct[e->acct].live_pred += e->pred;
            back[e->acct] = 1;
        }
    }
    for (size_t a = 0; a < r->nacct && a < 64; a++)
        if (back[a])
            acct_spike(r, &r->acct[a], g->temp[a ? 1 : 0]);
}

static void drop_one(struct sim_run *r, uint64_t key)
{
    struct sim_ent *e = st_find(&r->tab, key);
    if (!e || e->dropped || e->offloaded)
        return;
    e->dropped = 1;
    if (e->acct < r->nacct)
        r->acct[e->acct].live_pred -= e->pred;
}

static void drop(struct sim_run *r, int s)
{
    struct seg_state *g = &r->seg[s];
    g->dropped = true;
    for (size_t i = 0; i < g->nkeys; i++) {
        const struct sim_ent *e = st_find(&r->tab, g->keys[i]);
        if (e && !(e->acct < SIM_BOUNDARY_ACCTS && g->boundary[e->acct] == e->key))
            drop_one(r, e->key);
    }
}

static int seg_add(struct seg_state *g, uint64_t key)
{
    if (g->nkeys == g->cap) {
        size_t n = g->cap ? 2 * g->cap : 64;
        uint64_t *k = realloc(g->keys, n * sizeof *k);
        if (!k)
            return -ENOMEM;
        g->keys = k;
        g->cap = n;
    }
    g->keys[g->nkeys++] = key;
    return 0;
}

static int alloc_event(struct sim_run *r, uint64_t key, uint64_t seq, uint64_t size, unsigned acct)
{
    unsigned cat = seq < r->b->ncat ? r->b->cat[seq] : MT_CAT_OTHER;
    struct sim_ent e = { .key = key, .base = size, .pred = transform(r, cat, size), .seg = -1,
                         .acct = (uint16_t)acct, .cat = (uint8_t)cat };
    struct acct *a = &r->acct[acct];
    int blk = cur_block(r);
    uint64_t chain_prev = 0;
    if (cat == MT_CAT_ACTIVATIONS && r->cur_kind == KIND_FORWARD && blk >= 0) {
        if (r->measure) {
            r->blk_act[blk] += size;
            r->blk_last[blk] = size;
            if (acct < 2)
                r->blk_act2[blk][acct] += size;
        }
        int s = r->o->seg[blk];
        if (s >= 0) {
            e.seg = s;
            e.fwd = r->fwd_inst;
            if (seg_add(&r->seg[s], key) < 0)
                return -ENOMEM;
            if (acct < SIM_BOUNDARY_ACCTS) {
                r->seg[s].boundary[acct] = key; /* the last one made is the output */
                if (size >= SIM_CHAIN_MIN) {
                    chain_prev = r->seg[s].chain2[acct];
                    r->seg[s].chain2[acct] = r->seg[s].chain[acct];
                    r->seg[s].chain[acct] = key;
                }
            }
        }
    }
    e.offloaded = offloaded(r, cat, acct);
    struct sim_ent old;
    int rc = st_insert(&r->tab, &e, &old);
    if (rc < 0)
        return rc;
    if (rc == 1) { /* a damaged trace: the old one ends */
        struct acct *oa = &r->acct[old.acct < r->nacct ? old.acct : 0];
        oa->live_base -= old.base;
        if (old.offloaded)
            oa->offl_live -= old.pred;
        else if (!old.dropped)
            oa->live_pred -= old.pred;
    }
    a->live_base += size;
    if (e.offloaded) {
        a->offl_live += e.pred;
        if (acct > 0 && !r->o->offload_disk) { /* to the host */
            r->acct[0].live_pred += e.pred;
            acct_peak(r, &r->acct[0]);
        }
    } else {
        a->live_pred += e.pred;
    }
    acct_peak(r, a);
    /* Under checkpointing nothing is kept for backward: an activation of a
     * checkpointed segment lives while the next two are made (the chain a
     * block's operations form, where an input often outlives the first
     * operation on it, as a residual's does), then goes. Small ones (a
     * framework's bookkeeping beside the tensors) neither break the chain
     * nor go early; all go at the segment's end. */
    if (chain_prev)
        drop_one(r, chain_prev);
    /* A compressed KV cache is decompressed to full precision for the
     * attention that reads it: that layer's K and V (the size of this
     * allocation, and its twin), and for a latent one also the copy the
     * up-projection makes. */
    if (cat == MT_CAT_KV_CACHE && (r->o->kv_bits || r->o->kv_latent_ratio > 1.0))
        acct_spike(r, a, (r->o->kv_latent_ratio > 1.0 ? 4 : 2) * size);
    return 0;
}

static void free_event(struct sim_run *r, uint64_t key)
{
    /* A dropped activation freed in backward: its segment is remade first
     * (the recompute happens before the backward that uses it). */
    struct sim_ent *f = st_find(&r->tab, key);
    if (!f)
        return;
    if (f->seg >= 0 && f->dropped && r->cur_kind == KIND_BACKWARD && f->fwd == r->fwd_inst &&
        !later_pending(r, f->seg))
        remat(r, f->seg);
    /* (one of an earlier forward, its free deferred past its backward, is
     * gone already and brings nothing back) */
    struct sim_ent e;
    if (!st_remove(&r->tab, key, &e))
        return;
    struct acct *a = &r->acct[e.acct < r->nacct ? e.acct : 0];
    a->live_base -= e.base;
    if (e.offloaded) {
        a->offl_live -= e.pred;
        if (e.acct > 0 && !r->o->offload_disk)
            r->acct[0].live_pred -= e.pred;
    } else if (!e.dropped) {
        /* (one still dropped, freed outside backward, never came back) */
        a->live_pred -= e.pred;
    }
}

/* Backward recomputes the segments last to first. A dropped allocation
 * of segment s freed while a later segment still waits for its recompute,
 * or while backward is still in a later segment's blocks, is freed out of
 * that order (a framework's small bookkeeping objects, such as autograd
 * nodes, go when their whole graph goes): it brings nothing back, and the
 * recompute of s waits for its turn. */
static bool later_pending(const struct sim_run *r, int s)
{
    for (int t = s + 1; t < (int)MT_SIM_MAX_BLOCKS; t++)
        if (r->seg[t].dropped && !r->seg[t].remat)
            return true;
    /* still in the backward of a later segment's block */
    int blk = cur_block(r);
    return blk >= 0 && r->o->seg[blk] > s;
}

/* The last block of segment s. */
static int seg_last(const struct mt_sim_opts *o, unsigned n, int s)
{
    int last = -1;
    for (unsigned i = 0; i < n; i++)
        if (o->seg[i] == s)
            last = (int)i;
    return last;
}

static bool seg_first(const struct mt_sim_opts *o, int blk)
{
    return o->seg[blk] >= 0 && (blk == 0 || o->seg[blk - 1] != o->seg[blk]);
}

static void scope_push(struct sim_run *r, int id, uint64_t t)
{
    if (r->sdepth < SIM_STACK)
        r->sstack[r->sdepth] = id;
    r->sdepth++;
    if (id < 0 || (size_t)id >= r->nstr || r->str[id].block < 0)
        return;
    int blk = r->str[id].block;
    int s = r->o->seg[blk];
    if (r->cur_kind == KIND_BACKWARD && s >= 0) {
        remat(r, s);
    } else if (r->cur_kind == KIND_FORWARD && r->str[id].exact) {
        if (r->measure) {
            r->blk_t0[blk] = t;
            for (unsigned k = 0; k < 2 && k < r->nacct; k++) {
                r->blk_live0[blk][k] = r->acct[k].live_base;
                r->blk_grow[blk][k] = 0;
                r->blk_act2[blk][k] = 0;
            }
            r->blk_act[blk] = 0;
            r->blk_last[blk] = 0;
        }
        if (s >= 0 && seg_first(r->o, blk))
            r->seg[s].t_start = t;
    }
}

static void scope_pop(struct sim_run *r, uint64_t t)
{
    if (!r->sdepth)
        return;
    int id = r->sdepth <= SIM_STACK ? r->sstack[r->sdepth - 1] : -1;
    r->sdepth--;
    if (id < 0 || (size_t)id >= r->nstr || r->str[id].block < 0 || !r->str[id].exact ||
        r->cur_kind != KIND_FORWARD)
        return;
    int blk = r->str[id].block;
    if (r->measure) {
        r->sum_act[blk] += (double)r->blk_act[blk];
        r->sum_out[blk] += (double)r->blk_last[blk];
        /* The transient: the growth beyond the activations, the least over
         * steps (the first may pay for a library's lazy set-up). */
        for (unsigned k = 0; k < 2 && k < r->nacct; k++) {
            uint64_t grow = r->blk_grow[blk][k], act = r->blk_act2[blk][k];
            uint64_t temp = grow > act ? grow - act : 0;
            if (!r->nfwd[blk] || temp < r->min_temp[blk][k])
                r->min_temp[blk][k] = temp;
        }
        r->sum_t[blk] += (double)(t - r->blk_t0[blk]) / 1e9;
        r->nfwd[blk]++;
    }
    int s = r->o->seg[blk];
    if (s >= 0 && seg_last(r->o, r->b->chain.n, s) == blk) {
        r->recompute_s += (double)(t - r->seg[s].t_start) / 1e9;
        drop(r, s);
    }
}

/* Keeps the measured transient of the blocks being run in forward. */
static void measure_growth(struct sim_run *r)
{
    if (!r->measure || r->cur_kind != KIND_FORWARD)
        return;
    for (unsigned d = 0; d < r->sdepth && d < SIM_STACK; d++) {
        int id = r->sstack[d];
        if (id >= 0 && (size_t)id < r->nstr && r->str[id].block >= 0 && r->str[id].exact) {
            int blk = r->str[id].block;
            for (unsigned k = 0; k < 2 && k < r->nacct; k++) {
                uint64_t live = r->acct[k].live_base;
                if (live > r->blk_live0[blk][k] && live - r->blk_live0[blk][k] > r->blk_grow[blk][k])
                    r->blk_grow[blk][k] = live - r->blk_live0[blk][k];
            }
        }
    }
}

static int device_acct(struct sim_run *r, uint32_t device)
{
    for (size_t i = 1; i < r->nacct; i++)
        if (r->acct[i].device == device)
            return (int)i;
    return -1;
}

static int replay(struct sim_run *r, struct mt_error *err)
{
    struct mt_reader *rd;
    int rc = mt_reader_open(r->b->path, &rd, err);
    if (rc < 0)
        return rc;
    struct mt_record rec;
    while ((rc = mt_reader_next(rd, &rec)) > 0) {
        switch (rec.type) {
        case MT_REC_ALLOC:
            rc = alloc_event(r, rec.block, rec.block, rec.size, 0);
            measure_growth(r);
            break;
        case MT_REC_FREE:
            if (rec.block)
                free_event(r, rec.block);
            break;
        case MT_REC_GPU: {
            int a = device_acct(r, rec.device);
            if (a < 0 || rec.kind == MT_GPU_OOM)
                break;
            uint64_t key = mt_gpu_key(rec.space, rec.device, rec.addr) | (1ull << 63);
            if (rec.kind == MT_GPU_FREE) { /* (a free's api says nothing of what it frees) */
                free_event(r, key);
                break;
            }
            bool per_tensor = rec.space == MT_GPU_SPACE_TENSOR ||
                              (rec.space == MT_GPU_SPACE_DEVICE && !mt_gpu_is_reserved(rec.api, rec.space));
            if (per_tensor) {
                rc = alloc_event(r, key, rec.seq, rec.size, (unsigned)a);
                measure_growth(r);
            }
            break;
        }
        case MT_REC_MARK:
            switch (rec.kind) {
            case MT_MARK_STRING: {
                if ((rc = ensure_str(r, rec.value)) < 0)
                    break;
                struct sim_str *s = &r->str[rec.value];
                if (s->text)
                    break;
                if (!(s->text = malloc((size_t)rec.str_len + 1))) {
                    rc = -ENOMEM;
                    break;
                }
                memcpy(s->text, rec.str, rec.str_len);
                s->text[rec.str_len] = 0;
                s->block = block_of(&r->b->chain, s->text);
                if (s->block >= 0) {
                    char own[300];
                    snprintf(own, sizeof own, "%s.%d", r->b->chain.prefix, s->block);
                    s->exact = !strcmp(own, s->text);
                }
                s->kind = !strcmp(s->text, "forward")     ? KIND_FORWARD
                          : !strcmp(s->text, "backward")  ? KIND_BACKWARD
                          : !strcmp(s->text, "optimizer") ? KIND_OPTIMIZER
                                                          : KIND_OTHER;
                break;
            }
            case MT_MARK_PHASE_PUSH:
                if (r->pdepth < SIM_STACK)
                    r->pstack[r->pdepth] = (int)rec.value;
                r->pdepth++;
                set_phase(r);
                break;
            case MT_MARK_PHASE_POP:
                if (r->pdepth) {
                    r->pdepth--;
                    set_phase(r);
                }
                break;
            case MT_MARK_STEP:
                r->steps++;
                break;
            case MT_MARK_SCOPE_PUSH:
                scope_push(r, (int)rec.value, rec.time_ns);
                break;
            case MT_MARK_SCOPE_POP:
                scope_pop(r, rec.time_ns);
                break;
            }
            break;
        default:
            break;
        }
        if (rc < 0)
            break;
    }
    if (rc < 0 && rc != -ENOMEM)
        mti_error_set(err, "%s", mt_reader_error(rd));
    else if (rc == -ENOMEM)
        mti_error_set(err, "out of memory");
    mt_reader_close(rd);
    return rc < 0 ? rc : 0;
}

static void run_free(struct sim_run *r)
{
    for (size_t i = 0; i < r->nstr; i++)
        free(r->str[i].text);
    free(r->str);
    for (unsigned i = 0; i < MT_SIM_MAX_BLOCKS; i++)
        free(r->seg[i].keys);
    free(r->acct);
    st_destroy(&r->tab);
}

/* ---- schedules ------------------------------------------------------------------- */

/* The analytic peak change of a schedule on the chain (from the measured
 * blocks): saved activations less kept outputs, plus the largest
 * recompute transient. */
static double model_delta(const struct mt_sim_chain *c, const int *seg, double *time)
{
    double saved = 0, worst = 0, t = 0;
    for (unsigned i = 0; i < c->n;) {
        if (seg[i] < 0) {
            i++;
            continue;
        }
        unsigned j = i;
        double act = 0, temp = 0;
        while (j < c->n && seg[j] == seg[i]) {
            act += (double)c->act[j];
            temp = fmax(temp, (double)c->temp[j]);
            t += c->fwd_s[j];
            j++;
        }
        double kept = (double)c->out[j - 1];
        saved += act - kept;
        worst = fmax(worst, act - kept + temp);
        i = j;
    }
    if (time)
        *time = t;
    return worst - saved;
}

/* Checkpoint the fewest blocks, best bytes saved per second of recompute
 * first, until the model says the peak fits (one block per segment). */
static void schedule_budget(const struct mt_sim_chain *c, double room, int *seg)
{
    for (unsigned i = 0; i < c->n; i++)
        seg[i] = -1;
    for (unsigned step = 0; step < c->n && model_delta(c, seg, NULL) > room; step++) {
        int best = -1;
        double best_score = -1;
        for (unsigned i = 0; i < c->n; i++) {
            if (seg[i] >= 0)
                continue;
            double gain = (double)c->act[i] - (double)c->out[i];
            double score = gain / fmax(c->fwd_s[i], 1e-9);
            if (score > best_score) {
                best_score = score;
                best = (int)i;
            }
        }
        if (best < 0)
            break;
        seg[best] = best;
    }
}

/* Exact: the segmentation (runs of checkpointed blocks) with the least
 * recompute time whose model peak fits in room, by dynamic programming
 * over prefixes of the chain with Pareto fronts of (bytes saved, seconds)
 * for each bound on the largest recompute transient. false when nothing
 * fits (then seg is every block alone). */
struct pareto {
    double saved, cost;
    int prev;         /* index into the front of the prefix it came from */
    unsigned from;    /* start of the last segment, or i when block i-1 is kept */
};

static bool schedule_optimal(const struct mt_sim_chain *c, double room, int *seg)
{
    unsigned n = c->n;
    if (n == 0 || n > 64) {
        schedule_budget(c, room, seg);
        return model_delta(c, seg, NULL) <= room;
    }
    /* candidate bounds: every segment's transient */
    size_t nb = 0;
    double *bound = malloc(sizeof *bound * (n * (n + 1) / 2));
    if (!bound)
        return false;
    for (unsigned a = 0; a < n; a++) {
        double act = 0, temp = 0;
        for (unsigned b = a; b < n; b++) {
            act += (double)c->act[b];
            temp = fmax(temp, (double)c->temp[b]);
            bound[nb++] = act - (double)c->out[b] + temp;
        }
    }
    double best_cost = INFINITY;
    int best_seg[MT_SIM_MAX_BLOCKS];
    const size_t cap = 256;
    struct pareto *front = malloc(sizeof *front * (n + 1) * cap);
    size_t *nf = calloc(n + 1, sizeof *nf);
    if (!front || !nf) {
        free(bound);
        free(front);
        free(nf);
        return false;
    }
    for (size_t k = 0; k < nb; k++) {
        double M = bound[k];
        nf[0] = 1;
        front[0] = (struct pareto){ 0, 0, -1, 0 };
        for (unsigned i = 1; i <= n; i++) {
            struct pareto *f = &front[i * cap];
            size_t m = 0;
            /* block i-1 kept */
            for (size_t q = 0; q < nf[i - 1] && m < cap; q++)
                f[m++] = (struct pareto){ front[(i - 1) * cap + q].saved, front[(i - 1) * cap + q].cost, (int)q, i };
            /* a segment [a, i-1] */
            double act = 0, temp = 0, t = 0;
            for (unsigned a = i; a-- > 0;) {
                act += (double)c->act[a];
                temp = fmax(temp, (double)c->temp[a]);
                t += c->fwd_s[a];
                double tr = act - (double)c->out[i - 1] + temp;
                if (tr > M)
                    continue;
                double gain = act - (double)c->out[i - 1];
                for (size_t q = 0; q < nf[a]; q++) {
                    struct pareto p = { front[a * cap + q].saved + gain, front[a * cap + q].cost + t, (int)q, a };
                    /* insert unless dominated; drop what it dominates */
                    bool dominated = false;
                    for (size_t x = 0; x < m && !dominated; x++)
                        dominated = f[x].saved >= p.saved && f[x].cost <= p.cost;
                    if (dominated)
                        continue;
                    size_t w = 0;
                    for (size_t x = 0; x < m; x++)
                        if (!(p.saved >= f[x].saved && p.cost <= f[x].cost))
                            f[w++] = f[x];
                    m = w;
                    if (m < cap)
                        f[m++] = p;
                }
            }
            nf[i] = m;
        }
        /* the cheapest point of the full chain that fits with bound M */
        for (size_t q = 0; q < nf[n]; q++) {
            const struct pareto *p = &front[n * cap + q];
            if (M - p->saved <= room && p->cost < best_cost) {
                best_cost = p->cost;
                /* walk back */
                unsigned i = n;
                int at = (int)q, segno = 0;
                for (unsigned z = 0; z < n; z++)
                    best_seg[z] = -1;
                while (i > 0) {
                    const struct pareto *e = &front[i * cap + at];
                    if (e->from == i) {
                        at = e->prev;
                        i--;
                    } else {
                        for (unsigned z = e->from; z < i; z++)
                            best_seg[z] = segno;
                        segno++;
                        at = e->prev;
                        i = e->from;
                    }
                }
            }
        }
    }
    free(bound);
    free(front);
    free(nf);
    if (best_cost == INFINITY) {
        for (unsigned i = 0; i < n; i++)
            seg[i] = (int)i;
        return false;
    }
    memcpy(seg, best_seg, sizeof(int) * n);
    return true;
}

static void fill_schedule(const struct mt_sim_base *b, struct mt_sim_opts *o, char *note, size_t nn)
{
    const struct mt_sim_chain *c = &b->chain;
    for (unsigned i = 0; i < MT_SIM_MAX_BLOCKS; i++)
        o->seg[i] = -1;
    unsigned n = c->n;
    switch (o->ck) {
    case MT_CK_NONE:
        break;
    case MT_CK_EVERY:
        for (unsigned i = 0; i < n; i++)
            o->seg[i] = (int)i;
        break;
    case MT_CK_EVERY_K:
        for (unsigned i = 0; i < n; i++)
            o->seg[i] = o->ck_k && i % o->ck_k == 0 ? (int)i : -1;
        break;
    case MT_CK_SQRT: {
        unsigned k = (unsigned)floor(sqrt((double)n));
        k = k ? k : 1;
        for (unsigned i = 0; i < n; i++)
            o->seg[i] = (int)(i / k);
        break;
    }
    case MT_CK_BUDGET:
    case MT_CK_OPTIMAL: {
        uint64_t base = 0;
        if (o->device < 0) {
            base = b->ph.peak.bytes;
        } else {
            for (size_t i = 0; i < b->ph.ndev; i++)
                if ((int)b->ph.dev[i].device == o->device)
                    base = b->ph.dev[i].allocated_peak.bytes;
        }
        double room = (double)o->ck_budget - (double)base;
        if (o->ck == MT_CK_BUDGET)
            schedule_budget(c, room, o->seg);
        else if (!schedule_optimal(c, room, o->seg))
            snprintf(note, nn, "no checkpoint schedule fits the budget by the chain model; every block checkpointed");
        break;
    }
    }
}

/* ---- base, run, result -------------------------------------------------------------- */

void mt_sim_opts_init(struct mt_sim_opts *o)
{
    memset(o, 0, sizeof *o);
    o->opt_block = 128;
    o->kv_group = 32;
    o->kv_elem_bytes = 4;
    o->device = -1;
    for (unsigned i = 0; i < MT_SIM_MAX_BLOCKS; i++)
        o->seg[i] = -1;
}

static int run_setup(struct mt_sim_base *b, const struct mt_sim_opts *o, struct sim_run *r)
{
    memset(r, 0, sizeof *r);
    r->b = b;
    r->o = o;
    r->last_remat = -1;
    st_init(&r->tab);
    snprintf(r->phase_name[0], sizeof r->phase_name[0], "other");
    r->nphase = 1;
    r->nacct = 1 + b->ph.ndev;
    if (!(r->acct = calloc(r->nacct, sizeof *r->acct)))
        return -ENOMEM;
    for (size_t i = 0; i < b->ph.ndev; i++)
        r->acct[1 + i].device = b->ph.dev[i].device;
    /* A segment's recompute transient: its largest block's. */
    for (unsigned i = 0; i < b->chain.n; i++) {
        if (o->seg[i] < 0)
            continue;
        struct seg_state *g = &r->seg[o->seg[i]];
        if (b->chain.temp[i] > g->temp[0])
            g->temp[0] = b->chain.temp[i];
        if (b->chain.temp_gpu[i] > g->temp[1])
            g->temp[1] = b->chain.temp_gpu[i];
    }
    return 0;
}

int mt_sim_open(const char *path, struct mt_sim_base **out, struct mt_error *err)
{
    struct mt_sim_base *b = calloc(1, sizeof *b);
    if (!b || !(b->path = strdup(path))) {
        free(b);
        mti_error_set(err, "out of memory");
        return -ENOMEM;
    }
    struct mt_phases_observer obs = { .block = observe, .arg = b };
    int rc = mt_phases_compute_obs(path, NULL, NULL, &obs, &b->ph, err);
    if (rc < 0) {
        free(b->path);
        free(b);
        return rc;
    }
    if (b->cat_failed) {
        mt_sim_close(b);
        mti_error_set(err, "out of memory");
        return -ENOMEM;
    }
    find_chain(b);
    /* The baseline replay measures the blocks. */
    struct mt_sim_opts o;
    mt_sim_opts_init(&o);
    struct sim_run r;
    if ((rc = run_setup(b, &o, &r)) == 0) {
        r.measure = true;
        rc = replay(&r, err);
    }
    if (rc == 0) {
        struct mt_sim_chain *c = &b->chain;
        for (unsigned i = 0; i < c->n; i++) {
            unsigned k = r.nfwd[i] ? r.nfwd[i] : 1;
            c->act[i] = (uint64_t)(r.sum_act[i] / k);
            c->out[i] = (uint64_t)(r.sum_out[i] / k);
            c->temp[i] = r.nfwd[i] ? r.min_temp[i][0] : 0;
            c->temp_gpu[i] = r.nfwd[i] ? r.min_temp[i][1] : 0;
            c->fwd_s[i] = r.sum_t[i] / k;
        }
    }
    run_free(&r);
    if (rc < 0) {
        mt_sim_close(b);
        return rc;
    }
    *out = b;
    return 0;
}

void mt_sim_close(struct mt_sim_base *b)
{
    if (!b)
        return;
    mt_phases_destroy(&b->ph);
    free(b->cat);
    free(b->path);
    free(b);
}

const struct mt_sim_chain *mt_sim_chain(const struct mt_sim_base *b)
{
    return &b->chain;
}

const struct mt_phases *mt_sim_phases(const struct mt_sim_base *b)
{
    return &b->ph;
}

/* The KV cache's bytes per token: the smallest growth between two of its
 * allocations (a cache that grows by one token at a time), from pass 1's
 * categories and a quick look at the sizes. */
static uint64_t kv_unit(struct mt_sim_base *b, struct mt_error *err)
{
    struct mt_reader *rd;
    if (mt_reader_open(b->path, &rd, err) < 0)
        return 0;
    struct mt_record rec;
    uint64_t prev = 0, unit = 0;
    while (mt_reader_next(rd, &rec) > 0) {
        if (rec.type != MT_REC_ALLOC || rec.block >= b->ncat || b->cat[rec.block] != MT_CAT_KV_CACHE)
            continue;
        if (prev && rec.size > prev && (!unit || rec.size - prev < unit))
            unit = rec.size - prev;
        prev = rec.size;
    }
    mt_reader_close(rd);
    return unit;
}

/* The predicted peak the budget is about: the host heap's, or the
 * device's per-tensor memory. 0 and *peak, or a negative code. */
static int replay_peak(struct mt_sim_base *b, const struct mt_sim_opts *o, uint64_t *peak, struct mt_error *err)
{
    struct sim_run r;
    int rc = run_setup(b, o, &r);
    if (rc == 0)
        rc = replay(&r, err);
    if (rc == 0) {
        *peak = r.acct[0].peak_pred;
        for (size_t i = 1; o->device >= 0 && i < r.nacct; i++)
            if ((int)r.acct[i].device == o->device)
                *peak = r.acct[i].peak_pred;
    }
    run_free(&r);
    return rc;
}

/* A budget schedule chosen on the chain model, held against replays (for
 * chains of at most 16 blocks): blocks are added, best bytes per second
 * first, while the replayed peak is over the budget, then taken out again,
 * the most expensive recompute first, while it stays within. */
static int refine_schedule(struct mt_sim_base *b, struct mt_sim_opts *o, struct mt_error *err)
{
    const struct mt_sim_chain *c = &b->chain;
    if ((o->ck != MT_CK_BUDGET && o->ck != MT_CK_OPTIMAL) || c->n == 0 || c->n > 16)
        return 0;
    uint64_t peak;
    int rc = replay_peak(b, o, &peak, err);
    while (rc == 0 && peak > o->ck_budget) {
        int best = -1;
        double best_score = -1;
        for (unsigned i = 0; i < c->n; i++) {
            double score = ((double)c->act[i] - (double)c->out[i]) / fmax(c->fwd_s[i], 1e-9);
            if (o->seg[i] < 0 && score > best_score) {
                best_score = score;
                best = (int)i;
            }
        }
        if (best < 0)
            return 0; /* everything is checkpointed: as near as it gets */
        int fresh = 0; /* a segment of its own, numbered after the others */
        for (unsigned i = 0; i < c->n; i++)
            fresh = o->seg[i] >= fresh ? o->seg[i] + 1 : fresh;
        o->seg[best] = fresh;
        rc = replay_peak(b, o, &peak, err);
    }
    bool tried[16] = { false };
    while (rc == 0) {
        int worst = -1;
        double worst_t = -1;
        for (unsigned i = 0; i < c->n; i++) {
            /* only blocks alone in their segment come out one by one */
            bool alone = o->seg[i] >= 0 && (i == 0 || o->seg[i - 1] != o->seg[i]) &&
                         (i + 1 == c->n || o->seg[i + 1] != o->seg[i]);
            if (alone && !tried[i] && c->fwd_s[i] > worst_t) {
                worst_t = c->fwd_s[i];
                worst = (int)i;
            }
        }
        if (worst < 0)
            break;
        tried[worst] = true;
        int saved = o->seg[worst];
        o->seg[worst] = -1;
        uint64_t p;
        if ((rc = replay_peak(b, o, &p, err)) < 0)
            break;
        if (p > o->ck_budget)
            o->seg[worst] = saved;
    }
    return rc;
}

int mt_sim_run(struct mt_sim_base *b, struct mt_sim_opts *o, struct mt_sim_result *res, struct mt_error *err)
{
    memset(res, 0, sizeof *res);
    fill_schedule(b, o, res->note, sizeof res->note);
    int rrc = refine_schedule(b, o, err);
    if (rrc < 0)
        return rrc;
    struct sim_run r;
    int rc = run_setup(b, o, &r);
    if (rc == 0 && o->kv_window) {
        r.kv_unit = kv_unit(b, err);
        if (!r.kv_unit)
            snprintf(res->note, sizeof res->note, "--kv-window: no growing KV-cache allocations in the trace");
    }
    if (rc == 0)
        rc = replay(&r, err);
    if (rc < 0) {
        run_free(&r);
        return rc;
    }
    const struct acct *h = &r.acct[0];
    res->base_peak = h->peak_base;
    res->pred_peak = h->peak_pred;
    res->nphase = r.nphase;
    res->phase = calloc(r.nphase, sizeof *res->phase);
    res->ndev = b->ph.ndev;
    res->dev = calloc(res->ndev ? res->ndev : 1, sizeof *res->dev);
    if (!res->phase || !res->dev) {
        run_free(&r);
        mt_sim_result_free(res);
        mti_error_set(err, "out of memory");
        return -ENOMEM;
    }
    for (unsigned p = 0; p < r.nphase; p++) {
        snprintf(res->phase[p].name, sizeof res->phase[p].name, "%s", r.phase_name[p]);
        res->phase[p].base_peak = h->ph_base[p];
        res->phase[p].pred_peak = h->ph_pred[p];
    }
    uint64_t offl = 0;
    for (size_t a = 0; a < r.nacct; a++)
        offl += r.acct[a].offl_peak;
    res->offloaded_peak = offl;
    for (size_t i = 0; i < res->ndev; i++) {
        const struct mt_device_stat *d = &b->ph.dev[i];
        const struct acct *a = &r.acct[1 + i];
        struct mt_sim_device *sd = &res->dev[i];
        sd->device = d->device;
        sd->has_reserved = d->has_reserved;
        sd->has_allocated = d->allocated_source != MT_ALLOCATED_NONE;
        sd->base_reserved = d->has_reserved ? d->reserved_peak.bytes : 0;
        sd->base_allocated = sd->has_allocated ? d->allocated_peak.bytes : 0;
        sd->simulated = sd->has_allocated && a->peak_base > 0;
        sd->pred_allocated = sd->simulated ? a->peak_pred : sd->base_allocated;
        /* Reserved: the allocator keeps what it kept over allocated. */
        sd->pred_reserved = sd->base_reserved;
        if (sd->simulated && sd->has_reserved && sd->base_reserved >= sd->base_allocated)
            sd->pred_reserved = sd->pred_allocated + (sd->base_reserved - sd->base_allocated);
        sd->nphase = r.nphase;
        sd->phase = calloc(r.nphase, sizeof *sd->phase);
        if (!sd->phase) {
            run_free(&r);
            mt_sim_result_free(res);
            mti_error_set(err, "out of memory");
            return -ENOMEM;
        }
        for (unsigned p = 0; p < r.nphase; p++) {
            snprintf(sd->phase[p].name, sizeof sd->phase[p].name, "%s", r.phase_name[p]);
            sd->phase[p].base_peak = a->ph_base[p];
            sd->phase[p].pred_peak = a->ph_pred[p];
        }
        if (!sd->simulated && !res->note[0])
            snprintf(res->note, sizeof res->note,
                     "GPU %u: no per-tensor allocations to transform (trace with memtrace run --torch-allocated)",
                     d->device);
    }
    res->steps = r.steps;
    uint64_t steps = r.steps ? r.steps : 1;
    res->recompute_s = r.recompute_s / (double)steps;
    double bw = (o->bandwidth_gbps > 0 ? o->bandwidth_gbps : SIM_DEFAULT_BANDWIDTH) * 1e9;
    res->transfer_s = o->offload ? 2.0 * (double)offl / bw : 0.0;
    res->extra_s_per_step = res->recompute_s + res->transfer_s;
    /* Overlapped: transfers hide behind the compute of the step (the
     * phases' time per step), recompute does not. */
    double compute = 0;
    for (size_t p = 0; p < b->ph.nphase; p++)
        if (strcmp(b->ph.phase[p].name, "other"))
            compute += (double)b->ph.phase[p].time_ns / 1e9;
    compute /= (double)steps;
    res->extra_s_overlap = res->recompute_s + fmax(0.0, res->transfer_s - compute);
    unsigned nseg = 0, nblk = 0;
    size_t len = 0;
    for (unsigned i = 0; i < b->chain.n; i++) {
        if (o->seg[i] < 0)
            continue;
        nblk++;
        if (seg_first(o, (int)i)) {
            nseg++;
            int last = seg_last(o, b->chain.n, o->seg[i]);
            int w = last == (int)i ? snprintf(res->schedule + len, sizeof res->schedule - len, "%s%u", len ? "," : "", i)
                                   : snprintf(res->schedule + len, sizeof res->schedule - len, "%s%u-%d",
                                              len ? "," : "", i, last);
            if (w > 0 && (size_t)w < sizeof res->schedule - len)
                len += (size_t)w;
        }
    }
    res->ck_segments = nseg;
    res->ck_blocks = nblk;
    if (o->ck != MT_CK_NONE && !b->chain.n && !res->note[0])
        snprintf(res->note, sizeof res->note, "--checkpoint: no repeated blocks (modules PREFIX.N) in the trace");
    run_free(&r);
    return 0;
}

void mt_sim_result_free(struct mt_sim_result *res)
{
    if (!res)
        return;
    free(res->phase);
    for (size_t i = 0; res->dev && i < res->ndev; i++)
        free(res->dev[i].phase);
    free(res->dev);
    memset(res, 0, sizeof *res);
}

bool mt_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v))
        return false;
    while (*end == ' ')
        end++;
    double m = 1;
    if (*end) {
        char u = (char)toupper((unsigned char)*end);
        const char *units = "KMGTP";
        const char *at = strchr(units, u);
        if (!at)
            return false;
        end++;
        bool binary = *end == 'i' || *end == 'I';
        if (binary)
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
        if (*end)
            return false;
        m = pow(binary ? 1024.0 : 1000.0, (double)(at - units + 1));
        if (!binary && u == 'K' && 0)
            m = 1000;
    }
    double r = v * m;
    if (r >= 1.8e19)
        return false;
    *out = (uint64_t)r;
    return true;
}
