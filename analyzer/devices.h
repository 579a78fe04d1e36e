/* devices: GPU memory per device, from the trace's GPU records, in the
 * phases pass (phases.h), which says the current phase and step.
 *
 * Reserved bytes are what the driver handed out as device memory to the
 * program's allocator: DEVICE allocations made by the synchronous APIs
 * (cuMemAlloc, cudaMalloc: PyTorch's caching allocator takes its segments
 * this way), PHYSICAL memory (cuMemCreate: expandable segments) and what
 * stream-ordered pools hold (POOL: PyTorch's cudaMallocAsync backend).
 * Allocated bytes are per-tensor: TENSOR records when a framework sent
 * them, else the DEVICE allocations of the stream-ordered APIs
 * (cuMemAllocAsync, cudaMallocAsync: one per tensor under PyTorch's
 * cudaMallocAsync backend, whose pool reservations the driver keeps to
 * itself). `allocated_source` says which, or none. The other spaces (pinned
 * host, managed, registered, address ranges, mappings) are counted apart.
 * A GPU allocation is named by (space, device, address); a free of one
 * that is not live changes nothing.
 */
#ifndef MT_DEVICES_H
#define MT_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memtrace-format.h"
#include "reader.h"

#define MT_DEVICE_MAX 64u /* devices tracked; GPU records of others are ignored */
#define MT_CAT_MAX 64u    /* categories in all (phases.h), named ones included */

struct mt_gpu_peak {
    uint64_t bytes;
    uint64_t time_ns;
    uint64_t seq; /* 0: never reached (not current, or no such memory) */
};

enum mt_alloc_source {
    MT_ALLOCATED_NONE,   /* no per-tensor events: allocated is unknown */
    MT_ALLOCATED_TENSOR, /* TENSOR records */
    MT_ALLOCATED_ASYNC,  /* stream-ordered allocations */
};

struct mt_oom_event {
    uint64_t time_ns;
    uint64_t seq;
    uint64_t size;       /* requested */
    uint32_t api;        /* enum mt_gpu_api */
    uint32_t space;
    uint64_t result;     /* the error code returned */
    uint64_t stack_id;
    uint64_t reserved_bytes, allocated_bytes; /* live on the device then */
    uint64_t reserved_all_bytes; /* (reserved_bytes before mt_devices_finish) */
    unsigned phase;      /* index into the phases' list */
    long step;           /* index into the steps' list, -1 before any */
};

struct mt_device_stat {
    uint32_t device;
    enum mt_alloc_source allocated_source;
    bool has_reserved;       /* any reserved allocation (else reserved is unknown) */
    bool has_framework_reserved; /* ... of it by synchronous APIs */
    bool has_framework;      /* device memory from a framework's allocator
                                (its stack passes through it) was seen */
    /* Reserved counts the framework allocator's device memory when there
     * is any (what it calls reserved), else all of it (_all, folded into
     * the plain fields by mt_devices_finish). Unaccounted: device memory
     * (any API) not from the framework's allocator (libraries' workspaces,
     * NCCL); total: all device memory. */
    struct mt_gpu_peak reserved_all_peak, unaccounted_peak, total_peak;
    uint64_t reserved_all_end, unaccounted_end, total_end;
    struct mt_gpu_peak *phase_reserved_all, *phase_unaccounted;
    struct mt_gpu_peak reserved_peak, allocated_peak;
    uint64_t reserved_end, allocated_end;
    uint64_t space_peak[MT_GPU_SPACE_COUNT], space_end[MT_GPU_SPACE_COUNT];
    uint64_t alloc_count, free_count, unmatched_frees;
    struct mt_gpu_peak *phase_reserved, *phase_allocated; /* per phase */
    size_t nphase_slots;     /* length of the per-phase arrays */
    uint64_t *cat_at_peak;   /* per category, at the allocated peak (or
                                the reserved one without allocated) */
    uint64_t *cat_peak;      /* per category: most bytes live at once */
    struct mt_oom_event *oom;
    size_t noom;
};

/* One step's numbers for one device and phase. */
struct mt_step_device {
    uint32_t device;
    unsigned phase;          /* index into the phases' list */
    struct mt_gpu_peak reserved, allocated, reserved_all;
};

/* The key of a GPU allocation in the tables (space, device, address). */
static inline uint64_t mt_gpu_key(unsigned space, uint32_t device, uint64_t addr)
{
    return (addr ^ ((uint64_t)space << 58) ^ ((uint64_t)device << 50)) + 1;
}

/* What the phases pass knows when a GPU record comes. */
struct mt_gpu_ctx {
    unsigned phase;                  /* current phase index */
    uint32_t inst;                   /* phase instance */
    long step;                       /* current step index, -1: none */
    struct mt_step_device **step_dev; /* the current step's list */
    size_t *nstep_dev;
    size_t nphase_max;               /* size of the per-phase arrays */
    /* 1 when an allocation's stack passes through a framework's allocator
     * (NULL: never) */
    int (*is_framework)(uint64_t stack_id, void *arg);
    void *framework_arg;
};

/* A GPU allocation whose life ended (for its category). */
struct mt_gpu_end {
    uint64_t seq;      /* its ALLOC's seq */
    uint32_t inst;     /* phase instance it was made in */
    uint8_t phase;     /* phase it was made in */
    uint8_t tag;       /* category + 1, 0: untagged */
};

struct mt_devices {
    struct mt_device_stat *dev; /* ndev, in order of first use */
    size_t ndev;
    void *table;                /* live allocations (devices.c) */
};

void mt_devices_init(struct mt_devices *d);
/* Frees the live-allocation table; the stats (dev) stay, see
 * mt_devices_free_stats. */
void mt_devices_done(struct mt_devices *d);
void mt_devices_free_stats(struct mt_device_stat *dev, size_t n);
/* A GPU record. 1 and *end when an allocation ended (FREE of a live one),
 * 0 otherwise, or -ENOMEM. */
int mt_devices_record(struct mt_devices *d, const struct mt_record *rec, const struct mt_gpu_ctx *ctx,
                      struct mt_gpu_end *end);
/* The phase or step changed (ctx says to what): what is live counts for it. */
int mt_devices_phase(struct mt_devices *d, const struct mt_gpu_ctx *ctx, uint64_t time_ns, uint64_t seq);
/* A GPU TAG: the live TENSOR or DEVICE allocation at addr gets tag
 * (category + 1). false when none is live there. */
bool mt_devices_tag(struct mt_devices *d, uint64_t addr, uint8_t tag);
/* After the pass: a device without framework allocations reports all its
 * device memory as reserved. Step entries are the caller's: fold them
 * with mt_devices_fold_step. */
void mt_devices_finish(struct mt_devices *d);
void mt_devices_fold_step(const struct mt_devices *d, struct mt_step_device *e);
/* At the end of the pass: allocations still live, one call each. */
void mt_devices_each_live(struct mt_devices *d, void (*fn)(const struct mt_gpu_end *, void *), void *arg);
/* Whether a GPU ALLOC of this api and space counts as reserved, allocated
 * (given the device's source), or neither. */
bool mt_gpu_is_reserved(unsigned api, unsigned space);
bool mt_gpu_is_allocated(unsigned api, unsigned space, enum mt_alloc_source src);
/* Names for output: "device", "host_pinned", ...; "cuMemAlloc_v2", ...;
 * "tensor_events", "async_allocations" or NULL. */
const char *mt_gpu_space_name(unsigned space);
const char *mt_gpu_api_name(unsigned api);
const char *mt_alloc_source_name(enum mt_alloc_source src);

#endif
