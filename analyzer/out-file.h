/* out-file: output files written whole or not at all, and the escaping the
 * picture writers share.
 *
 * mt_out_open creates a temporary file beside the destination (same
 * directory, so the rename cannot cross file systems) and mt_out_commit
 * flushes it and renames it over the destination; mt_out_abort (or a
 * failed commit) removes it. An interrupted or failed command therefore
 * never leaves a partial picture behind. A destination of "-" writes to
 * stdout directly (commit only flushes).
 *
 * Not thread-safe per handle; mt_out_abort accepts NULL.
 */
#ifndef MT_OUT_FILE_H
#define MT_OUT_FILE_H

#include <stdio.h>

#include "mt-error.h"

struct mt_out {
    FILE *f;     /* write here */
    char *path;  /* destination (NULL for stdout) */
    char *tmp;   /* the temporary file (NULL for stdout) */
};

/* 0 and *out, or a negative errno-style code and err (names the path). */
int mt_out_open(const char *path, struct mt_out **out, struct mt_error *err);
/* Flushes, closes and renames; frees o. 0 or a negative code and err (the
 * temporary file is removed then). */
int mt_out_commit(struct mt_out *o, struct mt_error *err);
/* Closes and removes the temporary file; frees o. */
void mt_out_abort(struct mt_out *o);

/* s with &<>"' escaped for XML text and attributes; bytes that are not
 * valid in XML 1.0 (control characters) become '?'. */
void mt_xml_escape(FILE *f, const char *s);
/* s as the inside of a JSON string (no quotes added). */
void mt_json_escape(FILE *f, const char *s);

#endif
