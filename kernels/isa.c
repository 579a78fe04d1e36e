/* isa.c: which instruction-set variant the kernels run.
 *
 * Detected once (__builtin_cpu_supports), overridable with mt_isa_use() for
 * tests and benchmarks. The setting is a plain process-wide variable: set
 * it before kernels run, not while they do.
 */
#include <errno.h>
#include <time.h>

#include "kernels-internal.h"

static int isa_current = -1;

int mt_isa_supported(enum mt_isa isa)
{
    __builtin_cpu_init();
    switch (isa) {
    case MT_ISA_SCALAR:
        return 1;
    case MT_ISA_AVX2:
        return __builtin_cpu_supports("avx2");
    case MT_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2");
    }
    return 0;
}

enum mt_isa mt_isa_best(void)
{
    if (mt_isa_supported(MT_ISA_AVX512))
        return MT_ISA_AVX512;
    if (mt_isa_supported(MT_ISA_AVX2))
        return MT_ISA_AVX2;
    return MT_ISA_SCALAR;
}

int mt_isa_use(enum mt_isa isa)
{
    if ((unsigned)isa >= MT_ISA_COUNT || !mt_isa_supported(isa))
        return -ENOTSUP;
    isa_current = (int)isa;
    return 0;
}

enum mt_isa mt_isa_current(void)
{
    if (isa_current < 0)
        isa_current = (int)mt_isa_best();
    return (enum mt_isa)isa_current;
}

enum mt_isa mti_isa(void)
{
    return mt_isa_current();
}

const char *mt_isa_name(enum mt_isa isa)
{
    static const char *const names[MT_ISA_COUNT] = {"scalar", "avx2", "avx512"};
    return (unsigned)isa < MT_ISA_COUNT ? names[isa] : "?";
}

double mti_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
