/* See stack-table.h. Memory comes straight from the kernel (raw mmap), never
 * from malloc, so the table works inside any allocator call. */
#define UNW_LOCAL_ONLY
#include "stack-table.h"
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

#define TABLE_BITS 22
#define TABLE_SIZE (1u << TABLE_BITS)
#define TABLE_LIMIT (TABLE_SIZE / 4 * 3)
#define ARENA_BLOCK (4u << 20)
#define OWN_FRAMES_MAX 8

struct entry {
    uint64_t hash;
    uint32_t id;
    uint32_t n;
    uintptr_t ips[];
};

static _Atomic(struct entry *) *slots;
static unsigned n_entries;
static mti_lock_t insert_lock;
static uint8_t *arena, *arena_end;
static atomic_uint next_id = 1;
static uintptr_t own_lo, own_hi;

static void *raw_map(size_t len)
{
    long r = syscall(SYS_mmap, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    return (r < 0 && r > -4096) ? NULL : (void *)r;
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
    /* The old table (if any) stays mapped in a forked child: unmapping a
     * table that the parent's threads were writing is pointless here, and
     * it costs only address space. */
    slots = raw_map(sizeof(*slots) * TABLE_SIZE);
    mti_stack_thread_exit(&mti_self); /* its ids were the parent's */
    n_entries = 0;
    arena = arena_end = NULL;
    atomic_store(&insert_lock, 0);
}

static uint64_t hash_ips(const uintptr_t *ips, unsigned n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (unsigned i = 0; i < n; i++) {
        h ^= ips[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return h | 1;
}

static struct entry *lookup(uint64_t h, const uintptr_t *ips, unsigned n, uint32_t *ret_slot)
{
    uint32_t mask = TABLE_SIZE - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        struct entry *e = atomic_load_explicit(&slots[i], memory_order_acquire);
        if (!e) {
            *ret_slot = i;
            return NULL;
        }
        if (e->hash == h && e->n == n && !memcmp(e->ips, ips, n * sizeof(*ips)))
            return e;
    }
}

static struct entry *arena_alloc(unsigned n)
{
    size_t need = (sizeof(struct entry) + n * sizeof(uintptr_t) + 15) & ~(size_t)15;
    if (!arena || arena + need > arena_end) {
        arena = raw_map(ARENA_BLOCK);
        if (!arena)
            return NULL;
        arena_end = arena + ARENA_BLOCK;
    }
    struct entry *e = (struct entry *)arena;
    arena += need;
    return e;
}

/* ---- per-thread cache ------------------------------------------------- */

#define CACHE_ENTRIES 32

struct cache_entry {
    uintptr_t ra, sp;   /* key: return address into the program, its SP */
    uint32_t id;        /* 0: frames not cached (yet) */
    uint32_t last_id;   /* stack id of the last miss at this key */
    uint32_t n;
    uintptr_t ips[MT_MAX_FRAMES];
    uintptr_t slots[MT_MAX_FRAMES]; /* where ips[i] was read; slots[0] = sp-8 */
};

struct mti_stack_cache {
    struct cache_entry e[CACHE_ENTRIES];
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

static inline struct cache_entry *cache_slot(struct mti_stack_cache *c, uintptr_t ra, uintptr_t sp)
{
    uint64_t h = (ra ^ (sp * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
    return &c->e[(h >> 40) % CACHE_ENTRIES];
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

static uint32_t intern(const uintptr_t *ips, unsigned n);

uint32_t mti_stack_capture(void)
{
    if (!slots)
        return 0;
    unsigned depth = (unsigned)mti_opt.stack_depth;
    struct mti_thread *th = &mti_self;
    uintptr_t ra = 0, sp = 0;
    struct cache_entry *ce = NULL;
    if (call_site(&ra, &sp)) {
        if (!th->stack_cache)
            th->stack_cache = raw_map(sizeof(struct mti_stack_cache));
        if (th->stack_cache) {
            ce = cache_slot(th->stack_cache, ra, sp);
            if (ce->ra == ra && ce->sp == sp && ce->id) {
                unsigned i = 1;
                while (i < ce->n && *(const uintptr_t *)ce->slots[i] == ce->ips[i])
                    i++;
                if (i == ce->n)
                    return ce->id;
            }
        }
    }

    uintptr_t buf[MT_MAX_FRAMES + OWN_FRAMES_MAX];
    int got = unw_backtrace((void **)buf, (int)depth + OWN_FRAMES_MAX);
    unsigned skip = 0;
    while (skip < (unsigned)(got > 0 ? got : 0) && own_code(buf[skip]))
        skip++;
    if (got <= 0 || (unsigned)got <= skip)
        return 0;
    unsigned n = (unsigned)got - skip;
    if (n > depth)
        n = depth;
    uint32_t id = intern(buf + skip, n);
    if (!ce)
        return id;
    if (ce->ra != ra || ce->sp != sp) {
        ce->ra = ra;
        ce->sp = sp;
        ce->id = 0;
        ce->last_id = id;
        return id;
    }
    /* The same stack twice in a row at this call site and depth: a loop.
     * Only now pay for the slower unwind that notes the slots. */
    if (id == ce->last_id) {
        unsigned m = unwind_with_slots(ce->ips, ce->slots, depth);
        if (m == n && !memcmp(ce->ips, buf + skip, n * sizeof(uintptr_t)) &&
            ce->slots[0] == sp - sizeof(uintptr_t)) {
            ce->n = n;
            ce->id = id;
        }
    }
    ce->last_id = id;
    return id;
}

/* Returns the id of the frame list, writing its STACK record if new. */
static uint32_t intern(const uintptr_t *ips, unsigned n)
{
    uint64_t h = hash_ips(ips, n);
    uint32_t slot;
    struct entry *e = lookup(h, ips, n, &slot);
    if (e)
        return e->id;

    /* A new stack: make sure its code is in the module map first. */
    mti_modules_check(ips, n);

    uint32_t id;
    mti_lock(&insert_lock);
    e = lookup(h, ips, n, &slot);
    if (e) {
        mti_unlock(&insert_lock);
        return e->id;
    }
    id = atomic_fetch_add(&next_id, 1);
    if (n_entries < TABLE_LIMIT) {
        struct entry *ne = arena_alloc(n);
        if (ne) {
            ne->hash = h;
            ne->id = id;
            ne->n = n;
            memcpy(ne->ips, ips, n * sizeof(*ips));
            atomic_store_explicit(&slots[slot], ne, memory_order_release);
            n_entries++;
        }
    }
    mti_unlock(&insert_lock);
    mti_emit_stack(id, n, ips);
    return id;
}
