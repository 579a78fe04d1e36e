/* report: one streaming pass over a trace computing its summary numbers,
 * and the `memtrace report` command that prints them (text or JSON).
 *
 * Heap numbers come from the reader's normalized ALLOC/FREE records (the
 * malloc family) in merged seq order, blocks named by the seq of their
 * allocation: live bytes are the sum of requested sizes of live blocks; a
 * free that names no live block changes nothing (unmatched_free_count); an
 * allocation at an address still live ends the old block with an IMPLICIT
 * free first (inconsistent_count; such frees are not counted as records or
 * events). The numbers are the same for a RAW trace and its packed form.
 * Mapping numbers come from MMAP/MUNMAP in two range sets (anonymous and
 * file-backed), lengths rounded up to the trace's page size; MMAP replaces
 * whatever it overlaps (MAP_FIXED), MUNMAP removes any live part it covers
 * (partial munmap, mremap's old range). The new range of an mremap (MMAP
 * kind REMAP) is anonymous or file-backed as the old range its thread gave
 * up just before (MUNMAP kind REMAP) was; anonymous when that is unknown.
 * RSS peak = max of RSS samples and high-water-mark records. Memory: one
 * live-table entry per live block and one node per live mapping, plus the
 * reader's bounded buffers and, for RAW traces, its address map (about as
 * big as the live table).
 *
 * mt_report_compute is reentrant and prints nothing; mt_report_main prints
 * and is meant to be called from main. mt_report_destroy accepts NULL.
 */
#ifndef MT_REPORT_H
#define MT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "mt-error.h"

struct mt_report_host {
    uint64_t peak_bytes;            /* max live requested heap bytes */
    uint64_t peak_time_ns;          /* time of the event that first reached it */
    uint64_t end_bytes;             /* live heap bytes at the end */
    uint64_t alloc_count;           /* allocations */
    uint64_t free_count;            /* frees that released a live block */
    uint64_t total_allocated_bytes; /* sum of allocation sizes */
    uint64_t unmatched_free_count;  /* frees of no live block (block 0: an
                                       address not live) */
    uint64_t inconsistent_count;    /* IMPLICIT frees: an allocation at an
                                       address already live */
    uint64_t rss_peak_bytes;
    uint64_t mmap_peak_bytes;       /* anonymous mappings */
    uint64_t mmap_end_bytes;
    uint64_t mmap_file_peak_bytes;  /* file-backed mappings */
    uint64_t mmap_file_end_bytes;
};

struct mt_report {
    char *file;              /* as given */
    uint32_t version;
    uint32_t pid, ppid, session_pid; /* from the file header */
    uint64_t start_real_ns;
    uint64_t file_size;
    bool packed;
    bool partial;            /* truncated */
    bool ended;              /* END record seen */
    bool complete;           /* ended && !partial */
    unsigned end_kind;       /* enum mt_end_kind, when ended */
    uint64_t exit_status;    /* when ended */
    bool has_process;        /* PROCESS record seen */
    uint32_t proc_pid, proc_ppid;
    char *exe;               /* NULL without a PROCESS record */
    char *argv;              /* argv_len bytes, NUL-separated, plus a NUL */
    size_t argv_len;
    uint64_t duration_ns;    /* latest time in the trace */
    uint64_t threads;        /* distinct tids that recorded something */
    uint64_t records;        /* as recorded: IMPLICIT frees not counted */
    uint64_t events;         /* ALLOC FREE MMAP MUNMAP (IMPLICIT frees not
                                counted) */
    uint64_t stacks;         /* STACK records (call-tree nodes) */
    uint64_t modules;        /* MODULE LOAD records */
    uint64_t lost;           /* sum of LOST counts */
    struct mt_report_host host;
};

/* Called every so often during the pass with bytes of the file done. */
typedef void (*mt_report_progress_fn)(uint64_t done, uint64_t total, void *arg);

/* Reads path and fills *out (a truncated trace is a success with
 * out->partial). 0, or a negative errno-style code and err. */
int mt_report_compute(const char *path, struct mt_report *out, struct mt_error *err);
int mt_report_compute_ex(const char *path, mt_report_progress_fn progress, void *arg,
                         struct mt_report *out, struct mt_error *err);
/* Frees what *rep owns (not rep itself). */
void mt_report_destroy(struct mt_report *rep);

/* The report as a JSON object (see docs), or NULL if out of memory. 64-bit
 * counters are written as exact integer literals. */
cJSON *mt_report_to_json(const struct mt_report *rep);

/* "12.3 MiB"-style size. */
void mt_human_size(uint64_t bytes, char *buf, size_t n);

/* `memtrace report [--json] FILE...`; argv[0] is "report". Returns the exit
 * status: 0, 1 (error), 2 (usage), 3 (a trace is truncated). */
int mt_report_main(int argc, char **argv);

#endif /* MT_REPORT_H */
