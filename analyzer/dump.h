/* dump: `memtrace dump`, every record of a trace as a line of text. */
#ifndef MEMTRACE_DUMP_H
#define MEMTRACE_DUMP_H

int mt_dump_main(int argc, char **argv);

#endif
