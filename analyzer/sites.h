/* sites: the heap seen per allocation site, computed in the report's single
 * streaming pass.
 *
 * A site is a call-tree node (the stack id of an allocation; 0 = no stack).
 * The module takes the normalized heap events in merged order (ALLOC with
 * its block, FREE naming a block or 0), the call-tree nodes (STACK) and the
 * RSS samples, and keeps:
 *
 *   - the heap totals: live bytes now, the peak and when it was first
 *     reached, allocation and free counts (the report's host.* numbers);
 *   - per site: allocations (count, bytes), bytes and blocks live at the
 *     global heap peak, live at the end (leaks), temporaries (count, bytes);
 *   - temporaries overall: an allocation freed by the thread that made it,
 *     with no other allocation or free by that thread in between (an
 *     IMPLICIT free is not the program's and does not count);
 *   - a histogram of allocation sizes in power-of-two buckets;
 *   - a timeline of MT_TIMELINE_BUCKETS buckets over the run, each with the
 *     most heap bytes live and the largest RSS sample inside it;
 *   - the call tree, node id -> (parent, return address), for walking a
 *     site's frames after the pass (nodes may be defined after their use).
 *
 * Bytes live at the peak are exact at no per-event cost beyond a compare:
 * a global epoch goes up each time the live total passes its maximum; a
 * site whose own epoch is older, about to change its live bytes, first
 * copies them to its at-peak bytes (they have not changed since that peak)
 * and takes the current epoch; mt_sites_finish does the same for all.
 *
 * The timeline starts with 1 ns buckets and, when an event lies past the
 * last bucket, merges neighbours pairwise (doubling the width) until it
 * fits, so it covers any run with between 32 and 64 buckets in use (fewer
 * for runs under 64 ns). A bucket's heap value is the maximum live at any
 * event in it or carried in from the bucket before; its RSS value the
 * largest sample in it, else the last one before it (none before the first
 * sample).
 *
 * Live blocks are found by id: the young ones (among the last
 * MT_SITES_WINDOW ids) in a direct-mapped window, the others in a hash
 * table; a free of a young block costs a load and a compare, with no probe
 * sequence to mispredict.
 *
 * Memory: 24 bytes per live block and per call-tree node in hash tables at
 * most 70% full, plus the window of young blocks (1.5 MiB, allocated at the
 * first allocation), a site record (88 bytes, plus an index entry) per
 * distinct allocating stack, 16 bytes per thread; no allocation per event
 * except when a table grows.
 * Not thread-safe; one owner. mt_sites_destroy accepts NULL.
 */
#ifndef MT_SITES_H
#define MT_SITES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "live-table.h"

/* Open-addressing table of 24-byte entries (the scheme of live-table.h),
 * used for blocks (key block, a size, b site index), call-tree nodes (key
 * id, a parent, b ip) and the site index (key stack id, a site index). */
struct mt_wide_entry {
    uint64_t key;
    uint64_t a;
    uint64_t b;
};

struct mt_wide_table {
    struct mt_wide_entry *slots;
    size_t mask;
    size_t count;
    unsigned shift;
    bool has_zero;
    struct mt_wide_entry zero;
};

struct mt_site {
    uint64_t stack_id;
    uint64_t alloc_count;
    uint64_t alloc_bytes;
    uint64_t live_count;   /* now; after mt_sites_finish: live at the end */
    uint64_t live_bytes;
    uint64_t peak_count;   /* live at the global heap peak (after finish) */
    uint64_t peak_bytes;
    uint64_t temp_count;   /* temporaries (see above) */
    uint64_t temp_bytes;
    uint64_t free_count;   /* blocks of this site freed */
    uint64_t epoch;        /* internal: the peak epoch peak_* belongs to */
};

/* Young blocks: a live block whose id (seq) is among the last
 * MT_SITES_WINDOW ids sits in a direct-mapped window, found without a hash
 * probe; a block still live when a newer id needs its slot moves to the
 * hash table. Most blocks are freed young. */
#define MT_SITES_WINDOW (1u << 16)
#define MT_SITES_CACHE 64

/* Size bucket k: size 0 for k = 0, else [2^(k-1), 2^k - 1]. */
#define MT_SIZE_BUCKETS 65

struct mt_size_bucket {
    uint64_t count;
    uint64_t bytes;
};

#define MT_TIMELINE_BUCKETS 64

struct mt_timeline_bucket {
    uint64_t heap_bytes; /* most heap bytes live in the bucket */
    uint64_t rss_bytes;  /* largest RSS sample in it, or the last before */
    bool has_rss;        /* false: no sample at or before the bucket */
};

struct mt_sites {
    /* heap totals (read-only for users) */
    uint64_t live_bytes;
    uint64_t live_count;
    uint64_t peak_bytes;
    uint64_t peak_time_ns;
    uint64_t alloc_count;
    uint64_t alloc_bytes;
    uint64_t free_count;      /* frees that released a live block */
    uint64_t unmatched_frees; /* frees (not IMPLICIT) of no live block */
    uint64_t implicit_frees;  /* IMPLICIT frees */
    uint64_t temp_count;
    uint64_t temp_bytes;
    struct mt_size_bucket sizes[MT_SIZE_BUCKETS];
    /* timeline: bucket i covers [i << tl_shift, (i + 1) << tl_shift) ns;
     * after mt_sites_finish, tl_used buckets cover [0, end]. */
    struct mt_timeline_bucket timeline[MT_TIMELINE_BUCKETS];
    unsigned tl_shift;
    unsigned tl_used;
    /* sites, in order of first allocation */
    struct mt_site *sites;
    size_t nsites;
    /* internal */
    size_t cap_sites;
    uint64_t epoch;
    uint64_t tl_heap_last;    /* last bucket the heap value was carried to */
    uint64_t tl_rss_last;     /* last bucket the RSS value was carried to */
    uint64_t rss_now;
    bool have_rss;
    bool have_heap_event;
    uint32_t cur_tid;         /* the thread whose last block is cur_last */
    bool have_cur_tid;
    uint64_t cur_last;        /* block allocated by cur_tid's last heap event, 0 if
                                 that was a free */
    struct mt_live_table threads; /* tid -> last block, for threads not cur_tid */
    struct mt_wide_entry *young;  /* MT_SITES_WINDOW slots: block b at b % size */
    uint64_t max_block;           /* largest block id allocated so far */
    struct mt_wide_table blocks;  /* live blocks not in young */
    struct mt_wide_table site_index;
    struct mt_wide_table nodes;
    uint64_t node_count;
    struct {                  /* direct-mapped cache of the site index by */
        uint64_t stack_id;    /* stack id; site is UINT32_MAX in an */
        uint32_t site;        /* empty entry */
    } site_cache[MT_SITES_CACHE];
};

void mt_sites_init(struct mt_sites *s);
void mt_sites_destroy(struct mt_sites *s);

/* An allocation: block (its seq), requested size, stack id, thread, time.
 * A block that is still live (a damaged trace) is dropped first. 0 or
 * -ENOMEM (nothing changed). */
int mt_sites_alloc(struct mt_sites *s, uint64_t block, uint64_t size, uint64_t stack_id,
                   uint32_t tid, uint64_t time_ns);

/* A free of block (0: unknown) by tid at time_ns; implicit: the reader's
 * IMPLICIT free. Returns 1 if it released a live block (its size in *size
 * when size is non-NULL), 0 if not. */
int mt_sites_free(struct mt_sites *s, uint64_t block, uint32_t tid, uint64_t time_ns, bool implicit,
                  uint64_t *size);

/* A call-tree node (a later definition of the same id replaces it). 0 or
 * -ENOMEM. */
int mt_sites_node(struct mt_sites *s, uint64_t id, uint64_t parent, uint64_t ip);

/* An RSS sample (kind SAMPLE). */
void mt_sites_rss(struct mt_sites *s, uint64_t time_ns, uint64_t bytes);

/* Ends the pass at end_ns (the latest time of the trace): settles the
 * at-peak numbers of every site and completes the timeline. */
void mt_sites_finish(struct mt_sites *s, uint64_t end_ns);

/* The frames of stack_id, innermost first: up to max return addresses
 * (stopping at the root, at an undefined node, or after MT_MAX_FRAMES).
 * Returns how many. */
unsigned mt_sites_frames(const struct mt_sites *s, uint64_t stack_id, uint64_t *ips, unsigned max);

/* Index of stack_id's site, or -1. */
long mt_sites_find(const struct mt_sites *s, uint64_t stack_id);

/* Bucket bounds. */
static inline uint64_t mt_size_bucket_min(unsigned k)
{
    return k == 0 ? 0 : (uint64_t)1 << (k - 1);
}

static inline uint64_t mt_size_bucket_max(unsigned k)
{
    return k == 0 ? 0 : k == 64 ? UINT64_MAX : ((uint64_t)1 << k) - 1;
}

#endif /* MT_SITES_H */
