/* Test program for the symbolizer (tests/test-symbolize.c), built with
 * -g -O1 and run under libmemtrace.so. It makes two allocations of sizes
 * nothing else uses: SYM_DIRECT_SIZE from a noinline function that calls
 * malloc itself, and SYM_INLINE_SIZE from an always_inline function inlined
 * into outer_alloc. Each call records its own line (__LINE__ on the line of
 * the call), and main prints the lines to stdout as
 * "direct LINE inline LINE call LINE" for the test to compare with what the
 * symbolizer says. Functions are exported (-rdynamic) so a copy stripped of
 * everything but .dynsym still names them.
 */
#include <stdio.h>
#include <stdlib.h>

#define SYM_DIRECT_SIZE 1234567
#define SYM_INLINE_SIZE 2345671

void *volatile sink;
static volatile int direct_line, inline_line, call_line;

__attribute__((noinline)) void *direct_alloc(size_t n)
{
    void *p = malloc(n); direct_line = __LINE__;
    sink = p;
    return p;
}

static inline __attribute__((always_inline)) void *inline_alloc(size_t n)
{
    void *p = malloc(n); inline_line = __LINE__;
    sink = p;
    return p;
}

__attribute__((noinline)) void *outer_alloc(size_t n)
{
    void *p = inline_alloc(n); call_line = __LINE__;
    sink = p;
    return p;
}

int main(void)
{
    void *a = direct_alloc(SYM_DIRECT_SIZE);
    void *b = outer_alloc(SYM_INLINE_SIZE);
    free(a);
    free(b);
    printf("direct %d inline %d call %d\n", direct_line, inline_line, call_line);
    return 0;
}
