/* reader: opens a memtrace trace (format v1, include/memtrace-format.h) and
 * yields its records one by one in merged global order.
 *
 * Opening validates the file header and walks the chunk chain once (one
 * pread per chunk header) to build an index; no payload is read then.
 * Iteration merges the chunks (each one a run of records with
 * non-decreasing seq) with a min-heap keyed by the seq of each chunk's next
 * record; records that are not events (STACK, MODULE, RSS, PROCESS, END,
 * LOST) take the seq of the event before them in their chunk (or the
 * chunk's seq_base, the thread's last seq when the chunk was started) and
 * sort just after that event. A chunk is read (and for ZSTD chunks
 * CRC-checked, decompressed and split into its streams) only when its
 * seq_base comes up in the merge, its buffer goes back to a small pool when
 * it is exhausted, and a chunk whose next event is far ahead is set aside
 * without its buffer, so memory follows the number of chunks that overlap
 * in seq, not the file size or the number of threads. Decoding is
 * allocation-free per record.
 *
 * Heap events come out normalized, whatever the chunk held: every
 * allocation (ALLOC, BLOCK_ALLOC) as MT_REC_ALLOC naming its block (its own
 * seq), every free (FREE, BLOCK_FREE) as MT_REC_FREE naming the block it
 * releases (the seq of its allocation, 0 when unknown), with `has_addr`
 * telling whether `addr` is known. For heap records that carry an address
 * (RAW chunks, and packed ones written with addresses kept) the reader
 * finds the block itself through a map address -> block of the live heap
 * blocks, kept in merged order; an allocation at an address that is still
 * live first yields a free of kind MT_FREE_IMPLICIT of the old block (with
 * the allocation's seq, time and tid, has_addr set), as a packed trace holds
 * it. Memory for that map: a 16-byte entry per live heap block in a hash
 * table at most 70% full (23 to 46 bytes per live block); BLOCK records
 * need none.
 *
 * Truncation (the file ends inside a chunk or a record, or a packed file has
 * no TRAILER) is not an error: everything complete before the cut is read
 * and mt_reader_partial() becomes true. Corruption (bad chunk magic, CRC
 * mismatch, stream lengths that do not fit the payload, unknown tag or kind,
 * varint overflow, sizes out of bounds, ...) is an error whose one-line
 * message names the byte offset. After an error mt_reader_next keeps
 * returning it.
 *
 * A reader is used by one thread at a time; separate readers are
 * independent. mt_reader_close accepts NULL.
 */
#ifndef MT_READER_H
#define MT_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memtrace-format.h"
#include "mt-error.h"

struct mt_reader;

/* File header fields and what the index walk found. */
struct mt_trace_info {
    uint32_t version;
    uint32_t flags;        /* MT_FILE_* */
    uint32_t pid;
    uint32_t ppid;
    uint32_t session_pid;
    uint32_t page_size;
    uint32_t time_shift;
    uint64_t start_mono_ns;
    uint64_t start_real_ns;
    uint64_t file_size;    /* at open time */
    uint64_t chunk_count;  /* chunks in the chain, all types */
    uint64_t data_chunks;  /* RAW and ZSTD chunks */
    uint32_t threads;      /* distinct tids owning a non-empty data chunk */
    bool packed;           /* MT_FILE_PACKED */
    bool has_trailer;
};

/* One chunk of the index (for tools such as pack). */
struct mt_chunk_info {
    uint64_t offset;    /* of the chunk header in the file */
    uint64_t size;      /* whole chunk as the header says */
    uint64_t used;
    uint64_t avail;     /* payload bytes present in the file (RAW) */
    uint64_t seq_base;
    uint64_t time_base;
    uint32_t tid;
    uint32_t stored;
    uint32_t crc;
    uint16_t type;      /* enum mt_chunk_type */
    bool cut;           /* extends past the end of the file */
};

/* The PROCESS record, copied when first seen. exe is NUL-terminated; argv
 * holds argv_len bytes of NUL-separated arguments plus one more NUL. */
struct mt_process_info {
    uint32_t pid;
    uint32_t ppid;
    const char *exe;
    size_t exe_len;
    const char *argv;
    size_t argv_len;
};

/* A decoded record. type/kind/tid/seq/time_ns/chunk/chunk_last are always
 * set; the other fields only for the types named beside them. Pointers
 * point into reader-owned buffers, valid until the next mt_reader_next or
 * close. `type` is never MT_REC_BLOCK_ALLOC or MT_REC_BLOCK_FREE: those
 * come out as ALLOC and FREE (see above). */
struct mt_record {
    uint8_t type;       /* enum mt_rec_type, ALLOC to LOST */
    uint8_t kind;       /* low nibble of the tag, meaning per type; FREE:
                           enum mt_free_kind, IMPLICIT included */
    bool has_addr;      /* ALLOC FREE: addr is known (always for MMAP MUNMAP) */
    bool chunk_last;    /* no record of its chunk follows (false for the last
                           complete record of a chunk cut inside a record) */
    uint32_t tid;       /* writing thread */
    uint32_t chunk;     /* index (mt_reader_chunk) of the chunk it came from */
    uint64_t seq;       /* events: their seq; others: that of the event before */
    uint64_t time_ns;   /* since start; records without a time: the last time
                           seen in their chunk (or its time_base) */
    uint64_t block;     /* ALLOC: its own seq, the block's id; FREE: the block
                           it releases, 0 if unknown (a free of an address
                           that is not live); an IMPLICIT free with has_addr
                           was made up by the reader, see above */
    uint64_t addr;      /* ALLOC FREE (when has_addr) MMAP MUNMAP */
    uint64_t size;      /* ALLOC: size; MMAP MUNMAP: length */
    uint32_t prot;      /* MMAP */
    uint32_t flags;     /* MMAP */
    uint64_t stack_id;  /* ALLOC MMAP: call-tree node (0: none); STACK: the node */
    /* STACK: one node of the call tree */
    uint64_t parent_id; /* 0 (root) or a smaller node id */
    uint64_t ip;        /* return address */
    /* MODULE (LOAD: all; UNLOAD: bias) */
    uint64_t bias;
    uint32_t nsegs;
    const uint64_t (*segs)[2]; /* [i][0] start, [i][1] end */
    const uint8_t *build_id;
    uint32_t build_id_len;
    const char *path;          /* not NUL-terminated */
    uint32_t path_len;
    /* RSS: resident bytes */
    uint64_t rss_bytes;
    /* PROCESS */
    uint32_t pid;
    uint32_t ppid;
    const char *exe;           /* not NUL-terminated */
    uint32_t exe_len;
    const char *argv;          /* NUL-separated */
    uint32_t argv_len;
    /* END (kind = enum mt_end_kind) */
    uint64_t status;
    /* LOST */
    uint64_t lost;
    /* MARK: value is the name id (PHASE_PUSH), path id (SCOPE_PUSH), step
     * (STEP), category id (TAG, TAG_BLOCK) or string id (STRING). A host
     * TAG comes out as TAG_BLOCK with block set (0: no live block starts at
     * its addr); a GPU TAG keeps addr and space. STRING: str, str_len. */
    uint64_t value;
    const char *str;    /* not NUL-terminated */
    uint32_t str_len;
    /* GPU (and TAG): space (enum mt_gpu_space; TAG: enum mt_tag_space);
     * GPU: addr, size (ALLOC OOM), stack_id (ALLOC OOM), device, stream
     * (ALLOC), api, result (OOM) */
    uint32_t space;
    uint32_t device;
    uint32_t api;
    uint64_t stream;
    uint64_t result;
};

/* Opens path. 0 and *out, or a negative errno-style code and err:
 * -ENOENT etc. (cannot open), -EINVAL (not a memtrace trace),
 * -ENOTSUP (newer format version), -EBADMSG (corrupted), -EIO, -ENOMEM. */
int mt_reader_open(const char *path, struct mt_reader **out, struct mt_error *err);
void mt_reader_close(struct mt_reader *r);

/* 1 and *rec filled, 0 at the end, or a negative code (see
 * mt_reader_error for the message). */
int mt_reader_next(struct mt_reader *r, struct mt_record *rec);
const char *mt_reader_error(const struct mt_reader *r);

const struct mt_trace_info *mt_reader_info(const struct mt_reader *r);
/* True if the file was cut short (known at open or found while reading). */
bool mt_reader_partial(const struct mt_reader *r);
/* True once an END record has been read. */
bool mt_reader_ended(const struct mt_reader *r);
/* The PROCESS record, or NULL until one has been read. */
const struct mt_process_info *mt_reader_process(const struct mt_reader *r);
/* Bytes of the file's chunks loaded so far, and the file size. */
void mt_reader_progress(const struct mt_reader *r, uint64_t *done, uint64_t *total);

/* The most chunks held loaded at once so far (memory check). */
uint32_t mt_reader_max_resident(const struct mt_reader *r);

/* The chunk index, in file order. */
size_t mt_reader_chunk_count(const struct mt_reader *r);
int mt_reader_chunk(const struct mt_reader *r, size_t i, struct mt_chunk_info *out);
/* The file descriptor (read-only), for tools that copy chunks. */
int mt_reader_fd(const struct mt_reader *r);

/* Largest decompressed payload accepted in one chunk. */
#define MT_MAX_CHUNK_PAYLOAD (1ull << 30)

#endif /* MT_READER_H */
