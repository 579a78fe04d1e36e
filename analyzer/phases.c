/* phases: per-phase, per-step, per-module and per-category heap numbers
 * from the program's markers (see phases.h for the definitions).
 *
 * Pass 1 keeps, per live block, its size, the phase instance and phase it
 * was made in, its module (scope) and its tag; everything else is small
 * arrays indexed by phase, step, scope and category, plus the category
 * array: one byte per seq, written when a block's life ends. Pass 2 reads
 * that byte at each allocation, so the live bytes of every category are
 * exact at every instant, and takes the breakdowns at the seqs pass 1
 * found for the peaks. Marker names arrive as STRING records before their
 * first use (the recorder writes a name just before the record that first
 * uses it).
 */
#include "phases.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

#define MT_PHASE_MAX 64u    /* distinct phase names; more fold into "other" */
#define MT_SCOPE_MAX 65535u /* distinct module paths; more are not tracked */
#define MT_STACK_MAX 256u   /* phase and scope nesting kept */

/* ---- the block table: hash-table.h for 32-byte entries ---------------------- */

struct ph_block {
    uint64_t key;      /* block id */
    uint64_t size;
    uint64_t stack_id; /* for the observer */
    uint32_t inst;     /* phase instance it was made in */
    uint16_t scope;    /* scope index + 1, 0: none */
    uint8_t phase;     /* phase index */
    uint8_t tag;       /* category + 1, 0: untagged */
};

struct ph_table {
    struct ph_block *slots;
    size_t mask;
    size_t count;
    unsigned shift;
    bool has_zero;
    struct ph_block zero;
};

#define HT_PREFIX pb
#define HT_TABLE struct ph_table
#define HT_ENTRY struct ph_block
#define HT_MIN_BITS 10
#include "hash-table.h"

/* ---- pass state ------------------------------------------------------------ */

struct ph_scope {
    uint32_t parent; /* scope index + 1, 0: none */
    uint64_t live, self_live;
};

struct ph_state {
    struct mt_phases *out;
    struct ph_table blocks;
    /* names: string id -> text; phase and scope index by string id + 1 */
    char **str;
    uint32_t *phase_of, *scope_of;
    size_t nstr;
    bool is_forward[MT_PHASE_MAX], is_backward[MT_PHASE_MAX];
    uint8_t pstack[MT_STACK_MAX];
    unsigned pdepth;         /* may exceed MT_STACK_MAX: deeper ones are not kept */
    uint32_t sstack[MT_STACK_MAX];
    unsigned sdepth;
    unsigned cur;            /* current phase index */
    uint32_t inst;           /* phase instance */
    uint64_t phase_since;    /* time the current phase became current */
    struct ph_scope *scope;
    size_t nscope, scope_cap;
    size_t step_cap;
    long cur_step;           /* index into out->step, -1 before the first */
    uint64_t live;
    uint64_t first_ns, last_ns;
    long double area;        /* integral of live over time */
    bool timed;
    uint8_t *cat;            /* category per seq */
    size_t ncat_seq;
    struct mt_devices devs;
    bool cat_failed;
    int (*is_framework)(uint64_t stack_id, void *arg);
    void *framework_arg;
    const struct mt_phases_observer *obs; /* NULL: none */
};

static void observe_block(const struct ph_state *s, const struct ph_block *b, uint64_t end_seq, unsigned cat)
{
    if (s->obs && s->obs->block)
        s->obs->block(&(struct mt_block_life){ .seq = b->key, .end_seq = end_seq, .size = b->size,
                                               .stack_id = b->stack_id, .phase = b->phase, .category = cat },
                      s->obs->arg);
}

static const char *const fixed_names[MT_CAT_FIXED] = {
    "parameters", "gradients", "optimizer_state", "activations", "temporaries", "kv_cache", "other",
};

static int grow_array(void **p, size_t *cap, size_t want, size_t elem)
{
    if (want <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < want)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -ENOMEM;
    memset((char *)q + *cap * elem, 0, (n - *cap) * elem);
    *p = q;
    *cap = n;
    return 0;
}

static int ensure_str(struct ph_state *s, uint64_t id)
{
    if (id >= UINT32_MAX)
        return -EINVAL;
    size_t cap = s->nstr, want = (size_t)id + 1;
    if (want <= cap)
        return 0;
    size_t c1 = cap, c2 = cap, c3 = cap;
    if (grow_array((void **)&s->str, &c1, want, sizeof *s->str) < 0 ||
        grow_array((void **)&s->phase_of, &c2, want, sizeof *s->phase_of) < 0 ||
        grow_array((void **)&s->scope_of, &c3, want, sizeof *s->scope_of) < 0)
        return -ENOMEM;
    s->nstr = c1 < c2 ? (c1 < c3 ? c1 : c3) : (c2 < c3 ? c2 : c3);
    return 0;
}

/* The text of string id (a stand-in when it was never defined). */
static char *name_of(struct ph_state *s, uint64_t id, const char *what)
{
    if (id < s->nstr && s->str[id])
        return strdup(s->str[id]);
    char buf[48];
    snprintf(buf, sizeof buf, "%s#%llu", what, (unsigned long long)id);
    return strdup(buf);
}

/* The category index of a tag name, adding a named one; -1 when full. */
static int category_of(struct ph_state *s, uint64_t id)
{
    struct mt_phases *o = s->out;
    const char *name = id < s->nstr && s->str[id] ? s->str[id] : "";
    for (size_t i = 0; i < o->ncat; i++)
        if (!strcmp(o->cat_name[i], name))
            return (int)i;
    if (o->ncat == MT_CAT_MAX || !*name)
        return -1;
    char *n = strdup(name);
    if (!n)
        return -ENOMEM;
    o->cat_name[o->ncat] = n;
    return (int)o->ncat++;
}

static void peak_update(struct mt_peak *p, uint64_t live, uint64_t t, uint64_t seq)
{
    if (live > p->bytes || p->seq == 0) {
        p->bytes = live;
        p->time_ns = t;
        p->seq = seq;
    }
}

static struct mt_gpu_ctx gpu_ctx(struct ph_state *s)
{
    struct mt_step_stat *st = s->cur_step >= 0 ? &s->out->step[s->cur_step] : NULL;
    return (struct mt_gpu_ctx){
        .phase = s->cur, .inst = s->inst, .step = s->cur_step,
        .step_dev = st ? &st->dev : NULL, .nstep_dev = st ? &st->ndev : NULL,
        .nphase_max = MT_PHASE_MAX,
        .is_framework = s->is_framework, .framework_arg = s->framework_arg,
    };
}

/* The category of an allocation whose life ends now (see phases.h). */
static unsigned end_category(const struct ph_state *s, uint8_t tag, uint8_t phase, uint32_t inst)
{
    if (tag)
        return tag - 1u;
    if (s->is_forward[phase] && s->is_backward[s->cur])
        return MT_CAT_ACTIVATIONS;
    return inst == s->inst ? MT_CAT_TEMPORARIES : MT_CAT_OTHER;
}

/* Everything that follows a change of the live bytes or of the phase. */
static void peaks(struct ph_state *s, uint64_t t, uint64_t seq)
{
    struct mt_phases *o = s->out;
    if (s->live > o->peak.bytes) {
        o->peak.bytes = s->live;
        o->peak.time_ns = t;
        o->peak.seq = seq;
    }
    peak_update(&o->phase[s->cur].peak, s->live, t, seq);
    if (s->cur_step >= 0) {
        struct mt_step_stat *st = &o->step[s->cur_step];
        peak_update(&st->peak, s->live, t, seq);
        peak_update(&st->phase[s->cur], s->live, t, seq);
    }
}

static void advance_time(struct ph_state *s, uint64_t t)
{
    if (!s->timed) {
        s->first_ns = s->last_ns = s->phase_since = t;
        s->timed = true;
    }
    if (t > s->last_ns) {
        s->area += (long double)s->live * (long double)(t - s->last_ns);
        s->last_ns = t;
    }
}

/* Makes phase index p current (or keeps it), counting a new instance. */
static void set_phase(struct ph_state *s, unsigned p, uint64_t t, uint64_t seq)
{
    struct mt_phases *o = s->out;
    o->phase[s->cur].time_ns += t - s->phase_since;
    s->phase_since = t;
    s->cur = p;
    s->inst++;
    o->phase[p].instances++;
    if (s->obs && s->obs->phase)
        s->obs->phase(p, t, s->obs->arg);
    peaks(s, t, seq);
    struct mt_gpu_ctx c = gpu_ctx(s);
    mt_devices_phase(&s->devs, &c, t, seq);
}

static int phase_index(struct ph_state *s, uint64_t id)
{
    struct mt_phases *o = s->out;
    if (ensure_str(s, id) < 0)
        return -ENOMEM;
    if (s->phase_of[id])
        return (int)s->phase_of[id] - 1;
    if (o->nphase == MT_PHASE_MAX)
        return 0;
    char *name = name_of(s, id, "phase");
    if (!name)
        return -ENOMEM;
    for (size_t i = 1; i < o->nphase; i++) {
        if (!strcmp(o->phase[i].name, name)) { /* the same text under two ids */
            free(name);
            s->phase_of[id] = (uint32_t)i + 1;
            return (int)i;
        }
    }
    size_t p = o->nphase++;
    o->phase[p] = (struct mt_phase_stat){ .name = name };
    s->is_forward[p] = !strcmp(name, "forward");
    s->is_backward[p] = !strcmp(name, "backward");
    s->phase_of[id] = (uint32_t)p + 1;
    return (int)p;
}

static int scope_index(struct ph_state *s, uint64_t id, uint32_t parent)
{
    struct mt_phases *o = s->out;
    if (ensure_str(s, id) < 0)
        return -ENOMEM;
    if (s->scope_of[id])
        return (int)s->scope_of[id];
    if (s->nscope == MT_SCOPE_MAX)
        return 0;
    size_t mcap = s->scope_cap;
    if (grow_array((void **)&o->module, &mcap, s->nscope + 1, sizeof *o->module) < 0 ||
        grow_array((void **)&s->scope, &s->scope_cap, s->nscope + 1, sizeof *s->scope) < 0)
        return -ENOMEM;
    char *name = name_of(s, id, "module");
    if (!name)
        return -ENOMEM;
    size_t i = s->nscope++;
    s->scope[i] = (struct ph_scope){ .parent = parent };
    o->module[i] = (struct mt_module_stat){ .path = name };
    o->nmodule = s->nscope;
    s->scope_of[id] = (uint32_t)i + 1;
    return (int)i + 1;
}

static int step_begin(struct ph_state *s, uint64_t step, uint64_t t, uint64_t seq)
{
    struct mt_phases *o = s->out;
    if (grow_array((void **)&o->step, &s->step_cap, o->nstep + 1, sizeof *o->step) < 0)
        return -ENOMEM;
    struct mt_peak *ph = calloc(MT_PHASE_MAX, sizeof *ph);
    if (!ph)
        return -ENOMEM;
    o->step[o->nstep] = (struct mt_step_stat){ .step = step, .start_ns = t, .phase = ph };
    s->cur_step = (long)o->nstep++;
    if (s->obs && s->obs->step)
        s->obs->step(step, t, s->obs->arg);
    peaks(s, t, seq);
    struct mt_gpu_ctx c = gpu_ctx(s);
    return mt_devices_phase(&s->devs, &c, t, seq);
}

static int set_cat(struct ph_state *s, uint64_t block, unsigned cat)
{
    if (block >= SIZE_MAX / 2)
        return 0;
    if (grow_array((void **)&s->cat, &s->ncat_seq, (size_t)block + 1, 1) < 0)
        return -ENOMEM;
    s->cat[block] = (uint8_t)cat;
    return 0;
}

static void scope_add(struct ph_state *s, unsigned sc, uint64_t size, bool add)
{
    if (!sc)
        return;
    struct mt_phases *o = s->out;
    struct ph_scope *self = &s->scope[sc - 1];
    if (add) {
        self->self_live += size;
        if (self->self_live > o->module[sc - 1].self_peak_bytes)
            o->module[sc - 1].self_peak_bytes = self->self_live;
    } else {
        self->self_live -= size;
    }
    for (unsigned x = sc, guard = 0; x && guard < MT_STACK_MAX; x = s->scope[x - 1].parent, guard++) {
        struct ph_scope *c = &s->scope[x - 1];
        struct mt_module_stat *m = &o->module[x - 1];
        if (add) {
            c->live += size;
            m->alloc_count++;
            m->alloc_bytes += size;
            if (c->live > m->peak_bytes)
                m->peak_bytes = c->live;
        } else {
            c->live -= size;
        }
    }
}

static int pass1_record(struct ph_state *s, const struct mt_record *rec)
{
    struct mt_phases *o = s->out;
    int rc;
    switch (rec->type) {
    case MT_REC_ALLOC: {
        advance_time(s, rec->time_ns);
        struct ph_block b = {
            .key = rec->block, .size = rec->size, .inst = s->inst, .phase = (uint8_t)s->cur,
            .scope = (uint16_t)(s->sdepth && s->sdepth <= MT_STACK_MAX ? s->sstack[s->sdepth - 1] : 0),
            .stack_id = rec->stack_id,
        }, old;
        if ((rc = pb_insert(&s->blocks, &b, &old)) < 0)
            return rc;
        if (rc == 1) { /* a damaged trace: the old block ends here */
            observe_block(s, &old, rec->seq, old.tag ? old.tag - 1u : MT_CAT_OTHER);
            s->live -= old.size;
            scope_add(s, old.scope, old.size, false);
        }
        s->live += rec->size;
        scope_add(s, b.scope, rec->size, true);
        peaks(s, rec->time_ns, rec->seq);
        return 0;
    }
    case MT_REC_FREE: {
        advance_time(s, rec->time_ns);
        struct ph_block b;
        if (!rec->block || !pb_remove(&s->blocks, rec->block, &b))
            return 0;
        s->live -= b.size;
        scope_add(s, b.scope, b.size, false);
        unsigned cat = end_category(s, b.tag, b.phase, b.inst);
        observe_block(s, &b, rec->seq, cat);
        return set_cat(s, rec->block, cat);
    }
    case MT_REC_GPU: {
        advance_time(s, rec->time_ns);
        struct mt_gpu_ctx c = gpu_ctx(s);
        struct mt_gpu_end e;
        if ((rc = mt_devices_record(&s->devs, rec, &c, &e)) <= 0)
            return rc;
        unsigned cat = end_category(s, e.tag, e.phase, e.inst);
        if (s->obs && s->obs->block)
            s->obs->block(&(struct mt_block_life){ .gpu = true, .seq = e.seq, .end_seq = rec->seq,
                                                   .phase = e.phase, .category = cat },
                          s->obs->arg);
        return set_cat(s, e.seq, cat);
    }
    case MT_REC_MARK:
        break;
    default:
        return 0;
    }

    if (rec->kind == MT_MARK_STRING) {
        if ((rc = ensure_str(s, rec->value)) < 0)
            return rc;
        if (!s->str[rec->value]) {
            char *t = malloc((size_t)rec->str_len + 1);
            if (!t)
                return -ENOMEM;
            memcpy(t, rec->str, rec->str_len);
            t[rec->str_len] = 0;
            s->str[rec->value] = t;
        }
        return 0;
    }
    o->marks++;
    advance_time(s, rec->time_ns);
    switch (rec->kind) {
    case MT_MARK_PHASE_PUSH: {
        int p = phase_index(s, rec->value);
        if (p < 0)
            return p;
        if (s->pdepth < MT_STACK_MAX)
            s->pstack[s->pdepth] = (uint8_t)p;
        s->pdepth++;
        set_phase(s, (unsigned)p, rec->time_ns, rec->seq);
        break;
    }
    case MT_MARK_PHASE_POP:
        if (!s->pdepth)
            break; /* unbalanced: nothing to leave */
        s->pdepth--;
        set_phase(s, s->pdepth && s->pdepth <= MT_STACK_MAX ? s->pstack[s->pdepth - 1] : 0,
                  rec->time_ns, rec->seq);
        break;
    case MT_MARK_STEP:
        return step_begin(s, rec->value, rec->time_ns, rec->seq);
    case MT_MARK_SCOPE_PUSH: {
        uint32_t parent = s->sdepth && s->sdepth <= MT_STACK_MAX ? s->sstack[s->sdepth - 1] : 0;
        int sc = scope_index(s, rec->value, parent);
        if (sc < 0)
            return sc;
        if (s->sdepth < MT_STACK_MAX)
            s->sstack[s->sdepth] = (uint32_t)sc;
        s->sdepth++;
        break;
    }
    case MT_MARK_SCOPE_POP:
        if (s->sdepth)
            s->sdepth--;
        break;
    case MT_MARK_TAG: { /* a GPU tag (host ones come as TAG_BLOCK) */
        o->gpu_tags++;
        int c = category_of(s, rec->value);
        if (c == -ENOMEM)
            return c;
        if (c < 0 || !mt_devices_tag(&s->devs, rec->addr, (uint8_t)(c + 1)))
            o->gpu_tags_unmatched++;
        break;
    }
    case MT_MARK_TAG_BLOCK: {
        o->tags++;
        struct ph_block *b = rec->block ? pb_find(&s->blocks, rec->block) : NULL;
        if (!b) {
            o->tags_unmatched++;
            break;
        }
        int c = category_of(s, rec->value);
        if (c == -ENOMEM)
            return c;
        if (c >= 0)
            b->tag = (uint8_t)(c + 1);
        break;
    }
    default:
        break;
    }
    return 0;
}

/* Pass 2: category live bytes, their peaks, breakdowns at the peaks. */
struct ph_target {
    uint64_t seq;
    uint64_t *dst; /* ncat entries to fill */
    const uint64_t *src; /* from these live counts (NULL: the host's) */
};

/* A GPU record in pass 2: the device's live bytes per category, counting
 * the allocations its numbers count (allocated ones when the device has
 * them, else reserved ones). Blocks keyed by mt_gpu_key in the pass's
 * table: scope = device index, tag = category. */
static int pass2_gpu(struct ph_state *s, struct ph_table *blocks, uint64_t *glive, const struct mt_record *rec)
{
    struct mt_phases *o = s->out;
    size_t di = 0;
    while (di < o->ndev && o->dev[di].device != rec->device)
        di++;
    if (di == o->ndev || rec->kind == MT_GPU_OOM)
        return 0;
    const struct mt_device_stat *d = &o->dev[di];
    uint64_t *live = glive + di * MT_CAT_MAX;
    uint64_t key = mt_gpu_key(rec->space, rec->device, rec->addr);
    if (rec->kind == MT_GPU_FREE) {
        struct ph_block b;
        if (pb_remove(blocks, key, &b))
            live[b.tag] -= b.size;
        return 0;
    }
    bool counts = d->allocated_source != MT_ALLOCATED_NONE
                      ? mt_gpu_is_allocated(rec->api, rec->space, d->allocated_source)
                      : mt_gpu_is_reserved(rec->api, rec->space);
    if (!counts)
        return 0;
    unsigned c = rec->seq < s->ncat_seq ? s->cat[rec->seq] : MT_CAT_OTHER;
    struct ph_block b = { .key = key, .size = rec->size, .tag = (uint8_t)c, .scope = (uint16_t)di }, old;
    int rc = pb_insert(blocks, &b, &old);
    if (rc < 0)
        return rc;
    if (rc == 1)
        glive[old.scope * MT_CAT_MAX + old.tag] -= old.size;
    live[c] += rec->size;
    if (live[c] > d->cat_peak[c])
        d->cat_peak[c] = live[c];
    return 0;
}

static int target_cmp(const void *a, const void *b)
{
    const struct ph_target *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int pass2(const char *path, struct ph_state *s, struct mt_error *err)
{
    struct mt_phases *o = s->out;
    size_t nt = 0;
    struct ph_target *t = calloc(o->nphase + 1 + o->ndev, sizeof *t);
    uint64_t *live = calloc(MT_CAT_MAX, sizeof *live);
    uint64_t *glive = calloc((o->ndev ? o->ndev : 1) * MT_CAT_MAX, sizeof *glive);
    struct ph_table blocks;
    pb_init(&blocks);
    int rc = -ENOMEM;
    if (!t || !live || !glive)
        goto out;
    for (size_t i = 0; i < o->ndev; i++) {
        const struct mt_device_stat *d = &o->dev[i];
        const struct mt_gpu_peak *pk = d->allocated_source != MT_ALLOCATED_NONE ? &d->allocated_peak
                                                                                : &d->reserved_peak;
        if (pk->seq)
            t[nt++] = (struct ph_target){ pk->seq, d->cat_at_peak, glive + i * MT_CAT_MAX };
    }
    if (o->peak.seq)
        t[nt++] = (struct ph_target){ o->peak.seq, o->cat_at_peak, NULL };
    for (size_t i = 0; i < o->nphase; i++)
        if (o->phase[i].peak.seq)
            t[nt++] = (struct ph_target){ o->phase[i].peak.seq, o->phase[i].cat_at_peak, NULL };
    qsort(t, nt, sizeof *t, target_cmp);

    struct mt_reader *r;
    if ((rc = mt_reader_open(path, &r, err)) < 0)
        goto out;
    struct mt_record rec;
    size_t ti = 0;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        if (rec.type == MT_REC_GPU) {
            if ((rc = pass2_gpu(s, &blocks, glive, &rec)) < 0)
                break;
        } else if (rec.type == MT_REC_ALLOC) {
            unsigned c = rec.block < s->ncat_seq ? s->cat[rec.block] : MT_CAT_OTHER;
            struct ph_block b = { .key = rec.block, .size = rec.size, .tag = (uint8_t)c }, old;
            if ((rc = pb_insert(&blocks, &b, &old)) < 0)
                break;
            if (rc == 1)
                live[old.tag] -= old.size;
            live[c] += rec.size;
            if (live[c] > o->cat_peak[c])
                o->cat_peak[c] = live[c];
        } else if (rec.type == MT_REC_FREE) {
            struct ph_block b;
            if (rec.block && pb_remove(&blocks, rec.block, &b))
                live[b.tag] -= b.size;
        } else if (!(rec.type == MT_REC_MARK && rec.kind != MT_MARK_STRING) && rec.type != MT_REC_GPU) {
            continue; /* only events can be the seq of a peak */
        }
        while (ti < nt && t[ti].seq < rec.seq)
            ti++;
        for (size_t k = ti; k < nt && t[k].seq == rec.seq; k++)
            memcpy(t[k].dst, t[k].src ? t[k].src : live, o->ncat * sizeof *live);
    }
    if (rc < 0)
        mti_error_set(err, "%s", mt_reader_error(r));
    mt_reader_close(r);
out:
    pb_destroy(&blocks);
    free(live);
    free(glive);
    free(t);
    return rc < 0 ? rc : 0;
}

static void gpu_live_at_end(const struct mt_gpu_end *e, void *arg)
{
    struct ph_state *s = arg;
    unsigned cat = e->tag ? e->tag - 1u : MT_CAT_OTHER;
    if (s->obs && s->obs->block)
        s->obs->block(&(struct mt_block_life){ .gpu = true, .seq = e->seq, .phase = e->phase, .category = cat },
                      s->obs->arg);
    if (set_cat(s, e->seq, cat) < 0)
        s->cat_failed = true;
}

static int sort_modules_cmp(const void *a, const void *b)
{
    const struct mt_module_stat *x = a, *y = b;
    if (x->peak_bytes != y->peak_bytes)
        return x->peak_bytes > y->peak_bytes ? -1 : 1;
    return strcmp(x->path, y->path);
}

int mt_phases_compute(const char *path, struct mt_phases *out, struct mt_error *err)
{
    return mt_phases_compute_obs(path, NULL, NULL, NULL, out, err);
}

int mt_phases_compute_ex(const char *path, int (*is_framework)(uint64_t stack_id, void *arg), void *arg,
                         struct mt_phases *out, struct mt_error *err)
{
    return mt_phases_compute_obs(path, is_framework, arg, NULL, out, err);
}

int mt_phases_compute_obs(const char *path, int (*is_framework)(uint64_t stack_id, void *arg), void *arg,
                          const struct mt_phases_observer *obs, struct mt_phases *out, struct mt_error *err)
{
    memset(out, 0, sizeof *out);
    struct ph_state s = { .out = out, .cur_step = -1, .is_framework = is_framework, .framework_arg = arg,
                          .obs = obs };
    pb_init(&s.blocks);
    mt_devices_init(&s.devs);
    int rc = -ENOMEM;
    out->phase = calloc(MT_PHASE_MAX, sizeof *out->phase);
    out->cat_name = calloc(MT_CAT_MAX, sizeof *out->cat_name);
    out->cat_peak = calloc(MT_CAT_MAX, sizeof *out->cat_peak);
    out->cat_at_peak = calloc(MT_CAT_MAX, sizeof *out->cat_at_peak);
    if (!out->phase || !out->cat_name || !out->cat_peak || !out->cat_at_peak)
        goto nomem;
    out->phase[0].name = strdup("other");
    out->nphase = 1;
    for (unsigned i = 0; i < MT_CAT_FIXED; i++)
        if (!(out->cat_name[i] = strdup(fixed_names[i])))
            goto nomem;
    out->ncat = MT_CAT_FIXED;
    if (!out->phase[0].name)
        goto nomem;

    struct mt_reader *r;
    if ((rc = mt_reader_open(path, &r, err)) < 0)
        goto fail;
    struct mt_record rec;
    while ((rc = mt_reader_next(r, &rec)) > 0)
        if ((rc = pass1_record(&s, &rec)) < 0)
            break;
    if (rc < 0 && rc != -ENOMEM)
        mti_error_set(err, "%s", mt_reader_error(r));
    mt_reader_close(r);
    if (rc == -ENOMEM)
        goto nomem;
    if (rc < 0)
        goto fail;

    /* Blocks live at the end keep their tag, else are "other". */
    if (s.blocks.has_zero) {
        observe_block(&s, &s.blocks.zero, 0, s.blocks.zero.tag ? s.blocks.zero.tag - 1u : MT_CAT_OTHER);
        if ((rc = set_cat(&s, 0, s.blocks.zero.tag ? s.blocks.zero.tag - 1u : MT_CAT_OTHER)) < 0)
            goto nomem;
    }
    for (size_t i = 0; s.blocks.slots && i <= s.blocks.mask; i++) {
        const struct ph_block *b = &s.blocks.slots[i];
        if (!b->key)
            continue;
        observe_block(&s, b, 0, b->tag ? b->tag - 1u : MT_CAT_OTHER);
        if (set_cat(&s, b->key, b->tag ? b->tag - 1u : MT_CAT_OTHER) < 0)
            goto nomem;
    }
    mt_devices_each_live(&s.devs, gpu_live_at_end, &s);
    mt_devices_finish(&s.devs);
    for (size_t i = 0; i < out->nstep; i++)
        for (size_t k = 0; k < out->step[i].ndev; k++)
            mt_devices_fold_step(&s.devs, &out->step[i].dev[k]);
    if (s.cat_failed)
        goto nomem;
    out->dev = s.devs.dev;
    out->ndev = s.devs.ndev;
    s.devs.dev = NULL;
    s.devs.ndev = 0;
    out->phase[s.cur].time_ns += s.last_ns - s.phase_since;
    if (s.last_ns > s.first_ns)
        out->mean_live_bytes = (uint64_t)(s.area / (long double)(s.last_ns - s.first_ns));
    else
        out->mean_live_bytes = s.live;
    for (size_t i = 0; i < out->nphase; i++)
        if (!(out->phase[i].cat_at_peak = calloc(MT_CAT_MAX, sizeof(uint64_t))))
            goto nomem;
    if ((rc = pass2(path, &s, err)) < 0)
        goto fail;
    if (out->nmodule) /* (qsort must not be given a null array, even empty) */
        qsort(out->module, out->nmodule, sizeof *out->module, sort_modules_cmp);
    rc = 0;
    goto done;
nomem:
    rc = -ENOMEM;
    mti_error_set(err, "out of memory");
fail:
    mt_phases_destroy(out);
done:
    for (size_t i = 0; i < s.nstr; i++)
        free(s.str[i]);
    free(s.str);
    free(s.phase_of);
    free(s.scope_of);
    free(s.scope);
    free(s.cat);
    pb_destroy(&s.blocks);
    mt_devices_done(&s.devs);
    mt_devices_free_stats(s.devs.dev, s.devs.ndev);
    return rc;
}

void mt_phases_destroy(struct mt_phases *p)
{
    if (!p)
        return;
    for (size_t i = 0; p->phase && i < p->nphase; i++) {
        free(p->phase[i].name);
        free(p->phase[i].cat_at_peak);
    }
    free(p->phase);
    for (size_t i = 0; i < p->nstep; i++) {
        free(p->step[i].phase);
        free(p->step[i].dev);
    }
    mt_devices_free_stats(p->dev, p->ndev);
    free(p->step);
    for (size_t i = 0; p->cat_name && i < p->ncat; i++)
        free(p->cat_name[i]);
    free(p->cat_name);
    free(p->cat_peak);
    free(p->cat_at_peak);
    for (size_t i = 0; i < p->nmodule; i++)
        free(p->module[i].path);
    free(p->module);
    memset(p, 0, sizeof *p);
}
