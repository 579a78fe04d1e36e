/* trace-writer: builds synthetic memtrace traces for the tests.
 *
 * Records are appended to the current (newest) chunk of their thread;
 * chunks are laid out in the file in the order they were started unless
 * moved, so a test controls how per-thread chunks interleave. Each chunk
 * is encoded twice as records are added: as a RAW payload and as the
 * streams of a packed one. The writer also keeps every record it wrote and
 * can list them in the merged order the reader must produce, normalized as
 * the reader yields them (blocks named, IMPLICIT frees made up for
 * allocations at live addresses). Writes RAW traces (with optional reserved
 * slack and FREE chunks) and packed ones (one ZSTD chunk per non-empty
 * chunk, then a TRAILER). Packed chunks keep heap addresses (ALLOC and
 * FREE in streams) unless the `blocks` option is set; then their heap
 * records are written as `memtrace pack` writes them. Encoding mistakes
 * abort: this is test support code.
 *
 * Not thread-safe. tw_destroy accepts NULL.
 */
#ifndef MT_TRACE_WRITER_H
#define MT_TRACE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reader.h"

struct tw_opts {
    uint32_t version;
    uint32_t flags;
    uint32_t pid;
    uint32_t ppid;
    uint32_t session_pid;
    uint32_t page_size;
    uint32_t time_shift;
    uint64_t start_mono_ns;
    uint64_t start_real_ns;
    uint64_t slack; /* bytes reserved past `used` in each RAW chunk */
    bool blocks;    /* packed chunks drop heap addresses as pack does:
                       BLOCK_ALLOC, BLOCK_FREE (IMPLICIT before an
                       allocation at a live address), FREE only for an
                       unknown block. Blocks are found as records are
                       added, so heap records must be added in seq order. */
};

struct tw;

void tw_default_opts(struct tw_opts *o);
struct tw *tw_new(const struct tw_opts *o); /* NULL: defaults */
void tw_destroy(struct tw *w);

/* Starts a new chunk for tid at the end of the file. */
void tw_chunk(struct tw *w, uint32_t tid, uint64_t seq_base, uint64_t time_base);
/* Moves the newest chunk to file position pos (as when the recorder reuses
 * a FREE region earlier in the file). */
void tw_place_chunk(struct tw *w, size_t pos);
/* Adds a FREE chunk of `size` bytes (>= 64) at the end of the file. */
void tw_free_chunk(struct tw *w, uint64_t size);

/* Records; `time` in time units (ns >> time_shift). A thread without a chunk
 * gets one with seq_base 0 and time_base 0. */
void tw_alloc(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
              uint64_t addr, uint64_t size, uint64_t stack);
void tw_free(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time, uint64_t addr);
/* BLOCK_ALLOC and BLOCK_FREE, written as they are in both encodings (in a
 * RAW chunk they are corrupt); block is the seq of the allocation freed. */
void tw_block_alloc(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
                    uint64_t size, uint64_t stack);
void tw_block_free(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
                   uint64_t block);
void tw_mmap(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
             uint64_t addr, uint64_t len, uint32_t prot, uint32_t flags, uint64_t stack);
void tw_munmap(struct tw *w, uint32_t tid, unsigned kind, uint64_t seq, uint64_t time,
               uint64_t addr, uint64_t len);
/* One call-tree node: id, its parent (0 = root), its return address. */
void tw_stack(struct tw *w, uint32_t tid, uint64_t id, uint64_t parent, uint64_t ip);
void tw_module_load(struct tw *w, uint32_t tid, uint64_t bias, unsigned nseg,
                    const uint64_t (*segs)[2], const uint8_t *build_id, unsigned bid_len,
                    const char *path);
void tw_module_unload(struct tw *w, uint32_t tid, uint64_t bias);
void tw_rss(struct tw *w, uint32_t tid, unsigned kind, uint64_t time, uint64_t bytes);
void tw_process(struct tw *w, uint32_t tid, uint32_t pid, uint32_t ppid, const char *exe,
                const char *argv, size_t argv_len);
void tw_end(struct tw *w, uint32_t tid, unsigned kind, uint64_t time, uint64_t status);
void tw_lost(struct tw *w, uint32_t tid, uint64_t count);
/* Appends raw bytes to tid's current chunk (not logged as a record): to its
 * RAW payload, or to one stream of its packed form. */
void tw_bytes(struct tw *w, uint32_t tid, const void *bytes, size_t n);
void tw_stream_bytes(struct tw *w, uint32_t tid, unsigned stream, const void *bytes, size_t n);

/* Fills w with the sample trace the tests share: three threads (tids 100,
 * 200, 300) whose chunks interleave so that file order differs from seq
 * order, every record type, a cross-thread free, a realloc (FREE kind
 * realloc + ALLOC kind realloc), an unmatched free, an allocation at a live
 * address, a partial munmap, an mremap and a munmap spanning what is left.
 * Its report (times in units; ns = units << time_shift):
 *   heap peak 6000 at time 45, end 10, 5 allocs of 6310 bytes, 3 frees,
 *   1 unmatched, 1 inconsistent; anon mmap peak 163840, end 131072; file
 *   mmap peak and end 12288; RSS peak 3 MiB; 15 events, 5 stack nodes,
 *   1 module, 3 lost; END exit(0) at time 70. The reader yields 28
 *   records: the 27 written and the IMPLICIT free before the allocation
 *   at a live address. */
void tw_build_sample(struct tw *w);

/* Writes the trace; 0 or -errno. */
int tw_write(struct tw *w, const char *path, bool packed);

/* The decompressed payload (stream lengths and streams) of the k-th data
 * chunk of the packed file, in file order; malloc'ed, *n its length. */
uint8_t *tw_packed_payload(struct tw *w, size_t k, size_t *n);
/* Writes the packed file with the k-th data chunk's payload replaced by
 * payload[0..n) (compressed, with a matching CRC and length). */
int tw_write_packed_with(struct tw *w, const char *path, size_t k, const void *payload, size_t n);

/* The records written, in merged order (the order mt_reader_next must
 * return them), normalized as the reader yields them from the RAW file.
 * Valid until the writer changes. */
size_t tw_expected(struct tw *w, const struct mt_record **recs);

enum {
    TW_CMP_NO_ADDR = 1u << 0,  /* ignore heap addresses (and has_addr) */
    TW_CMP_NO_BLOCK = 1u << 1, /* ignore the block of heap records */
};

/* Compares the fields that matter for a's type; on mismatch writes a
 * description into why and returns false. chunk and chunk_last are not
 * compared. */
bool tw_rec_equal(const struct mt_record *a, const struct mt_record *b, char *why, size_t n);
bool tw_rec_equal_ex(const struct mt_record *a, const struct mt_record *b, unsigned flags, char *why,
                     size_t n);

#endif /* MT_TRACE_WRITER_H */
