/* memtrace.h: what a program can tell memtrace about itself.
 *
 * Phases (forward, backward, optimizer, or any name), the training step,
 * the module a piece of work belongs to, and the category of an
 * allocation. memtrace's report then gives peaks per phase and per step, a
 * breakdown by category and allocations by module.
 *
 * Header only: include it and call the functions; nothing to link. Each
 * call looks up libmemtrace.so's entry point once (dlsym in the global
 * scope, where LD_PRELOAD put it) and does nothing when memtrace is not
 * loaded, so the same binary runs with and without memtrace. On glibc
 * older than 2.34 link with -ldl.
 *
 * Semantics (see docs/PHASES.md):
 * - Phases and scopes are process-wide, not per thread: an allocation by
 *   any thread is in the phase and module that are current when it
 *   happens (memtrace orders every thread's events on one counter). Push
 *   and pop from one thread, or order the calls yourself.
 * - Phases nest; the innermost is the current one. memtrace_step() marks
 *   the start of a training step.
 * - memtrace_tag() names the category of the live allocation that starts
 *   at addr (the pointer malloc and friends returned), for its whole life.
 *   Categories the report knows: "parameters", "gradients",
 *   "optimizer_state", "activations", "temporaries", "kv_cache", "other";
 *   any other name is reported as given. memtrace_tag_gpu() does the same
 *   for a GPU allocation's device address.
 * - Names are copied; they need not outlive the call. A name longer than
 *   4096 bytes is cut there.
 */
#ifndef MEMTRACE_H
#define MEMTRACE_H

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MEMTRACE_API_VERSION 1

/* The entry points libmemtrace.so exports (the wrappers below call them). */
typedef struct {
    int version;
    void (*phase_push)(const char *name);
    void (*phase_pop)(void);
    void (*step)(uint64_t step);
    void (*scope_push)(const char *path);
    void (*scope_pop)(void);
    void (*tag)(const void *addr, const char *category);
    void (*tag_gpu)(uint64_t device_addr, const char *category);
    void (*gpu_tensor_alloc)(uint64_t device_addr, uint64_t size, int device, uint64_t stream);
    void (*gpu_tensor_free)(uint64_t device_addr, int device);
    int (*active)(void);
} memtrace_api_t;

/* The table, or NULL without memtrace. Looked up once per translation unit
 * (a race only repeats the lookup). */
static inline const memtrace_api_t *memtrace__api(void)
{
    static const memtrace_api_t *api;
    static int looked;
    if (!__atomic_load_n(&looked, __ATOMIC_ACQUIRE)) {
        const memtrace_api_t *(*get)(int) =
            (const memtrace_api_t *(*)(int))dlsym(RTLD_DEFAULT, "memtrace_api_get");
        __atomic_store_n(&api, get ? get(MEMTRACE_API_VERSION) : NULL, __ATOMIC_RELAXED);
        __atomic_store_n(&looked, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&api, __ATOMIC_RELAXED);
}

/* True (1) when memtrace is loaded and recording this process. */
static inline int memtrace_active(void)
{
    const memtrace_api_t *a = memtrace__api();
    return a ? a->active() : 0;
}

static inline void memtrace_phase_push(const char *name)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->phase_push(name);
}

static inline void memtrace_phase_pop(void)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->phase_pop();
}

static inline void memtrace_step(uint64_t step)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->step(step);
}

static inline void memtrace_scope_push(const char *path)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->scope_push(path);
}

static inline void memtrace_scope_pop(void)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->scope_pop();
}

static inline void memtrace_tag(const void *addr, const char *category)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->tag(addr, category);
}

static inline void memtrace_tag_gpu(uint64_t device_addr, const char *category)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->tag_gpu(device_addr, category);
}

/* For a framework's own GPU allocator: one tensor's memory handed out and
 * given back inside memory the driver already gave it (what PyTorch calls
 * allocated, beside reserved). */
static inline void memtrace_gpu_tensor_alloc(uint64_t device_addr, uint64_t size, int device,
                                             uint64_t stream)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->gpu_tensor_alloc(device_addr, size, device, stream);
}

static inline void memtrace_gpu_tensor_free(uint64_t device_addr, int device)
{
    const memtrace_api_t *a = memtrace__api();
    if (a)
        a->gpu_tensor_free(device_addr, device);
}

#ifdef __cplusplus
}
#endif

#endif /* MEMTRACE_H */
