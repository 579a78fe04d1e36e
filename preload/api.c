/* api: the entry points of include/memtrace.h, turned into MARK and GPU
 * records.
 *
 * Design. A program finds them through one exported symbol,
 * memtrace_api_get, which hands out a table of functions (so the set can
 * grow without new exports). Every marker is an event: it takes a seq like
 * an allocation does, which is what makes phases process-wide in the
 * reader's merged order. Names travel once per process as STRING records:
 * the intern table maps a name to its id under a spin lock (markers are
 * rare next to allocations: a few per module call at most), and the thread
 * that adds a name writes its STRING just before the record that first
 * uses it, so the definition always comes first in merged order. A forked
 * child writes a trace of its own and starts the table afresh.
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "memtrace.h"
#include "recorder.h"
#include "stack-table.h"

#define MT_EXPORT __attribute__((visibility("default")))

/* ---- intern table ---------------------------------------------------------- */

struct intern_ent {
    uint64_t hash;
    uint32_t id;  /* 0: empty slot */
    uint32_t len;
    char *str;    /* in the arena */
};

static mti_lock_t intern_lock;
static struct intern_ent *slots;  /* mmap'd, a power of two */
static uint32_t nslots, nused;
static char *arena, *arena_end;   /* bump allocator for the bytes */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h | 1;
}

static void *map_zero(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Doubles the table (lock held). false when out of memory. */
static bool grow(void)
{
    uint32_t n = nslots ? nslots * 2 : 1024;
    struct intern_ent *t = map_zero(n * sizeof *t);
    if (!t)
        return false;
    for (uint32_t i = 0; i < nslots; i++) {
        if (!slots[i].id)
            continue;
        uint32_t j = (uint32_t)slots[i].hash & (n - 1);
        while (t[j].id)
            j = (j + 1) & (n - 1);
        t[j] = slots[i];
    }
    if (slots)
        munmap(slots, nslots * sizeof *slots);
    slots = t;
    nslots = n;
    return true;
}

static char *arena_copy(const char *s, size_t n)
{
    if ((size_t)(arena_end - arena) < n) {
        size_t sz = n > (1u << 20) ? n : (1u << 20);
        char *a = map_zero(sz);
        if (!a)
            return NULL;
        arena = a;
        arena_end = a + sz;
    }
    char *r = arena;
    memcpy(r, s, n);
    arena += n;
    return r;
}

/* The id of name, writing its STRING record if it is new; 0 for NULL, an
 * empty name, or when memory ran out. */
static uint32_t intern(const char *name)
{
    if (!name || !*name)
        return 0;
    size_t n = strnlen(name, MT_MAX_STRING);
    uint64_t h = hash_bytes(name, n);
    mti_lock(&intern_lock);
    if ((nused + 1) * 4 > nslots * 3 && !grow()) {
        mti_unlock(&intern_lock);
        return 0;
    }
    uint32_t j = (uint32_t)h & (nslots - 1);
    for (; slots[j].id; j = (j + 1) & (nslots - 1)) {
        if (slots[j].hash == h && slots[j].len == n && !memcmp(slots[j].str, name, n)) {
            uint32_t id = slots[j].id;
            mti_unlock(&intern_lock);
            return id;
        }
    }
    char *copy = arena_copy(name, n);
    uint32_t id = 0;
    if (copy) {
        id = ++nused;
        slots[j] = (struct intern_ent){ h, id, (uint32_t)n, copy };
        mti_emit_string(id, name, n);
    }
    mti_unlock(&intern_lock);
    return id;
}

void mti_api_after_fork(void)
{
    /* The child's trace has none of the parent's strings. The parent's
     * memory stays mapped in the child, unused. */
    atomic_store(&intern_lock, 0);
    slots = NULL;
    nslots = nused = 0;
    arena = arena_end = NULL;
}

/* ---- entry points ------------------------------------------------------------ */

static void mark(unsigned kind, const char *name, uint64_t value)
{
    if (!mti_recording())
        return;
    mti_self.guard++;
    if (name)
        value = intern(name);
    uint64_t seq = mti_next_seq();
    mti_emit_mark(kind, seq, mti_now(), value);
    mti_self.guard--;
}

static void api_phase_push(const char *name)
{
    mark(MT_MARK_PHASE_PUSH, name ? name : "", 0);
}

static void api_phase_pop(void)
{
    mark(MT_MARK_PHASE_POP, NULL, 0);
}

static void api_step(uint64_t step)
{
    mark(MT_MARK_STEP, NULL, step);
}

static void api_scope_push(const char *path)
{
    mark(MT_MARK_SCOPE_PUSH, path ? path : "", 0);
}

static void api_scope_pop(void)
{
    mark(MT_MARK_SCOPE_POP, NULL, 0);
}

static void tag(uintptr_t addr, const char *category, unsigned space)
{
    if (!mti_recording() || !category)
        return;
    mti_self.guard++;
    uint32_t id = intern(category);
    uint64_t seq = mti_next_seq();
    mti_emit_tag(seq, mti_now(), addr, id, space);
    mti_self.guard--;
}

static void api_tag(const void *addr, const char *category)
{
    tag((uintptr_t)addr, category, MT_TAG_HOST);
}

static void api_tag_gpu(uint64_t addr, const char *category)
{
    tag((uintptr_t)addr, category, MT_TAG_GPU);
}

static void api_gpu_tensor_alloc(uint64_t addr, uint64_t size, int device, uint64_t stream)
{
    if (!mti_recording())
        return;
    mti_self.guard++;
    uint32_t stack = mti_stack_capture();
    uint64_t seq = mti_next_seq();
    mti_emit_gpu_alloc(seq, mti_now(), addr, size, (uint32_t)device, stream, MT_GPU_API_TORCH,
                       MT_GPU_SPACE_TENSOR, stack);
    mti_self.guard--;
}

static void api_gpu_tensor_free(uint64_t addr, int device)
{
    if (!mti_recording())
        return;
    mti_self.guard++;
    uint64_t seq = mti_next_seq();
    mti_emit_gpu_free(seq, mti_now(), addr, (uint32_t)device, MT_GPU_API_TORCH, MT_GPU_SPACE_TENSOR);
    mti_self.guard--;
}

static int api_active(void)
{
    return atomic_load_explicit(&mti_state, memory_order_relaxed) == MTI_ON;
}

static const memtrace_api_t api_table = {
    .version = MEMTRACE_API_VERSION,
    .phase_push = api_phase_push,
    .phase_pop = api_phase_pop,
    .step = api_step,
    .scope_push = api_scope_push,
    .scope_pop = api_scope_pop,
    .tag = api_tag,
    .tag_gpu = api_tag_gpu,
    .gpu_tensor_alloc = api_gpu_tensor_alloc,
    .gpu_tensor_free = api_gpu_tensor_free,
    .active = api_active,
};

/* The table for callers of a version up to ours (later versions only ever
 * add members at the end), NULL for a newer one. */
MT_EXPORT const memtrace_api_t *memtrace_api_get(int version)
{
    return version >= 1 && version <= MEMTRACE_API_VERSION ? &api_table : NULL;
}
