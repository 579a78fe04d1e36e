/* verify: `memtrace verify`, the simulator's assumptions held against the
 * kernels of kernels/ at the trace's sizes (see verify.c). */
#ifndef MT_VERIFY_H
#define MT_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "mt-error.h"

/* The offload bandwidth measured here for `bytes` (capped at 256 MiB):
 * into pinned host memory, or written to a file beside the trace (disk).
 * 0 and *gbps, or a negative errno-style code and err. */
int mt_verify_bandwidth(const char *trace, bool disk, uint64_t bytes, double *gbps, struct mt_error *err);

int mt_verify_main(int argc, char **argv);

#endif
