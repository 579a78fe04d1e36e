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
 * RSS peak = max of RSS samples and high-water-mark records.
 *
 * The same pass feeds sites.h: per allocation site (call-tree node) the
 * allocations, the bytes live at the heap peak, the leaks (live at the
 * end) and the temporaries, a size histogram and a heap/RSS timeline. After
 * the pass the top sites of each list are picked, their stacks walked in
 * the call tree and symbolized (symbolize.h) with allocator frames at the
 * innermost end left out, and stored in the report with their own copies
 * of the strings, so formatting needs nothing else. Memory: one entry per
 * live block, per call-tree node and per site, one node per live mapping,
 * plus the reader's bounded buffers and, for RAW traces, its address map.
 *
 * mt_report_compute is reentrant and prints nothing; mt_report_main prints
 * and is meant to be called from main. mt_report_destroy accepts NULL.
 */
#ifndef MT_REPORT_H
#define MT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "mt-error.h"
#include "phases.h"
#include "sites.h"

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

/* Called every so often during the pass with bytes of the file done. */
typedef void (*mt_report_progress_fn)(uint64_t done, uint64_t total, void *arg);

/* One frame of a site's stack, as the symbolizer resolved it. */
struct mt_report_frame {
    char *function;   /* NULL: unknown */
    char *file;       /* source file; NULL: unknown */
    char *module;     /* path of the module; NULL: in no recorded module */
    unsigned line;    /* 0: unknown */
    uint64_t ip;      /* the recorded return address */
    uint64_t offset;  /* ip relative to the module's load bias (ip without a
                         module) */
    bool inlined;     /* inlined into the next frame */
    unsigned status;  /* enum mt_frame_status; MT_FRAME_NO_MODULE too when
                         not symbolized */
};

/* An allocation site picked for one of the lists. */
struct mt_report_site {
    uint64_t stack_id;
    uint64_t alloc_count, alloc_bytes;
    uint64_t peak_count, peak_bytes;   /* live at the heap peak */
    uint64_t leak_count, leak_bytes;   /* live at the end */
    uint64_t temp_count, temp_bytes;   /* temporaries */
    struct mt_report_frame *frames;    /* innermost first, allocator frames
                                          at the innermost end left out */
    unsigned nframes;
    unsigned skipped;                  /* allocator frames left out */
};

enum mt_report_list {
    MT_LIST_PEAK,        /* by bytes live at the peak */
    MT_LIST_ALLOCATED,   /* by total bytes allocated */
    MT_LIST_ALLOCS,      /* by number of allocations */
    MT_LIST_LEAKS,       /* by bytes live at the end */
    MT_LIST_TEMPORARIES, /* by number of temporaries */
    MT_REPORT_LISTS
};

struct mt_report_timeline {
    uint64_t start_ns, end_ns; /* [start, end) since the trace started */
    uint64_t heap_bytes;       /* most heap bytes live in it */
    uint64_t rss_bytes;        /* largest RSS sample in it, else the last before */
    bool has_rss;              /* false: no RSS sample yet */
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
    /* sites, temporaries, histogram, timeline */
    uint64_t sites;          /* distinct allocation stacks */
    uint64_t leak_count;     /* blocks live at the end (host.end_bytes bytes) */
    uint64_t temp_count;     /* temporaries (see sites.h) */
    uint64_t temp_bytes;
    struct mt_report_site *site; /* the sites of any list */
    size_t nsite;
    size_t *list[MT_REPORT_LISTS]; /* indices into site, best first */
    size_t nlist[MT_REPORT_LISTS];
    struct mt_size_bucket sizes[MT_SIZE_BUCKETS];
    struct mt_report_timeline *timeline;
    unsigned ntimeline;
    /* symbolization (when symbolized): distinct addresses asked and those
     * not resolved, per enum mt_frame_status */
    bool symbolized;
    uint64_t sym_frames;
    uint64_t sym_unresolved[5];
    /* markers (phases.h): computed when the trace has any */
    uint64_t marks;          /* MARK events */
    uint64_t gpu_events;     /* GPU records (devices.h) */
    bool has_phases;
    struct mt_phases phases;
};

#define MT_REPORT_DEFAULT_TOP 10u
#define MT_REPORT_DEFAULT_FRAMES 8u

struct mt_report_opts {
    unsigned top;            /* sites per list */
    bool no_symbols;         /* leave frames unresolved (addresses only) */
    mt_report_progress_fn progress; /* may be NULL */
    void *progress_arg;
};

/* Reads path and fills *out (a truncated trace is a success with
 * out->partial). 0, or a negative errno-style code and err. The plain form
 * keeps MT_REPORT_DEFAULT_TOP sites per list and symbolizes; opts NULL
 * means the same. */
int mt_report_compute(const char *path, struct mt_report *out, struct mt_error *err);
int mt_report_compute_ex(const char *path, mt_report_progress_fn progress, void *arg,
                         struct mt_report *out, struct mt_error *err);
int mt_report_compute_opts(const char *path, const struct mt_report_opts *opts,
                           struct mt_report *out, struct mt_error *err);
/* Frees what *rep owns (not rep itself). */
void mt_report_destroy(struct mt_report *rep);

/* The report as a JSON object (docs/REPORT.md), or NULL if out of memory.
 * 64-bit counters are written as exact integer literals. */
cJSON *mt_report_to_json(const struct mt_report *rep);

/* The combined numbers of several reports (sums; peaks summed are upper
 * bounds of the combined peak) as a JSON object, or NULL if out of memory. */
cJSON *mt_report_combined_json(const struct mt_report *reps, size_t n);

/* True for a frame of the allocator itself (by its demangled name: the
 * malloc family, operator new/delete and their variants, names starting
 * with __libc_ or __GI_, std::allocator's, __gnu_cxx::new_allocator's and
 * std::allocator_traits' allocate): such frames are left out at the
 * innermost end of a site's stack. */
bool mt_report_allocator_frame(const char *function);

/* phases-report.c: phases.h's numbers in a report's JSON object (p NULL:
 * the same keys, empty) and as text. */
bool mt_phases_add_json(cJSON *o, const struct mt_phases *p, size_t top_modules);
void mt_phases_print(FILE *f, const struct mt_phases *p, unsigned top);

/* Shared with the other commands that print reports (diff). */
cJSON *mt_json_add_u64(cJSON *o, const char *key, uint64_t v);       /* exact integer */
cJSON *mt_json_add_str_or_null(cJSON *o, const char *key, const char *v);
/* Adds "frames": [{"function","file","line","module","inlined","offset"}]. */
bool mt_report_add_frames_json(cJSON *o, const struct mt_report_site *site);
/* The fields of struct mt_report_host, in JSON order, for X-macros. */
#define MT_REPORT_HOST_FIELDS(X)                                                                   \
    X(peak_bytes) X(peak_time_ns) X(end_bytes) X(alloc_count) X(free_count)                        \
    X(total_allocated_bytes) X(unmatched_free_count) X(inconsistent_count) X(rss_peak_bytes)       \
    X(mmap_peak_bytes) X(mmap_end_bytes) X(mmap_file_peak_bytes) X(mmap_file_end_bytes)

/* Adds every host.* key of h to o; peak_time_ns is null unless with_time
 * (a sum over processes has no peak time). */
bool mt_report_add_host_json(cJSON *o, const struct mt_report_host *h, bool with_time);
/* A site's frames as text lines, at most `frames` of them. */
void mt_report_print_site_frames(FILE *f, const struct mt_report_site *site, unsigned frames);
/* One frame as a text line: function (file:line) [module]. */
void mt_report_print_frame(FILE *f, const struct mt_report_frame *fr);
/* A count option's value: digits only, at most 1000000. */
bool mt_parse_count(const char *s, unsigned *out);
/* One usage error line for `memtrace COMMAND` and a hint; returns 2. */
int mt_usage_error(const char *command, const char *fmt, const char *arg);

/* "12.3 MiB"-style size. */
void mt_human_size(uint64_t bytes, char *buf, size_t n);

/* `memtrace report [--json] [--top N] [--frames N] FILE...`; argv[0] is
 * "report". Returns the exit status: 0, 1 (error), 2 (usage), 3 (a trace is
 * truncated). */
int mt_report_main(int argc, char **argv);

#endif /* MT_REPORT_H */
