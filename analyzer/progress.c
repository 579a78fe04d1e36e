/* See progress.h. */
#include "progress.h"

#include <stdio.h>
#include <unistd.h>

void mt_progress_init(struct mt_progress *p, const char *verb, const char *file)
{
    p->verb = verb;
    p->file = file;
    p->tty = isatty(STDERR_FILENO) == 1;
    p->shown = false;
    p->last_pct = -1;
    clock_gettime(CLOCK_MONOTONIC, &p->start);
}

void mt_progress_update(uint64_t done, uint64_t total, void *arg)
{
    struct mt_progress *p = arg;
    if (!p || !p->tty || total == 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double el = (double)(now.tv_sec - p->start.tv_sec) + (double)(now.tv_nsec - p->start.tv_nsec) / 1e9;
    if (el < 1.0)
        return;
    int pct = (int)(done * 100 / total);
    if (pct > 100)
        pct = 100;
    if (p->shown && pct == p->last_pct)
        return;
    fprintf(stderr, "\rmemtrace: %s %s %3d%%", p->verb, p->file, pct);
    fflush(stderr);
    p->shown = true;
    p->last_pct = pct;
}

void mt_progress_done(struct mt_progress *p)
{
    if (p->shown) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        p->shown = false;
    }
}
