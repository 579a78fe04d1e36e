/* See log.h. The cap is a relaxed atomic counter: at most MTI_LOG_MAX
 * messages are printed, the one after says that more were dropped. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

static atomic_uint mti_log_count;

void mti_log(const char *fmt, ...)
{
    unsigned n = atomic_fetch_add_explicit(&mti_log_count, 1, memory_order_relaxed);
    if (n > MTI_LOG_MAX)
        return;
    char buf[512];
    int len;
    if (n == MTI_LOG_MAX) {
        len = snprintf(buf, sizeof(buf), "memtrace: further messages suppressed\n");
    } else {
        va_list ap;
        va_start(ap, fmt);
        len = snprintf(buf, sizeof(buf), "memtrace: ");
        len += vsnprintf(buf + len, sizeof(buf) - (size_t)len - 1, fmt, ap);
        va_end(ap);
        if (len > (int)sizeof(buf) - 2)
            len = (int)sizeof(buf) - 2;
        buf[len++] = '\n';
    }
    ssize_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, buf + off, (size_t)(len - off));
        if (w <= 0)
            break;
        off += w;
    }
}
