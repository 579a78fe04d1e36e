/* A library that tests/programs/patterns.c loads with dlopen: the block it
 * allocates must be attributed to code in this library, which memtrace can
 * only do if the library is in the trace's module map. */
#include <stdlib.h>
#include <string.h>

__attribute__((visibility("default"), noinline)) void *plugin_alloc(size_t n)
{
    char *p = malloc(n);
    if (p)
        memset(p, 7, n < 64 ? n : 64);
    return p;
}
