/* The dynamic loader's write lock across fork().
 *
 * glibc (2.36 at least) resets the loader's main lock in a forked child but
 * not the lock dl_iterate_phdr() takes, which dlopen and dlclose also hold
 * while they change the list of loaded objects. If another thread of the
 * parent held it at the moment of fork, the child's first dl_iterate_phdr()
 * waits forever, and the list it protects may be half changed. A plain
 * program's child rarely calls it; a traced child does, to write its module
 * map and to unwind stacks (libunwind calls it). Two measures:
 *
 * - memtrace's own calls into the loader (unwinding, module scans) pass a
 *   gate: mti_loader_enter() before, mti_loader_leave() after. The atfork
 *   prepare handler closes the gate and waits until no thread is inside,
 *   so memtrace itself never holds the lock when the program forks.
 * - In the child, if the lock is still held (by a parent thread that
 *   called dlopen, dlclose or dl_iterate_phdr itself at that moment),
 *   mti_loader_enter() answers false for good: the child is recorded
 *   without stacks and module map rather than deadlocked. The lock is found
 *   once at start-up (see loader-lock.c); where it cannot be found, the
 *   check is skipped.
 *
 * Thread safety: enter/leave from any thread; the fork hooks from glibc's
 * atfork machinery (prepare and parent in the forking thread, child in the
 * child while it has a single thread).
 */
#ifndef MEMTRACE_PRELOAD_LOADER_LOCK_H
#define MEMTRACE_PRELOAD_LOADER_LOCK_H

#include <stdbool.h>

void mti_loader_lock_init(void);

/* False when the loader must not be used in this process (see above); the
 * caller then skips its unwind or scan and must not call leave. */
bool mti_loader_enter(void);
void mti_loader_leave(void);

void mti_loader_prepare_fork(void);
void mti_loader_parent_after_fork(void);
void mti_loader_child_after_fork(void);

#endif
