/* Error values shared by the analyzer modules.
 *
 * Functions report failure by returning a negative errno-style code and, when
 * the caller passed a non-NULL struct mt_error, a one-line message (no
 * trailing newline, no "memtrace:" prefix; main-level code adds that when it
 * prints). Out-parameters other than the error are filled only on success.
 * Header-only; the helper writes only into the caller's struct, so it is
 * thread-safe as long as each thread uses its own struct.
 */
#ifndef MT_ERROR_H
#define MT_ERROR_H

#include <stdarg.h>
#include <stdio.h>

struct mt_error {
    char msg[256];
};

__attribute__((format(printf, 2, 3)))
static inline void mti_error_set(struct mt_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

#endif /* MT_ERROR_H */
