/* A statically linked program: LD_PRELOAD cannot reach it, so `memtrace
 * run` records nothing. Its output and exit code must pass through. */
#include <stdio.h>

int main(int argc, char **argv)
{
    printf("hello from a static program (%d)\n", argc);
    return 3;
}
