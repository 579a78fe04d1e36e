/* See stack-table.h. Memory comes straight from the kernel (raw mmap), never
 * from malloc, so the table works inside any allocator call. */
#define UNW_LOCAL_ONLY
#include "stack-table.h"
#include "loader-lock.h"
#include "modules.h"
#include "options.h"
#include "recorder.h"

#include <dlfcn.h>
#include <libunwind.h>
#include <link.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TABLE_MIN_BITS 16
#define OWN_FRAMES_MAX 8

/* An id table maps a key (a, b) to an id: call-tree nodes are keyed by
 * (parent id, instruction pointer), whole stacks by (depth, 64-bit hash
 * of the frames). A slot is published by its id (release store), written
 * last; readers take no lock, writers hold insert_lock. Tables double at
 * three-quarters load; an outgrown table keeps its addresses (a reader may
 * still be probing it) but gives its memory back: the reader then finds
 * empty slots and retries under the lock, in the new table. */
struct id_slot {
    _Atomic uint32_t id;
    uint32_t a;
    uint64_t b;
};

struct id_table {
    uint32_t mask;
    uint32_t count;
    struct id_slot s[];
};

static _Atomic(struct id_table *) nodes, stacks;
static mti_lock_t insert_lock;
static uint32_t next_id = 1; /* guarded by insert_lock */
static uintptr_t own_lo, own_hi;

static void *raw_map(size_t len)
{
    long r = syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    return (r < 0 && r > -4096) ? NULL : (void *)r;
}

static inline uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static struct id_table *table_new(unsigned bits)
{
    struct id_table *t = raw_map(sizeof(struct id_table) + (sizeof(struct id_slot) << bits));
    if (t)
        t->mask = (1u << bits) - 1;
    return t;
}

static uint32_t table_find(const struct id_table *t, uint32_t a, uint64_t b)
{
    if (!t)
        return 0;
    for (uint32_t i = (uint32_t)mix(b ^ ((uint64_t)a << 40)) & t->mask;; i = (i + 1) & t->mask) {
        const struct id_slot *sl = &t->s[i];
        uint32_t id = atomic_load_explicit(&sl->id, memory_order_acquire);
        if (!id)
            return 0;
        if (sl->a == a && sl->b == b)
            return id;
    }
}

static void table_put(struct id_table *t, uint32_t a, uint64_t b, uint32_t id)
{
    for (uint32_t i = (uint32_t)mix(b ^ ((uint64_t)a << 40)) & t->mask;; i = (i + 1) & t->mask) {
        struct id_slot *sl = &t->s[i];
        if (!atomic_load_explicit(&sl->id, memory_order_relaxed)) {
            sl->a = a;
            sl->b = b;
            atomic_store_explicit(&sl->id, id, memory_order_release);
            t->count++;
            return;
        }
    }
}

/* With insert_lock held. Returns false when memory ran out (the caller
 * then gives up deduplication for this stack, not correctness). */
static bool table_insert(_Atomic(struct id_table *) *tp, uint32_t a, uint64_t b, uint32_t id)
{
    struct id_table *t = atomic_load_explicit(tp, memory_order_relaxed);
    if (!t)
        return false;
    if ((uint64_t)(t->count + 1) * 4 > (uint64_t)t->mask * 3) {
        unsigned bits = 0;
        while ((1u << bits) <= t->mask)
            bits++;
        struct id_table *g = table_new(bits + 1);
        if (!g)
            return false;
        for (uint32_t i = 0; i <= t->mask; i++) {
            uint32_t sid = atomic_load_explicit(&t->s[i].id, memory_order_relaxed);
            if (sid)
                table_put(g, t->s[i].a, t->s[i].b, sid);
        }
        atomic_store_explicit(tp, g, memory_order_release);
        /* Give the old table's memory back but keep its addresses: a
         * reader still probing it reads zeros, takes them for an empty
         * slot, and retries under the lock, in the new table. */
        madvise(t, sizeof(struct id_table) + sizeof(struct id_slot) * ((size_t)t->mask + 1), MADV_DONTNEED);
        t = g;
    }
    table_put(t, a, b, id);
    return true;
}

static int find_own(struct dl_phdr_info *info, size_t size, void *arg)
{
    uintptr_t self = (uintptr_t)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (self >= lo && self < hi) {
            own_lo = lo;
            own_hi = hi;
            return 1;
        }
    }
    return 0;
}

void mti_stack_table_init(void)
{
    dl_iterate_phdr(find_own, (void *)(uintptr_t)&mti_stack_capture);
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    unw_set_cache_size(unw_local_addr_space, 1u << 14, 0);
    mti_stack_table_reset();
}

void mti_stack_table_reset(void)
{
    /* In a forked child the old tables stay mapped: they cost address
     * space only, and ids in them belong to the parent's file. */
    atomic_store(&nodes, table_new(TABLE_MIN_BITS));
    atomic_store(&stacks, table_new(TABLE_MIN_BITS));
    atomic_store(&insert_lock, 0);
    mti_stack_thread_exit(&mti_self);
}

static uint64_t hash_ips(const uintptr_t *ips, unsigned n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (unsigned i = 0; i < n; i++)
        h = mix(h ^ ips[i]) + i;
    return h;
}

/* ---- per-thread cache ------------------------------------------------- */

#define CACHE_SETS 1024 /* power of two */
#define CACHE_WAYS 16
#define CACHE_ARENA_WORDS (256u << 10) /* 2 MiB: frames and slots of cached stacks */
#define SEEN_BITS (1u << 16)

/* A cached stack: its key, its id, and at `off` in the arena n frames
 * followed by the n stack slots they were read from (slot 0 = sp - 8). */
struct cache_way {
    uintptr_t ra, sp;
    uint32_t id;      /* 0: empty */
    uint32_t n;
    uint32_t off;
};

struct mti_stack_cache {
    struct cache_way set[CACHE_SETS][CACHE_WAYS];
    uint8_t next_way[CACHE_SETS];
    uint8_t last_hit[CACHE_SETS];
    /* Two bits per (call site, depth, stack): seen once, seen twice. A
     * stack is cached the third time it comes up at a key, so stacks that
     * occur once or twice (most of a program's start-up) never pay for the
     * slower unwind that notes slots. */
    uint64_t seen[SEEN_BITS / 64];
    uint64_t seen2[SEEN_BITS / 64];
    uint32_t seen_count; /* bits set since the filter was last cleared */
    uint32_t arena_used;
    /* The thread's previous new-to-the-cache stack, outermost frame first,
     * with the call-tree node of each frame: the next stack usually shares
     * its outer part, which then needs no table lookups. */
    unsigned prev_n;
    uintptr_t prev_ips[MT_MAX_FRAMES];
    uint32_t prev_nodes[MT_MAX_FRAMES];
    uintptr_t arena[CACHE_ARENA_WORDS];
};

static inline bool own_code(uintptr_t ip)
{
    return ip >= own_lo && ip < own_hi;
}

/* The return address into the program and the stack pointer it was called
 * with, found by walking memtrace's own frame pointers (the library is
 * built with them) until a return address leaves memtrace. */
static inline bool call_site(uintptr_t *ret_ra, uintptr_t *ret_sp)
{
    uintptr_t *fp = __builtin_frame_address(0);
    for (unsigned i = 0; i < OWN_FRAMES_MAX && fp; i++) {
        uintptr_t ra = fp[1];
        if (!own_code(ra)) {
            *ret_ra = ra;
            *ret_sp = (uintptr_t)(fp + 2);
            return true;
        }
        uintptr_t *next = (uintptr_t *)fp[0];
        if (next <= fp)
            return false;
        fp = next;
    }
    return false;
}

static unsigned unwind_with_slots(uintptr_t *ips, uintptr_t *slot, unsigned max);

static inline uint64_t key_hash(uintptr_t ra, uintptr_t sp)
{
    return (ra ^ (sp * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
}

static inline bool way_matches(const struct mti_stack_cache *c, const struct cache_way *w, uintptr_t ra,
                               uintptr_t sp)
{
    if (w->ra != ra || w->sp != sp || !w->id)
        return false;
    const uintptr_t *ips = c->arena + w->off, *slot = ips + w->n;
    /* Stacks that share a call site usually differ in their middle (the
     * caller's path into a common library): look there first, so a wrong
     * way costs one load rather than a walk through the common frames. */
    unsigned mid = w->n / 2;
    if (*(const uintptr_t *)slot[mid] != ips[mid])
        return false;
    unsigned i = 1;
    while (i < w->n && *(const uintptr_t *)slot[i] == ips[i])
        i++;
    return i == w->n;
}

/* Looks the call site up; returns the stack id of a way whose slots all
 * still hold its frames, or 0. */
static inline uint32_t cache_lookup(struct mti_stack_cache *c, uintptr_t ra, uintptr_t sp)
{
    unsigned si = (unsigned)(key_hash(ra, sp) >> 40) & (CACHE_SETS - 1);
    const struct cache_way *w = c->set[si];
    /* The way that hit last time first: in a loop it hits again, and the
     * scan of all ways (several cache lines) is skipped. */
    unsigned last = c->last_hit[si];
    if (way_matches(c, &w[last], ra, sp))
        return w[last].id;
    for (unsigned k = 0; k < CACHE_WAYS; k++) {
        if (k != last && way_matches(c, &w[k], ra, sp)) {
            c->last_hit[si] = (uint8_t)k;
            return w[k].id;
        }
    }
    return 0;
}

/* Called after a miss that unwound to stack `id` with frames ips[0..n). */
static void cache_learn(struct mti_stack_cache *c, uintptr_t ra, uintptr_t sp, uint32_t id,
                        const uintptr_t *ips, unsigned n)
{
    uint64_t bit = (key_hash(ra, sp) ^ ((uint64_t)id * 0xc4ceb9fe1a85ec53ull)) >> 48;
    uint64_t mask = 1ull << (bit & 63);
    if (!(c->seen[bit >> 6] & mask)) {
        /* Clear the filter before it fills up and lets everything through. */
        if (++c->seen_count > SEEN_BITS / 8) {
            memset(c->seen, 0, sizeof(c->seen));
            memset(c->seen2, 0, sizeof(c->seen2));
            c->seen_count = 0;
        }
        c->seen[bit >> 6] |= mask;
        return;
    }
    if (!(c->seen2[bit >> 6] & mask)) {
        c->seen2[bit >> 6] |= mask;
        return;
    }
    if (c->arena_used + 2 * n > CACHE_ARENA_WORDS) {
        /* Full: start over (generational flush). */
        memset(c->set, 0, sizeof(c->set));
        c->arena_used = 0;
    }
    uintptr_t *fr = c->arena + c->arena_used, *slot = fr + n;
    if (unwind_with_slots(fr, slot, n) != n || memcmp(fr, ips, n * sizeof(uintptr_t)) ||
        slot[0] != sp - sizeof(uintptr_t))
        return;
    unsigned si = (unsigned)(key_hash(ra, sp) >> 40) & (CACHE_SETS - 1);
    struct cache_way *w = &c->set[si][c->next_way[si]++ % CACHE_WAYS];
    w->ra = ra;
    w->sp = sp;
    w->n = n;
    w->off = c->arena_used;
    w->id = id;
    c->arena_used += 2 * n;
}

/* Full unwind that also notes where each return address lives. Returns the
 * number of program frames written to ips/slots. */
static unsigned unwind_with_slots(uintptr_t *ips, uintptr_t *slot, unsigned max)
{
    unw_context_t ctx;
    unw_cursor_t cur;
    if (unw_getcontext(&ctx) < 0 || unw_init_local(&cur, &ctx) < 0)
        return 0;
    unsigned n = 0;
    bool in_program = false;
    while (n < max && unw_step(&cur) > 0) {
        unw_word_t ip, sp;
        if (unw_get_reg(&cur, UNW_REG_IP, &ip) < 0 || unw_get_reg(&cur, UNW_REG_SP, &sp) < 0 || !ip)
            break;
        if (!in_program && own_code(ip))
            continue;
        in_program = true;
        ips[n] = ip;
        slot[n] = sp - sizeof(uintptr_t);
        n++;
    }
    return n;
}

void mti_stack_thread_exit(struct mti_thread *th)
{
    if (th->stack_cache) {
        syscall(SYS_munmap, th->stack_cache, sizeof(struct mti_stack_cache));
        th->stack_cache = NULL;
    }
}

/* ---- capture ------------------------------------------------------------ */

static uint32_t intern(struct mti_stack_cache *c, const uintptr_t *ips, unsigned n);

uint32_t mti_stack_capture(void)
{
    unsigned depth = (unsigned)mti_opt.stack_depth;
    struct mti_thread *th = &mti_self;
    uintptr_t ra = 0, sp = 0;
    struct mti_stack_cache *c = NULL;
    if (call_site(&ra, &sp)) {
        if (!th->stack_cache)
            th->stack_cache = raw_map(sizeof(struct mti_stack_cache));
        c = th->stack_cache;
        if (c) {
            uint32_t id = cache_lookup(c, ra, sp);
            if (id)
                return id;
        }
    }

    /* libunwind may call dl_iterate_phdr: pass the fork gate. */
    if (!mti_loader_enter())
        return 0;
    uintptr_t buf[MT_MAX_FRAMES + OWN_FRAMES_MAX];
    int got = unw_backtrace((void **)buf, (int)depth + OWN_FRAMES_MAX);
    unsigned skip = 0;
    while (skip < (unsigned)(got > 0 ? got : 0) && own_code(buf[skip]))
        skip++;
    uint32_t id = 0;
    if (got > 0 && (unsigned)got > skip) {
        unsigned n = (unsigned)got - skip;
        if (n > depth)
            n = depth;
        id = intern(th->stack_cache, buf + skip, n);
        if (c && buf[skip] == ra)
            cache_learn(c, ra, sp, id, buf + skip, n);
    }
    mti_loader_leave();
    return id;
}

/* Returns the node id of the frame list, writing STACK records for the
 * nodes that are new. Whole stacks are found by a 64-bit hash of their
 * frames and their depth (two different stacks would have to collide in
 * both to be confused; with a million stacks the odds are about 1e-8). */
static uint32_t intern(struct mti_stack_cache *c, const uintptr_t *ips, unsigned n)
{
    uint64_t h = hash_ips(ips, n);
    uint32_t id = table_find(atomic_load_explicit(&stacks, memory_order_acquire), n, h);
    if (id)
        return id;

    /* Walk the call tree from the outermost frame: first along the part
     * shared with this thread's previous stack, then through the table;
     * only the part of the path that does not exist yet needs the lock. */
    uint32_t parent = 0;
    uint32_t path[MT_MAX_FRAMES]; /* node of frame n-1-k at k */
    int i = (int)n - 1;
    if (c) {
        while ((unsigned)(n - 1 - i) < c->prev_n && i >= 0 && c->prev_ips[n - 1 - i] == ips[i]) {
            parent = path[n - 1 - i] = c->prev_nodes[n - 1 - i];
            i--;
        }
    }
    for (; i >= 0; i--) {
        uint32_t found = table_find(atomic_load_explicit(&nodes, memory_order_acquire), parent, ips[i]);
        if (!found)
            break;
        parent = path[n - 1 - i] = found;
    }
    /* Frames new to the tree: make sure their code is in the module map
     * before their STACK records are written. */
    if (i >= 0)
        mti_modules_check(ips, (unsigned)i + 1);
    struct {
        uint32_t id, parent;
        uintptr_t ip;
    } fresh[MT_MAX_FRAMES];
    unsigned n_fresh = 0;
    mti_lock(&insert_lock);
    for (; i >= 0; i--) {
        uint32_t node = table_find(atomic_load_explicit(&nodes, memory_order_relaxed), parent, ips[i]);
        if (!node) {
            node = next_id++;
            table_insert(&nodes, parent, ips[i], node);
            fresh[n_fresh].id = node;
            fresh[n_fresh].parent = parent;
            fresh[n_fresh].ip = ips[i];
            n_fresh++;
        }
        parent = path[n - 1 - i] = node;
    }
    if (!table_find(atomic_load_explicit(&stacks, memory_order_relaxed), n, h))
        table_insert(&stacks, n, h, parent);
    mti_unlock(&insert_lock);
    for (unsigned k = 0; k < n_fresh; k++)
        mti_emit_stack(fresh[k].id, fresh[k].parent, fresh[k].ip);
    if (c) {
        for (unsigned k = 0; k < n; k++) {
            c->prev_ips[k] = ips[n - 1 - k];
            c->prev_nodes[k] = path[k];
        }
        c->prev_n = n;
    }
    return parent;
}
