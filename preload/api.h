/* api: include/memtrace.h's entry points (phases, steps, scopes, tags,
 * per-tensor GPU events), exported as memtrace_api_get. See api.c. */
#ifndef MEMTRACE_PRELOAD_API_H
#define MEMTRACE_PRELOAD_API_H

/* In a forked child: forget the parent's interned names (the child's trace
 * must define them again). */
void mti_api_after_fork(void);

#endif
