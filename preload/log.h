/* Diagnostics from inside a traced process.
 *
 * Messages go to stderr with raw write(2), prefixed "memtrace: ", formatted
 * into a stack buffer, and are capped (MTI_LOG_MAX per process) so a broken
 * setup cannot flood the traced program's output. Safe from any thread;
 * never allocates (vsnprintf with plain %s/%d/%lu conversions does not).
 */
#ifndef MEMTRACE_PRELOAD_LOG_H
#define MEMTRACE_PRELOAD_LOG_H

#define MTI_LOG_MAX 16

void mti_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
