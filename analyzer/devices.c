/* devices: per-device GPU numbers (see devices.h for the definitions).
 *
 * One table holds every live GPU allocation, keyed by mt_gpu_key(space,
 * device, address), with what it counted for (reserved, allocated), its
 * phase and instance of birth and its tag, so a free undoes exactly what
 * its allocation did. Device stats live in a small array in order of first
 * use; per phase and per step peaks are kept like the host's (phases.c):
 * what is live when a phase becomes current counts for it.
 */
#include "devices.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct mt_gpu_block {
    uint64_t key;
    uint64_t size;
    uint64_t seq;
    uint32_t inst;
    uint16_t dev;      /* index into d->dev */
    uint8_t phase;
    uint8_t tag;
    uint8_t space;
    bool reserved, allocated;
    bool framework, device_mem;
};

struct gb_table {
    struct mt_gpu_block *slots;
    size_t mask;
    size_t count;
    unsigned shift;
    bool has_zero;
    struct mt_gpu_block zero;
};

#define HT_PREFIX gb
#define HT_TABLE struct gb_table
#define HT_ENTRY struct mt_gpu_block
#define HT_MIN_BITS 8
#include "hash-table.h"

bool mt_gpu_is_reserved(unsigned api, unsigned space)
{
    if (space == MT_GPU_SPACE_PHYSICAL || space == MT_GPU_SPACE_POOL)
        return true;
    return space == MT_GPU_SPACE_DEVICE && api != MT_GPU_API_MEM_ALLOC_ASYNC &&
           api != MT_GPU_API_MEM_ALLOC_FROM_POOL_ASYNC && api != MT_GPU_API_CUDA_MALLOC_ASYNC;
}

bool mt_gpu_is_allocated(unsigned api, unsigned space, enum mt_alloc_source src)
{
    if (space == MT_GPU_SPACE_TENSOR)
        return true;
    return src != MT_ALLOCATED_TENSOR && space == MT_GPU_SPACE_DEVICE && !mt_gpu_is_reserved(api, space);
}

void mt_devices_init(struct mt_devices *d)
{
    memset(d, 0, sizeof *d);
}

void mt_devices_done(struct mt_devices *d)
{
    if (d->table) {
        gb_destroy(d->table);
        free(d->table);
        d->table = NULL;
    }
}

void mt_devices_free_stats(struct mt_device_stat *dev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(dev[i].phase_reserved);
        free(dev[i].phase_allocated);
        free(dev[i].phase_reserved_all);
        free(dev[i].phase_unaccounted);
        free(dev[i].cat_at_peak);
        free(dev[i].cat_peak);
        free(dev[i].oom);
    }
    free(dev);
}

/* The index of device, adding it; -1 when full, -ENOMEM. */
static int device_index(struct mt_devices *d, uint32_t device, size_t nphase)
{
    for (size_t i = 0; i < d->ndev; i++)
        if (d->dev[i].device == device)
            return (int)i;
    if (d->ndev == MT_DEVICE_MAX)
        return -1;
    if (!d->dev && !(d->dev = calloc(MT_DEVICE_MAX, sizeof *d->dev)))
        return -ENOMEM;
    struct mt_device_stat *s = &d->dev[d->ndev];
    *s = (struct mt_device_stat){ .device = device, .nphase_slots = nphase };
    s->phase_reserved = calloc(nphase, sizeof *s->phase_reserved);
    s->phase_allocated = calloc(nphase, sizeof *s->phase_allocated);
    s->phase_reserved_all = calloc(nphase, sizeof *s->phase_reserved_all);
    s->phase_unaccounted = calloc(nphase, sizeof *s->phase_unaccounted);
    s->cat_at_peak = calloc(MT_CAT_MAX, sizeof *s->cat_at_peak);
    s->cat_peak = calloc(MT_CAT_MAX, sizeof *s->cat_peak);
    if (!s->phase_reserved || !s->phase_allocated || !s->phase_reserved_all || !s->phase_unaccounted ||
        !s->cat_at_peak || !s->cat_peak) {
        free(s->phase_reserved);
        free(s->phase_allocated);
        free(s->phase_reserved_all);
        free(s->phase_unaccounted);
        free(s->cat_at_peak);
        free(s->cat_peak);
        return -ENOMEM;
    }
    return (int)d->ndev++;
}

static void gpu_peak(struct mt_gpu_peak *p, uint64_t v, uint64_t t, uint64_t seq)
{
    if (v > p->bytes || p->seq == 0) {
        p->bytes = v;
        p->time_ns = t;
        p->seq = seq;
    }
}

/* The current step's entry for (device, phase), added when missing. */
static struct mt_step_device *step_entry(const struct mt_gpu_ctx *c, uint32_t device)
{
    if (c->step < 0 || !c->step_dev)
        return NULL;
    for (size_t i = 0; i < *c->nstep_dev; i++)
        if ((*c->step_dev)[i].device == device && (*c->step_dev)[i].phase == c->phase)
            return &(*c->step_dev)[i];
    size_t n = *c->nstep_dev;
    if ((n & (n - 1)) == 0) { /* 0, 1, 2, 4, ...: grow to the next power of two */
        struct mt_step_device *a = realloc(*c->step_dev, (n ? 2 * n : 1) * sizeof *a);
        if (!a)
            return NULL; /* a step entry lost to memory: the pass goes on */
        *c->step_dev = a;
    }
    (*c->step_dev)[n] = (struct mt_step_device){ .device = device, .phase = c->phase };
    *c->nstep_dev = n + 1;
    return &(*c->step_dev)[n];
}

/* After a change on device s (or of the phase): every peak that can move. */
static void device_peaks(struct mt_device_stat *s, const struct mt_gpu_ctx *c, uint64_t t, uint64_t seq)
{
    gpu_peak(&s->reserved_peak, s->reserved_end, t, seq);
    gpu_peak(&s->phase_reserved[c->phase], s->reserved_end, t, seq);
    gpu_peak(&s->reserved_all_peak, s->reserved_all_end, t, seq);
    gpu_peak(&s->phase_reserved_all[c->phase], s->reserved_all_end, t, seq);
    gpu_peak(&s->unaccounted_peak, s->unaccounted_end, t, seq);
    gpu_peak(&s->phase_unaccounted[c->phase], s->unaccounted_end, t, seq);
    gpu_peak(&s->total_peak, s->total_end, t, seq);
    if (s->allocated_source != MT_ALLOCATED_NONE) {
        gpu_peak(&s->allocated_peak, s->allocated_end, t, seq);
        gpu_peak(&s->phase_allocated[c->phase], s->allocated_end, t, seq);
    }
    struct mt_step_device *e = step_entry(c, s->device);
    if (e) {
        gpu_peak(&e->reserved, s->reserved_end, t, seq);
        gpu_peak(&e->reserved_all, s->reserved_all_end, t, seq);
        if (s->allocated_source != MT_ALLOCATED_NONE)
            gpu_peak(&e->allocated, s->allocated_end, t, seq);
    }
}

int mt_devices_phase(struct mt_devices *d, const struct mt_gpu_ctx *ctx, uint64_t time_ns, uint64_t seq)
{
    for (size_t i = 0; i < d->ndev; i++)
        device_peaks(&d->dev[i], ctx, time_ns, seq);
    return 0;
}

static int add_oom(struct mt_device_stat *s, const struct mt_record *rec, const struct mt_gpu_ctx *c)
{
    size_t n = s->noom;
    if ((n & (n - 1)) == 0) {
        struct mt_oom_event *a = realloc(s->oom, (n ? 2 * n : 1) * sizeof *a);
        if (!a)
            return -ENOMEM;
        s->oom = a;
    }
    s->oom[n] = (struct mt_oom_event){
        .time_ns = rec->time_ns, .seq = rec->seq, .size = rec->size, .api = rec->api,
        .space = rec->space, .result = rec->result, .stack_id = rec->stack_id,
        .reserved_bytes = s->reserved_end, .reserved_all_bytes = s->reserved_all_end,
        .allocated_bytes = s->allocated_end,
        .phase = c->phase, .step = c->step,
    };
    s->noom = n + 1;
    return 0;
}

/* What an allocation adds to its device's counters, and takes away. */
static void put_in(struct mt_device_stat *s, const struct mt_gpu_block *b)
{
    s->space_end[b->space] += b->size;
    if (s->space_end[b->space] > s->space_peak[b->space])
        s->space_peak[b->space] = s->space_end[b->space];
    if (b->reserved) {
        s->reserved_all_end += b->size;
        s->has_reserved = true;
        if (b->framework) {
            s->reserved_end += b->size;
            s->has_framework_reserved = true;
        }
    }
    if (b->allocated)
        s->allocated_end += b->size;
    if (b->device_mem) {
        s->total_end += b->size;
        if (!b->framework)
            s->unaccounted_end += b->size;
    }
}

static void take_out(struct mt_device_stat *s, const struct mt_gpu_block *b)
{
    s->space_end[b->space] -= b->size;
    if (b->reserved) {
        s->reserved_all_end -= b->size;
        if (b->framework)
            s->reserved_end -= b->size;
    }
    if (b->allocated)
        s->allocated_end -= b->size;
    if (b->device_mem) {
        s->total_end -= b->size;
        if (!b->framework)
            s->unaccounted_end -= b->size;
    }
}

void mt_devices_finish(struct mt_devices *d)
{
    for (size_t i = 0; i < d->ndev; i++) {
        struct mt_device_stat *s = &d->dev[i];
        if (s->has_framework) {
            /* Reserved is the framework's own; none (its cudaMallocAsync
             * backend keeps reservations in the driver's pool): unknown. */
            s->has_reserved = s->has_framework_reserved;
            continue;
        }
        s->reserved_peak = s->reserved_all_peak;
        s->reserved_end = s->reserved_all_end;
        for (size_t k = 0; k < s->noom; k++)
            s->oom[k].reserved_bytes = s->oom[k].reserved_all_bytes;
        memcpy(s->phase_reserved, s->phase_reserved_all, s->nphase_slots * sizeof *s->phase_reserved);
    }
}

void mt_devices_fold_step(const struct mt_devices *d, struct mt_step_device *e)
{
    for (size_t i = 0; i < d->ndev; i++)
        if (d->dev[i].device == e->device && !d->dev[i].has_framework)
            e->reserved = e->reserved_all;
}

int mt_devices_record(struct mt_devices *d, const struct mt_record *rec, const struct mt_gpu_ctx *ctx,
                      struct mt_gpu_end *end)
{
    if (!d->table) {
        if (!(d->table = malloc(sizeof(struct gb_table))))
            return -ENOMEM;
        gb_init(d->table);
    }
    int di = device_index(d, rec->device, ctx->nphase_max);
    if (di < 0)
        return di == -1 ? 0 : di;
    struct mt_device_stat *s = &d->dev[di];
    if (rec->kind == MT_GPU_OOM)
        return add_oom(s, rec, ctx);
    uint64_t key = mt_gpu_key(rec->space, rec->device, rec->addr);
    if (rec->kind == MT_GPU_ALLOC) {
        if (rec->space == MT_GPU_SPACE_TENSOR)
            s->allocated_source = MT_ALLOCATED_TENSOR;
        else if (s->allocated_source == MT_ALLOCATED_NONE && mt_gpu_is_allocated(rec->api, rec->space, s->allocated_source))
            s->allocated_source = MT_ALLOCATED_ASYNC;
        struct mt_gpu_block b = {
            .key = key, .size = rec->size, .seq = rec->seq, .inst = ctx->inst, .dev = (uint16_t)di,
            .phase = (uint8_t)ctx->phase, .space = (uint8_t)rec->space,
            .reserved = mt_gpu_is_reserved(rec->api, rec->space),
            .allocated = mt_gpu_is_allocated(rec->api, rec->space, s->allocated_source),
        }, old;
        /* Device memory: what the driver reserved for the program (stream-
         * ordered allocations live inside their pool's reservation). */
        b.device_mem = b.reserved;
        b.framework = b.device_mem && ctx->is_framework && ctx->is_framework(rec->stack_id, ctx->framework_arg) == 1;
        int rc = gb_insert(d->table, &b, &old);
        if (rc < 0)
            return rc;
        if (rc == 1) /* allocated again without a free: the old one ends */
            take_out(s, &old);
        s->alloc_count++;
        if (b.framework)
            s->has_framework = true;
        put_in(s, &b);
        device_peaks(s, ctx, rec->time_ns, rec->seq);
        return 0;
    }
    struct mt_gpu_block b;
    if (!gb_remove(d->table, key, &b)) {
        s->unmatched_frees++;
        return 0;
    }
    s->free_count++;
    take_out(s, &b);
    *end = (struct mt_gpu_end){ .seq = b.seq, .inst = b.inst, .phase = b.phase, .tag = b.tag };
    return 1;
}

bool mt_devices_tag(struct mt_devices *d, uint64_t addr, uint8_t tag)
{
    if (!d->table)
        return false;
    static const unsigned spaces[] = { MT_GPU_SPACE_TENSOR, MT_GPU_SPACE_DEVICE };
    for (size_t i = 0; i < d->ndev; i++) {
        for (size_t k = 0; k < 2; k++) {
            struct mt_gpu_block *b = gb_find(d->table, mt_gpu_key(spaces[k], d->dev[i].device, addr));
            if (b) {
                b->tag = tag;
                return true;
            }
        }
    }
    return false;
}

void mt_devices_each_live(struct mt_devices *d, void (*fn)(const struct mt_gpu_end *, void *), void *arg)
{
    struct gb_table *t = d->table;
    for (size_t i = 0; t && t->slots && i <= t->mask; i++) {
        const struct mt_gpu_block *b = &t->slots[i];
        if (b->key) {
            struct mt_gpu_end e = { .seq = b->seq, .inst = b->inst, .phase = b->phase, .tag = b->tag };
            fn(&e, arg);
        }
    }
}

const char *mt_gpu_space_name(unsigned space)
{
    static const char *const names[MT_GPU_SPACE_COUNT] = {
        "device", "host_pinned", "managed", "registered", "address_range", "physical", "mapped", "tensor",
        "pool",
    };
    return space < MT_GPU_SPACE_COUNT ? names[space] : "unknown";
}

const char *mt_gpu_api_name(unsigned api)
{
    static const char *const names[MT_GPU_API_COUNT] = {
        "other", "cuMemAlloc_v2", "cuMemAllocPitch_v2", "cuMemFree_v2", "cuMemAllocManaged",
        "cuMemHostAlloc", "cuMemAllocHost_v2", "cuMemFreeHost", "cuMemHostRegister",
        "cuMemHostUnregister", "cuMemAddressReserve", "cuMemAddressFree", "cuMemCreate",
        "cuMemRelease", "cuMemMap", "cuMemUnmap", "cuMemAllocAsync", "cuMemFreeAsync",
        "cuMemAllocFromPoolAsync", "cudaMalloc", "cudaFree", "cudaMallocAsync", "cudaFreeAsync",
        "cudaMallocManaged", "cudaMallocHost", "cudaHostAlloc", "cudaFreeHost", "cudaMallocPitch",
        "torch", "cuMemPoolGetAttribute",
    };
    return api < MT_GPU_API_COUNT ? names[api] : "unknown";
}

const char *mt_alloc_source_name(enum mt_alloc_source src)
{
    return src == MT_ALLOCATED_TENSOR ? "tensor_events" : src == MT_ALLOCATED_ASYNC ? "async_allocations" : NULL;
}
