/* See clock.h. */
#include "clock.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

static bool tsc_usable;        /* the CPU's TSC is invariant */
static atomic_bool tsc_ready;  /* calibrated at least once */
static atomic_uint conv_seq;   /* odd while a re-base is written */
static uint64_t base_tsc, base_ns, mult_q32;
static uint64_t first_tsc, first_ns;

uint64_t mti_clock_gettime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#if HAVE_TSC
static bool cpu_has_invariant_tsc(void)
{
    int fd = open("/proc/cpuinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    static char buf[16384]; /* the first CPU's block is enough */
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    char *flags = strstr(buf, "\nflags");
    if (!flags)
        return false;
    char *eol = strchr(flags + 1, '\n');
    if (eol)
        *eol = 0;
    return strstr(flags, " constant_tsc") && strstr(flags, " nonstop_tsc");
}
#endif

void mti_clock_init(void)
{
#if HAVE_TSC
    tsc_usable = cpu_has_invariant_tsc();
    first_ns = mti_clock_gettime_ns();
    first_tsc = __rdtsc();
#endif
}

uint64_t mti_clock_ns(void)
{
#if HAVE_TSC
    if (__builtin_expect(atomic_load_explicit(&tsc_ready, memory_order_acquire), 1)) {
        for (;;) {
            unsigned s = atomic_load_explicit(&conv_seq, memory_order_acquire);
            uint64_t bt = base_tsc, bn = base_ns, m = mult_q32;
            atomic_thread_fence(memory_order_acquire);
            if (!(s & 1) && s == atomic_load_explicit(&conv_seq, memory_order_relaxed)) {
                uint64_t t = __rdtsc();
                if (t < bt)
                    return bn;
                return bn + (uint64_t)(((unsigned __int128)(t - bt) * m) >> 32);
            }
        }
    }
#endif
    return mti_clock_gettime_ns();
}

void mti_clock_calibrate(void)
{
#if HAVE_TSC
    if (!tsc_usable)
        return;
    uint64_t ns = mti_clock_gettime_ns();
    uint64_t tsc = __rdtsc();
    if (ns - first_ns < 1000000 || tsc <= first_tsc)
        return;
    uint64_t m = (uint64_t)(((unsigned __int128)(ns - first_ns) << 32) / (tsc - first_tsc));
    atomic_fetch_add_explicit(&conv_seq, 1, memory_order_acq_rel);
    atomic_thread_fence(memory_order_release);
    base_tsc = tsc;
    base_ns = ns;
    mult_q32 = m;
    atomic_fetch_add_explicit(&conv_seq, 1, memory_order_release);
    atomic_store_explicit(&tsc_ready, true, memory_order_release);
#endif
}
