/* Progress lines for long passes over a trace.
 *
 * A pass that takes more than a second, with stderr a terminal, shows
 * "memtrace: <verb> <file>  NN%" on stderr, rewritten in place, and erased
 * when the pass ends; otherwise nothing is printed. Not thread-safe: one
 * struct per pass, used by the thread that runs it.
 */
#ifndef MT_PROGRESS_H
#define MT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct mt_progress {
    const char *verb;
    const char *file;
    struct timespec start;
    bool tty;
    bool shown;
    int last_pct;
};

void mt_progress_init(struct mt_progress *p, const char *verb, const char *file);
/* Callback shape shared by the passes: arg is a struct mt_progress. */
void mt_progress_update(uint64_t done, uint64_t total, void *arg);
/* Erases the line if one was shown. */
void mt_progress_done(struct mt_progress *p);

#endif
