/* diff: two traces compared, and the `memtrace diff` command that prints
 * the comparison (text or JSON).
 *
 * Each trace gets its report (report.h) with the best MT_DIFF_SITES sites
 * of every list kept and symbolized. Call-tree node ids mean nothing across
 * traces, so a site is named by its frames instead: the first
 * MT_DIFF_KEY_FRAMES frames (allocator frames already left out), each as
 * function, source file name, line and module file name when the function
 * is known, else as module file name and offset (equal only for the same
 * binary), else as the recorded address. Sites of one trace with the same
 * name are added together. A name found in one trace only counts as 0 in
 * the other. Sites below the MT_DIFF_SITES best of a list are not kept by
 * the report, so they count as 0 too; `limited` says when a trace has more
 * sites than that.
 *
 * For two lists, bytes live at the heap peak and total bytes allocated,
 * the sites whose bytes grew most (B over A) and shrank most are picked,
 * at most `top` each, largest change first (ties: in the order of the
 * site names).
 *
 * mt_diff_compute is reentrant and prints nothing; mt_diff_main prints and
 * is meant to be called from main. mt_diff_destroy accepts NULL.
 */
#ifndef MT_DIFF_H
#define MT_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "mt-error.h"
#include "report.h"

#define MT_DIFF_SITES 1000u     /* sites per list kept from each report */
#define MT_DIFF_KEY_FRAMES 8u   /* frames that name a site */
#define MT_DIFF_DEFAULT_TOP 10u

enum mt_diff_list {
    MT_DIFF_PEAK,      /* bytes live at the heap peak */
    MT_DIFF_ALLOCATED, /* total bytes allocated */
    MT_DIFF_LISTS
};

/* One site name with its numbers in both traces. */
struct mt_diff_site {
    uint64_t bytes[MT_DIFF_LISTS][2];   /* [list][0: A, 1: B] */
    const struct mt_report_site *site;  /* frames: A's site, else B's */
};

struct mt_diff {
    struct mt_report a, b;
    struct mt_diff_site *site;
    size_t nsite;
    size_t *grew[MT_DIFF_LISTS], *shrank[MT_DIFF_LISTS]; /* indices into site */
    size_t ngrew[MT_DIFF_LISTS], nshrank[MT_DIFF_LISTS];
    bool limited; /* a trace has more than MT_DIFF_SITES sites */
};

struct mt_diff_opts {
    unsigned top;                   /* sites per grew/shrank list */
    bool no_symbols;                /* frames matched by address only */
};

/* Reads both traces and compares them (a truncated trace is a success with
 * out->a.partial or out->b.partial). opts NULL: MT_DIFF_DEFAULT_TOP,
 * symbolized. 0, or a negative errno-style code and err. */
int mt_diff_compute(const char *a, const char *b, const struct mt_diff_opts *opts,
                    struct mt_diff *out, struct mt_error *err);
/* The same from two reports computed with MT_DIFF_SITES sites per list;
 * *a and *b are moved into *out (and freed on failure) either way.
 * 0 or -ENOMEM and err. */
int mt_diff_reports(struct mt_report *a, struct mt_report *b, unsigned top, struct mt_diff *out,
                    struct mt_error *err);
/* Frees what *d owns (not d itself). */
void mt_diff_destroy(struct mt_diff *d);

/* The comparison as a JSON object (docs/REPORT.md), or NULL if out of
 * memory. Counters and changes are exact integer literals. */
cJSON *mt_diff_to_json(const struct mt_diff *d);

/* `memtrace diff [--json] [--top N] [--no-symbols] A B`; argv[0] is "diff".
 * Returns the exit status: 0, 1 (error), 2 (usage), 3 (a trace is
 * truncated). */
int mt_diff_main(int argc, char **argv);

#endif /* MT_DIFF_H */
