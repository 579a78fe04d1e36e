/* pack: rewrite a RAW trace as a packed one.
 *
 * The records are read in merged order and written again, each non-empty
 * source chunk becoming one ZSTD chunk (same tid, seq_base, time_base)
 * whose payload is the chunk's records split into per-class streams
 * (include/memtrace-format.h, "Packed chunks"), compressed, with a CRC-32
 * of the compressed bytes. Heap block addresses are dropped: an allocation
 * becomes a BLOCK_ALLOC, a free of a block whose allocation is in the trace
 * a BLOCK_FREE naming it by seq, an allocation at a live address gets the
 * BLOCK_FREE of kind IMPLICIT the reader makes up for it; only a free of an
 * unknown block keeps its address (as a FREE). With MT_PACK_KEEP_ADDRESSES
 * allocations and frees keep their addresses (ALLOC and FREE, in streams).
 * Every other record is kept as it is. The reader yields the same records,
 * in the same order, from the packed file as from the original (heap
 * addresses aside).
 *
 * FREE and empty chunks are dropped, a TRAILER ends the file and the header
 * gets MT_FILE_PACKED. The new file is written to a temporary file in the
 * same directory, synced, checked, and renamed over the original; on any
 * error (a corrupt record included) the original is left untouched and the
 * temporary file removed. An already packed trace is left as it is
 * (success). A trace whose process (header pid) is still running is
 * refused unless MT_PACK_FORCE: that process may still be writing it
 * through its mapping. A truncated trace is refused (packing would hide the
 * cut).
 *
 * Functions are reentrant (no shared state); mt_pack_main prints and is
 * meant to be called from main.
 */
#ifndef MT_PACK_H
#define MT_PACK_H

#include <stdbool.h>
#include <stdint.h>

#include "mt-error.h"

enum {
    MT_PACK_FORCE = 1u << 0,          /* pack even if the traced process is alive */
    MT_PACK_KEEP_ADDRESSES = 1u << 1, /* keep heap block addresses */
};

struct mt_pack_result {
    bool already_packed;
    uint64_t bytes_before;
    uint64_t bytes_after;
    uint64_t chunks;        /* data chunks written */
};

/* Packs path with zstd level `level`. 0 on success (also when already
 * packed), or a negative errno-style code and err. */
int mt_pack_file(const char *path, int level, struct mt_error *err);
int mt_pack_file_ex(const char *path, int level, unsigned flags, struct mt_pack_result *res,
                    struct mt_error *err);

/* As mt_pack_file_ex, calling progress(done, total, arg) every so often
 * with bytes of the source read (progress may be NULL). */
int mt_pack_file_progress(const char *path, int level, unsigned flags,
                          void (*progress)(uint64_t done, uint64_t total, void *arg), void *arg,
                          struct mt_pack_result *res, struct mt_error *err);

/* `memtrace pack [--level N] [--force] [--keep-addresses] FILE...`; argv[0]
 * is "pack".
 * Returns the exit status: 0, 1 (a file failed) or 2 (usage). */
int mt_pack_main(int argc, char **argv);

#endif /* MT_PACK_H */
