/* `memtrace run`: launch a command under libmemtrace.so (see run.c). */
#ifndef MEMTRACE_ANALYZER_RUN_H
#define MEMTRACE_ANALYZER_RUN_H

#include <stddef.h>

/* Entry point of the subcommand; argv[0] is "run". Returns the exit status
 * for memtrace (the command's own), or raises the command's signal. */
int mt_run_main(int argc, char **argv);

/* Writes the path of libmemtrace.so to `out`: $MEMTRACE_LIB, next to this
 * executable (build tree or same directory), or the installed libdir.
 * Returns 0 or -ENOENT. */
int mt_find_library(char *out, size_t size);

#endif
