/* Offline symbolization of instruction pointers recorded in a trace.
 *
 * The trace's MODULE records say which file was loaded where (path, load
 * bias, mapped ranges, GNU build-id). The symbolizer opens each file once
 * with libdw/libelf when an address in it is first asked for, checks the
 * build-id against the recorded one (a file replaced since the run is
 * reported, never used to print wrong lines), finds separate debug info
 * (/usr/lib/debug/.build-id/xx/yyyy.debug, the debuglink), and turns an
 * address into frames: function, source file and line, with inlined calls
 * expanded (the innermost, inlined, frames first; the last one is the real
 * function). Stripped files still give function names from .symtab or
 * .dynsym. Results are cached per module and address, so a trace with
 * 100,000 distinct stacks symbolizes in seconds.
 *
 * Not thread-safe: one symbolizer per thread. mt_symbolizer_free accepts
 * NULL. Strings returned stay valid until the symbolizer is freed.
 */
#ifndef MT_SYMBOLIZE_H
#define MT_SYMBOLIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mt-error.h"

struct mt_symbolizer;

enum mt_frame_status {
    MT_FRAME_OK = 0,        /* function (and file:line if debug info) known */
    MT_FRAME_NO_MODULE,     /* the address is in no recorded module */
    MT_FRAME_NO_FILE,       /* the module's file cannot be opened */
    MT_FRAME_MISMATCH,      /* the file's build-id differs from the trace's
                               (or only one of them has one, or the file is
                               no ELF file) */
    MT_FRAME_NO_SYMBOL,     /* the file has no symbol covering the address */
};

struct mt_frame_info {
    const char *function;   /* demangled; NULL if unknown */
    const char *file;       /* source file; NULL without debug info */
    unsigned line;          /* 0 if unknown */
    const char *module;     /* path of the module, NULL for NO_MODULE */
    uint64_t offset;        /* address relative to the module's load bias
                               (ip - bias, the recorded address; the
                               absolute ip for NO_MODULE) */
    bool inlined;           /* this frame was inlined into the next one */
    enum mt_frame_status status;
};

int mt_symbolizer_new(struct mt_symbolizer **out, struct mt_error *err);
void mt_symbolizer_free(struct mt_symbolizer *s);

/* Where separate debug files are looked for, in libdwfl's syntax: the
 * default "-:.debug:/usr/lib/debug" tries the file's directory, its .debug/
 * and /usr/lib/debug (by .gnu_debuglink name), and .build-id/xx/yyyy.debug
 * under every absolute directory listed. NULL restores the default. Only
 * modules opened afterwards are affected. Returns 0 or -ENOMEM. */
int mt_symbolizer_set_debug_path(struct mt_symbolizer *s, const char *path);

/* Records a module from a MODULE LOAD record (strings are copied). An
 * UNLOAD is not needed: later loads at overlapping addresses replace
 * earlier ones for addresses asked after them. Returns 0 or -ENOMEM. */
int mt_symbolizer_add_module(struct mt_symbolizer *s, const char *path, size_t path_len, uint64_t bias,
                             const uint64_t (*segs)[2], uint32_t nsegs, const uint8_t *build_id,
                             uint32_t build_id_len);

/* Symbolizes one recorded frame. `ip` is a return address unless
 * `exact` (then it is the instruction itself); the call site looked up is
 * ip - 1 for return addresses. Writes up to max frames (innermost inlined
 * first, the containing function last) and returns how many (>= 1;
 * 0 only when max is 0). A longer chain keeps its innermost max - 1
 * frames and the containing function. Every frame of one address has the
 * same status; with status OK, function or file:line (or both) is known. */
unsigned mt_symbolize(struct mt_symbolizer *s, uint64_t ip, bool exact, struct mt_frame_info *frames,
                      unsigned max);

/* The path of the recorded module that holds ip, or NULL: a lookup in the
 * module map only, nothing is opened. */
const char *mt_symbolizer_module_path(const struct mt_symbolizer *s, uint64_t ip);

/* Counts for the report: distinct addresses asked (cache misses: distinct
 * module, ip and exact), and how many of them could not be resolved, per
 * status (unresolved[MT_FRAME_OK] stays 0). Either pointer may be NULL. */
void mt_symbolizer_stats(const struct mt_symbolizer *s, uint64_t *asked, uint64_t unresolved[5]);

#endif
