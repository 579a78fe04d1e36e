/* The recorder: turns events into trace records in the output file.
 *
 * Design. Each thread appends records to a chunk of its own that lives in a
 * shared mapping of the trace file (see include/memtrace-format.h), so the
 * hot path is: take a sequence number (one relaxed atomic add), read the
 * clock, encode a few varints into mapped memory, and publish the new
 * length with a release store. No lock, no system call, no allocation.
 * Because the bytes are in the page cache the moment they are written,
 * nothing recorded is lost when the process exits in any way, SIGKILL
 * included. Reserving a new extent of the file (every 64 KiB to 1 MiB of
 * records per thread) takes a small spin lock, fallocate()s the space so a
 * full disk can never turn into SIGBUS, and maps it.
 *
 * Thread safety: every function may be called from any thread, with the
 * calling thread's guard (mti_self.guard) raised. After fork() the child
 * calls mti_recorder_after_fork(): it starts a file of its own lazily, on
 * its first record, so a child that only execs leaves no file behind.
 */
#ifndef MEMTRACE_PRELOAD_RECORDER_H
#define MEMTRACE_PRELOAD_RECORDER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memtrace-format.h"

/* Per-thread state, in static TLS (the library is preloaded, so the
 * initial-exec model applies and TLS access never allocates). */
struct mti_thread {
    int guard;                 /* >0 while inside memtrace: record nothing */
    uint32_t tid;              /* kernel thread id, 0 until first record */
    uint32_t gen;              /* recorder generation the chunk belongs to */
    bool key_set;              /* thread-exit hook registered */
    bool intro_pending;        /* this thread opened the file: write intro */
    uint32_t extent_size;      /* size of this thread's next extent */
    struct mt_chunk_hdr *hdr;  /* current chunk in the mapping, or NULL */
    uint8_t *payload;          /* first payload byte of the chunk */
    uint8_t *pos, *end;        /* write cursor and end of the extent */
    uint64_t map_off;          /* file offset of the chunk */
    uint64_t last_seq;         /* delta bases, see the format header */
    uint64_t last_time;
    uint64_t last_addr;
    uint64_t last_ip;
    struct mti_stack_cache *stack_cache; /* see stack-table.c, or NULL */
};

extern __thread struct mti_thread mti_self __attribute__((tls_model("initial-exec")));

enum mti_state { MTI_OFF = 0, MTI_ON = 1 };
extern atomic_int mti_state;

/* True when the calling thread should record what it is doing. */
static inline bool mti_recording(void)
{
    return atomic_load_explicit(&mti_state, memory_order_relaxed) == MTI_ON && !mti_self.guard;
}

/* Sets up the recorder for the root process or an exec'd one. Decides the
 * output file name (the file itself is created on the first record).
 * Returns 0, or a negative errno with recording left off. */
int mti_recorder_init(void);

/* In a forked child, before anything else runs: forget the parent's file,
 * chunks and tables; start a file of the child's own if following. */
void mti_recorder_after_fork(void);

uint64_t mti_next_seq(void);
uint64_t mti_now(void); /* time units since the trace started */

void mti_emit_alloc(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr, uint64_t size, uint32_t stack);
void mti_emit_free(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr);
void mti_emit_mmap(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr, uint64_t len, int prot,
                   int flags, uint32_t stack);
void mti_emit_munmap(unsigned kind, uint64_t seq, uint64_t time, uintptr_t addr, uint64_t len);
void mti_emit_stack(uint32_t id, uint32_t parent, uintptr_t ip);
void mti_emit_module_load(uintptr_t bias, unsigned nseg, const uintptr_t (*seg)[2], const uint8_t *build_id,
                          unsigned build_id_len, const char *path);
void mti_emit_module_unload(uintptr_t bias);

/* MARK records (see the format header). value: the name or path id of
 * PHASE_PUSH and SCOPE_PUSH, the step of STEP, unused for the POP kinds. */
void mti_emit_mark(unsigned kind, uint64_t seq, uint64_t time, uint64_t value);
void mti_emit_string(uint32_t id, const char *s, size_t len);
void mti_emit_tag(uint64_t seq, uint64_t time, uintptr_t addr, uint32_t category, unsigned space);
/* GPU records. */
void mti_emit_gpu_alloc(uint64_t seq, uint64_t time, uint64_t addr, uint64_t size, uint32_t device,
                        uint64_t stream, unsigned api, unsigned space, uint32_t stack);
void mti_emit_gpu_free(uint64_t seq, uint64_t time, uint64_t addr, uint32_t device, unsigned api,
                       unsigned space);
void mti_emit_gpu_oom(uint64_t seq, uint64_t time, uint64_t size, uint32_t device, unsigned api,
                      unsigned space, uint64_t result, uint32_t stack);

/* Writes the END record (how the process ended) and the RSS high-water mark. */
void mti_recorder_finish(unsigned end_kind, int status);

/* Moves a descriptor of memtrace's own (close-on-exec) to the top of the
 * range the process may use, so the program's own numbering is untouched.
 * Returns the new descriptor (the old one is closed), or -1 and leaves it. */
int mti_move_fd_high(int fd);

/* Spin lock for the slow paths (extent reservation, table inserts). Reset to
 * unlocked in a forked child, where its holder may not exist. */
typedef atomic_int mti_lock_t;
void mti_lock(mti_lock_t *l);
bool mti_trylock(mti_lock_t *l);
void mti_unlock(mti_lock_t *l);

#endif
