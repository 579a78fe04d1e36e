/* Native stacks: unwinding with libunwind and deduplication into ids.
 *
 * mti_stack_capture() unwinds the calling thread, cuts off memtrace's own
 * frames, and returns the id of that exact frame list; the first time a
 * list is seen it gets a new id and its STACK record is written to the
 * calling thread's stream, so each distinct stack is written once.
 *
 * The table is open addressing over a large lazily-touched mapping. Lookups
 * take no lock (slots are published with release stores); inserts take a
 * spin lock. If it ever fills, new stacks still get fresh ids, only without
 * deduplication. Thread safety: any thread, guard raised.
 *
 * In front of the unwinder sits a per-thread set-associative cache keyed
 * by the return address into the program and the stack pointer at the
 * call, with up to 16 stacks per key. A cached stack keeps, for each frame,
 * the stack slot its return address was read from; a hit re-reads those
 * slots and must find the same addresses, so it returns exactly the stack a
 * full unwind would, for the price of a few loads. A stack is cached the
 * third time it comes up at its key (a filter remembers the first two), so
 * stacks that occur once or twice pay for the fast unw_backtrace() alone
 * and never for the slower unwind that notes slots. The slots checked always
 * lie in the calling thread's live stack between the call site and the
 * outermost frame seen at that depth before.
 */
#ifndef MEMTRACE_PRELOAD_STACK_TABLE_H
#define MEMTRACE_PRELOAD_STACK_TABLE_H

#include <stdint.h>

/* Records the address range of memtrace's own code (frames inside it are
 * cut off). Call once at initialisation. */
void mti_stack_table_init(void);

/* Returns the id of the caller's stack (0 when it cannot be unwound). */
uint32_t mti_stack_capture(void);

struct mti_thread;
/* Frees the calling thread's cache (thread exit). */
void mti_stack_thread_exit(struct mti_thread *th);

/* In a forked child: start an empty table (ids already written belong to
 * the parent's file). */
void mti_stack_table_reset(void);

#endif
