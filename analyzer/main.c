/* The memtrace command: one executable, one subcommand per concept.
 * Each subcommand parses its own options and returns the exit status;
 * this file only dispatches and prints the top-level help. */
#include <stdio.h>
#include <string.h>

#include "diff.h"
#include "dump.h"
#include "flamegraph.h"
#include "memtrace-format.h"
#include "pack.h"
#include "report.h"
#include "run.h"
#include "simulate.h"
#include "verify.h"
#include "script.h"
#include "timeline.h"

#ifndef MT_VERSION
#define MT_VERSION "0.1.0"
#endif

static const struct {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
} commands[] = {
    { "run", mt_run_main, "run a command with every allocation recorded" },
    { "report", mt_report_main, "summarize one or more traces (text or --json)" },
    { "diff", mt_diff_main, "compare two traces: host numbers and the sites that grew or shrank" },
    { "pack", mt_pack_main, "compress traces written under plain LD_PRELOAD or with --no-pack" },
    { "dump", mt_dump_main, "print every record of a trace, one line each" },
    { "simulate", mt_simulate_main, "predict peaks under checkpointing, 8-bit optimizers, offloading, ..." },
    { "plan", mt_plan_main, "the cheapest techniques that fit a memory budget" },
    { "verify", mt_verify_main, "run the kernels behind simulate's assumptions at the trace's sizes" },
    { "flamegraph", mt_flamegraph_main, "where the heap's bytes come from: interactive SVG or folded stacks" },
    { "timeline", mt_timeline_main, "memory over time: SVG/HTML picture or Chrome trace JSON" },
    { "script", mt_script_main, "allocations in perf script's text format, for perf tools" },
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: memtrace COMMAND [OPTIONS] [ARGS...]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'memtrace COMMAND --help' describes each command.\n"
               "Without the launcher: LD_PRELOAD=/path/to/libmemtrace.so CMD (see docs/ENVIRONMENT.md).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("memtrace %s (trace format %u)\n", MT_VERSION, MT_FORMAT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "memtrace: unknown command '%s'; try 'memtrace --help'\n", argv[1]);
    return 2;
}
