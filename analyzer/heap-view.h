/* heap-view: what the pictures (flamegraph.h, timeline.h) show of a trace,
 * computed in three streaming passes with bounded memory.
 *
 *  A. One pass of its own: the call tree and the heap totals (sites.h), the
 *     module map (for symbolize.h), the heap peak and the seq of the event
 *     that first reached it, and a time grid of at most MT_VIEW_BUCKETS
 *     buckets (widths doubling as the run gets longer, as sites.h's
 *     timeline): per bucket the most heap bytes live and the seq of the
 *     event that reached that (or, in a bucket without heap events, the
 *     level carried in and the seq of the last event before), the largest
 *     RSS sample, and per GPU (the first MT_VIEW_GPUS devices) the most
 *     reserved and allocated bytes (devices.h's definitions, reserved being
 *     all device memory from the synchronous APIs and physical memory).
 *  B. phases.h's two passes with its observer: each heap block's phase and
 *     category arrive when its life is over, with its allocation and end
 *     seqs. A block is live "after seq s" when alloc <= s < end, so:
 *       - per (stack, phase): allocations, bytes, bytes and blocks live at
 *         the heap peak, bytes and blocks live at the end (leaks);
 *       - per bucket and category: bytes live at the bucket's sample seq,
 *         added over the run of buckets whose sample lies in the block's
 *         life (a difference array, so O(log buckets) per block). The
 *         categories of a bucket therefore add up exactly to its heap
 *         value.
 *     Phase changes and steps come from the same observer: per bucket the
 *     phase current longest in it and the first step that began in it, and
 *     the first MT_VIEW_SLICES phase and step slices exactly.
 *
 * Memory: sites.h's (a live block, a call-tree node, a site each), phases.h's
 * (a live block, one byte per seq), one entry per (stack, phase) pair, the
 * grid (a few MiB at most). Output built from it is bounded by the grid and
 * by the call tree, never by the number of events.
 *
 * Not thread-safe; mt_view_destroy accepts NULL.
 */
#ifndef MT_HEAP_VIEW_H
#define MT_HEAP_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mt-error.h"
#include "phases.h"
#include "sites.h"
#include "symbolize.h"

#define MT_VIEW_BUCKETS 1024u
#define MT_VIEW_GPUS 8u
#define MT_VIEW_SLICES 20000u

/* Series of the grid: heap, RSS, then per GPU reserved and allocated (by
 * TENSOR records, by stream-ordered allocations: the device's allocated is
 * the first it has). */
enum { MT_SER_HEAP, MT_SER_RSS, MT_SER_GPU0 };
#define MT_SER_PER_GPU 3u
#define MT_VIEW_SERIES (MT_SER_GPU0 + MT_VIEW_GPUS * MT_SER_PER_GPU)

struct mt_view_bucket {
    uint64_t v[MT_VIEW_SERIES]; /* most of each series in the bucket */
    uint64_t heap_seq;          /* the heap value is the live set after it */
};

/* Per (stack, phase): the flamegraph's numbers. */
struct mt_view_site {
    uint64_t key;         /* stack id << 6 | phase (internal) */
    uint64_t stack_id;
    uint64_t alloc_count, alloc_bytes;
    uint64_t peak_count, peak_bytes;
    uint64_t leak_count, leak_bytes;
    unsigned phase;
};

struct mt_view_slice {
    uint64_t start_ns, end_ns;
    uint64_t value;       /* phase index, or step as marked */
    bool step;
};

struct mt_view_gpu {
    uint32_t device;
    bool has_reserved, has_tensor, has_async;
};

struct mt_view {
    /* the trace */
    char *comm;           /* basename of the PROCESS exe, or "memtrace" */
    uint32_t pid;
    uint64_t end_ns;      /* latest time */
    bool partial;         /* truncated trace */
    /* heap */
    uint64_t peak_bytes, peak_seq, peak_time_ns;
    uint64_t alloc_count, alloc_bytes, end_bytes, end_count;
    /* grid: bucket i covers [i << shift, (i + 1) << shift) ns */
    struct mt_view_bucket *b;
    unsigned nbuckets, shift;
    struct mt_view_gpu gpu[MT_VIEW_GPUS];
    unsigned ngpu;
    /* per category (phases.cat_name) and bucket: bytes live at heap_seq */
    uint64_t *cat_live;   /* [cat * MT_VIEW_BUCKETS + i] */
    uint8_t *band;        /* per bucket: the phase current longest */
    uint64_t *step_at;    /* per bucket: first step begun in it + 1, 0: none */
    uint64_t steps;       /* STEP markers */
    struct mt_view_slice *slice; /* phase (not "other") and step slices */
    size_t nslice;
    bool slices_cut;      /* more than MT_VIEW_SLICES */
    /* (stack, phase) pairs with allocations */
    struct mt_view_site *site;
    size_t nsite;
    struct mt_phases phases; /* names of phases and categories, peaks */
    struct mt_sites sites;   /* the call tree */
    struct mt_symbolizer *sym; /* NULL without symbols */
    void *internal;
};

struct mt_view_opts {
    bool no_symbols;
};

/* Runs the passes over path. 0 and *out, or a negative errno-style code
 * and err (the reader's message, or out of memory). */
int mt_view_compute(const char *path, const struct mt_view_opts *opts, struct mt_view **out,
                    struct mt_error *err);
void mt_view_destroy(struct mt_view *v);

/* One frame of a stack, as drawn. */
struct mt_view_frame {
    const char *name;     /* function, or "[module+0xOFF]", "[0xIP]" */
    const char *file;     /* NULL: unknown */
    unsigned line;
    bool inlined;
};

/* The frames of stack_id, outermost first, allocator frames at the
 * innermost end left out (all kept if nothing else is left), inlined
 * calls expanded; at most max. Strings live as long as v. Returns how many
 * (a stack without frames gives one frame "[no stack]"), or -ENOMEM. */
int mt_view_frames(struct mt_view *v, uint64_t stack_id, struct mt_view_frame *out, unsigned max);

/* Interns s in v's string pool: the same pointer for the same text, or
 * NULL when out of memory. */
const char *mt_view_intern(struct mt_view *v, const char *s);

/* The colour of phase p in every picture (0xRRGGBB): "other" grey, then
 * distinct hues in order of first use; the same for category c. */
uint32_t mt_view_phase_rgb(unsigned p);
uint32_t mt_view_category_rgb(unsigned c);

/* The bucket's start time. */
static inline uint64_t mt_view_bucket_ns(const struct mt_view *v, unsigned i)
{
    return (uint64_t)i << v->shift;
}

#endif
