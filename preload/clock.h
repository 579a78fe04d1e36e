/* The recorder's clock: CLOCK_MONOTONIC nanoseconds, read cheaply.
 *
 * clock_gettime() costs 20-25 ns even through the vDSO on some machines,
 * twice per malloc/free pair. Where the CPU has an invariant TSC
 * (constant_tsc and nonstop_tsc, x86-64), mti_clock_ns() reads the TSC
 * instead and converts it with a scale measured against CLOCK_MONOTONIC:
 * until the first calibration (at least 1 ms after start) it falls back to
 * clock_gettime; mti_clock_calibrate(), called at every RSS tick, re-bases
 * the conversion on a fresh (tsc, ns) pair and refines the scale over the
 * whole run, so the error stays within a few microseconds. Values may step
 * back by that much at a re-base; callers keep their own times monotonic.
 *
 * Thread safety: readers take no lock (a sequence counter detects a
 * concurrent re-base); mti_clock_calibrate() must not run concurrently
 * with itself (the RSS tick is claimed with a CAS).
 */
#ifndef MEMTRACE_PRELOAD_CLOCK_H
#define MEMTRACE_PRELOAD_CLOCK_H

#include <stdint.h>

void mti_clock_init(void);
uint64_t mti_clock_ns(void);
uint64_t mti_clock_gettime_ns(void);
void mti_clock_calibrate(void);

#endif
