/* The module map: which file is loaded where, with its build-id.
 *
 * The analyzer symbolizes after the program has exited, so the recorder
 * writes a MODULE record for every loaded object (path, load bias, mapped
 * ranges, GNU build-id) at the start of each trace, and again whenever the
 * set changes. Changes are found without wrapping dlopen (a wrapper would
 * change which object glibc takes as the caller, and so the RUNPATH it
 * searches): before a new stack is written, any frame outside the known
 * code triggers a rescan, and each RSS tick compares the loader's add/sub
 * counters. So every frame of every STACK record lies in a module written
 * before it, and a dlclose shows up within one RSS interval.
 *
 * Thread safety: any thread, guard raised. The module lock is only ever
 * taken with trylock: a thread inside dlopen holds the loader lock and may
 * allocate, and must never wait for a thread that waits for the loader.
 */
#ifndef MEMTRACE_PRELOAD_MODULES_H
#define MEMTRACE_PRELOAD_MODULES_H

#include <stdbool.h>
#include <stdint.h>

/* Rescans the loaded objects and writes LOAD/UNLOAD records for changes;
 * with `force`, writes every module as new (start of a trace). */
void mti_modules_sync(bool force);

/* Rescans if the loader's counters moved since the last scan. */
void mti_modules_poll(void);

/* Rescans if any of the addresses lies outside every known module. */
void mti_modules_check(const uintptr_t *ips, unsigned n);

/* In a forked child: nothing is known any more. */
void mti_modules_reset(void);

#endif
