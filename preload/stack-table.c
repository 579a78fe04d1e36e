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
    mti_stack_table_reset();
}

void mti_stack_table_reset(void)
{
    /* The old table (if any) stays mapped in a forked child: unmapping a
     * table that the parent's threads were writing is pointless here, and
     * it costs only address space. */
    slots = raw_map(sizeof(*slots) * TABLE_SIZE);
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

uint32_t mti_stack_capture(void)
{
    uintptr_t buf[MT_MAX_FRAMES + OWN_FRAMES_MAX];
    int got = unw_backtrace((void **)buf, (int)mti_opt.stack_depth + OWN_FRAMES_MAX);
    unsigned skip = 0;
    while (skip < (unsigned)(got > 0 ? got : 0) && buf[skip] >= own_lo && buf[skip] < own_hi)
        skip++;
    if (got <= 0 || (unsigned)got <= skip)
        return 0;
    unsigned n = (unsigned)got - skip;
    if (n > (unsigned)mti_opt.stack_depth)
        n = (unsigned)mti_opt.stack_depth;
    const uintptr_t *ips = buf + skip;
    if (!slots)
        return 0;

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
