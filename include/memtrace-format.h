/* memtrace trace format, version 1: the one definition of the file layout.
 *
 * A trace is written by libmemtrace.so (preload/recorder.c) and read by the
 * reader library (analyzer/reader.c). Everything here is little-endian, fixed
 * width where a struct is shown, LEB128 varints inside record payloads.
 *
 * File = file header (struct mt_file_hdr, 128 bytes) followed by chunks that
 * tile the rest of the file. Every chunk starts with struct mt_chunk_hdr
 * (64 bytes) and says its own total size, so a reader walks the chunk chain
 * without decoding payloads. Chunk kinds:
 *
 *   RAW   written in place by the recorder through a shared file mapping.
 *         `used` is advanced with a release store after each complete
 *         record, so the payload is valid up to `used` at any instant,
 *         whatever happens to the process (exit, _exit, abort, a fatal
 *         signal, SIGKILL). `size` is the extent reserved on disk.
 *   ZSTD  written by `memtrace pack`: the records of one RAW chunk,
 *         re-encoded as per-class streams (see "Packed chunks" below) and
 *         compressed as one zstd frame; `used` is the decompressed length,
 *         `stored` the compressed length, `crc` a CRC-32 of the stored bytes.
 *   FREE  reserved space nobody wrote into (a thread exited early); skipped.
 *   TRAILER  last chunk of a packed file: `used` = number of data chunks.
 *            A packed file without it was cut short.
 *
 * Ordering. Each thread appends to its own chunk (one writer per chunk, no
 * global lock). Every event takes a number from one process-wide counter
 * (`seq`), so a reader merges the per-thread streams by seq and sees the
 * events in an order consistent with the program's own synchronisation:
 * an allocation takes its number after the allocator returned, a free
 * before the memory is handed back, a realloc one of each. Records that
 * are not events (stacks, modules, RSS samples) carry no seq and sort just
 * after the event before them in the same stream (or at `seq_base`).
 *
 * Rules a reader may rely on: within a chunk, every event's seq is greater
 * than the chunk's seq_base (seq_base is the thread's last seq before the
 * chunk, seqs start at 1). Seqs within a chunk normally increase, but a
 * signal handler that allocates between its thread taking a seq and writing
 * the record makes a later record carry a smaller one: seq deltas are added
 * modulo 2^64. An mremap is written by one thread as a MUNMAP (kind REMAP)
 * of the old range followed by an MMAP (kind REMAP) of the new one.
 *
 * Stacks form one call tree per trace, written node by node, each node
 * once: a new stack costs only the frames no earlier stack had. Node ids
 * are global: a record may name a node (as its stack or parent) whose
 * STACK record is in another thread's stream and comes later in merged
 * order. Readers resolve stacks after the pass (in a whole trace every
 * node is defined somewhere).
 *
 * Version bump rule: MT_FORMAT_VERSION goes up whenever a reader of the
 * previous version would misread a file: a changed struct or field, a new
 * meaning for an existing tag or kind. Adding a record tag does not bump it
 * only if old readers can skip it, which they cannot (records carry no
 * length), so new tags bump the version too. Readers refuse versions newer
 * than the one they know, with a clear message.
 */
#ifndef MEMTRACE_FORMAT_H
#define MEMTRACE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define MT_FORMAT_VERSION 2u
#define MT_FORMAT_VERSION_MIN 1u /* oldest version readers still accept:
                                    version 2 only added MARK and GPU */

/* ---- file header ----------------------------------------------------- */

#define MT_FILE_MAGIC "MEMTRACE" /* 8 bytes, no terminator in the file */
#define MT_FILE_HDR_SIZE 128u

enum {
    MT_FILE_PACKED = 1u << 0, /* chunks are ZSTD, a TRAILER ends the file */
};

struct mt_file_hdr {
    char magic[8];          /* MT_FILE_MAGIC */
    uint32_t version;       /* MT_FORMAT_VERSION */
    uint32_t hdr_size;      /* MT_FILE_HDR_SIZE; first chunk starts here */
    uint32_t flags;         /* MT_FILE_* */
    uint32_t pid;           /* traced process */
    uint32_t ppid;          /* its parent at start */
    uint32_t session_pid;   /* pid of the first traced process of the run */
    uint32_t page_size;     /* of the recording machine */
    uint32_t time_shift;    /* times in records count units of 2^shift ns */
    uint64_t start_mono_ns; /* CLOCK_MONOTONIC at start; times are relative */
    uint64_t start_real_ns; /* CLOCK_REALTIME at start, for display */
    uint8_t reserved[72];   /* zero */
};

/* ---- chunks ------------------------------------------------------------ */

#define MT_CHUNK_MAGIC 0x4b43544du /* "MTCK" read as little-endian u32 */
#define MT_CHUNK_HDR_SIZE 64u

enum mt_chunk_type {
    MT_CHUNK_RAW = 1,
    MT_CHUNK_ZSTD = 2,
    MT_CHUNK_FREE = 3,
    MT_CHUNK_TRAILER = 4,
};

struct mt_chunk_hdr {
    uint32_t magic;     /* MT_CHUNK_MAGIC */
    uint16_t type;      /* enum mt_chunk_type */
    uint16_t hdr_size;  /* MT_CHUNK_HDR_SIZE */
    uint32_t tid;       /* writing thread (kernel tid) */
    uint32_t flags;     /* zero */
    uint64_t size;      /* whole chunk, header included; next chunk follows */
    uint64_t used;      /* payload bytes (decompressed length for ZSTD) */
    uint64_t seq_base;  /* seq deltas in the payload start from this */
    uint64_t time_base; /* time deltas start from this (time units) */
    uint32_t stored;    /* ZSTD: compressed bytes after the header */
    uint32_t crc;       /* ZSTD: CRC-32 (IEEE) of the stored bytes */
    uint64_t reserved;  /* zero */
};

/* ---- records -------------------------------------------------------------
 *
 * A record is a tag byte, (tag >> 4) = type and (tag & 15) = kind, then
 * varint fields in the order listed. "delta" fields are relative to the
 * previous record of the same chunk that has the field (seq: seq_base,
 * time: time_base, addr: 0 at chunk start); "zz" fields are zigzag-encoded
 * signed deltas. The address chain is shared by ALLOC and FREE only (MMAP
 * and MUNMAP write absolute addresses and leave it alone); the ip chain
 * belongs to STACK. A zero tag byte is invalid.
 *
 * Each field is listed with its stream class in brackets (see "Packed
 * chunks" below; in a RAW chunk all fields simply follow each other).
 *
 * ALLOC   seq delta [SEQ], time delta [TIME], addr zz delta [ADDR],
 *         size [SIZE], stack id [STACK]
 * FREE    seq delta [SEQ], time delta [TIME], addr zz delta [ADDR]
 * MMAP    seq delta [SEQ], time delta [TIME], addr [ADDR], length [SIZE],
 *         prot [MISC], flags [MISC], stack id [STACK]
 * MUNMAP  seq delta [SEQ], time delta [TIME], addr [ADDR], length [SIZE]
 * BLOCK_ALLOC (packed chunks only) seq delta [SEQ], time delta [TIME],
 *         size [SIZE], stack id [STACK]: an ALLOC whose address was not
 *         kept; the block it allocates is named by its own seq. Kinds as
 *         ALLOC.
 * BLOCK_FREE (packed chunks only) seq delta [SEQ], time delta [TIME],
 *         this record's seq minus the seq of the allocation it releases
 *         [REF]. Kinds as FREE, plus MT_FREE_IMPLICIT: the block's address
 *         was handed out again with no free in between (only in damaged or
 *         incomplete traces); the block ends at this record, which has the
 *         seq of the ALLOC that reused the address and comes just before
 *         it in its chunk.
 * STACK   one node of the call tree: node id, id - parent id (the parent
 *         is 0, the root, or a node with a smaller id), instruction
 *         pointer as a zz delta from the previous STACK record's pointer
 *         in the chunk (0 at chunk start). An event's stack id names a
 *         node; its frames are the pointers on the path from that node up
 *         to the root: frame 0 (the node itself) is the innermost caller of
 *         the allocator (memtrace's own frames are already cut off), the
 *         last is the outermost. Every frame is a return address: the call
 *         site is the instruction before it. Stack id 0: no stack. The
 *         recorder writes paths of at most MT_MAX_FRAMES nodes; readers
 *         that walk a path stop there (a corrupted tree may have cycles).
 *         Streams: node id [STACK], parent delta [STACK], ip [ADDR].
 * MODULE  kind LOAD: load bias, segment count n, n pairs (start, end) of
 *         mapped address ranges, build-id length + bytes, path length +
 *         bytes. Kind UNLOAD: load bias. All fields [MISC].
 * RSS     time delta [TIME], resident bytes [MISC] (kind SAMPLE from
 *         /proc/self/statm, kind HWM the kernel's high-water mark VmHWM).
 * PROCESS pid, ppid, exe length + bytes, argv length + bytes (arguments
 *         separated by NUL bytes). All fields [MISC].
 * END     time delta [TIME], kind = how the process ended (enum
 *         mt_end_kind), status (exit code) [MISC].
 * LOST    count of events not recorded (recorder stopped: disk full, ...)
 *         [MISC].
 * MARK    (version 2) what the program says about itself through
 *         include/memtrace.h, or memtrace's PyTorch integration says for
 *         it. All kinds but STRING are events: they take a seq, so they
 *         sort among every thread's allocations, and phases and scopes are
 *         process-wide (an allocation by an autograd or OpenMP worker is
 *         in the phase the main thread set). Kinds (enum mt_mark_kind):
 *   STRING      (not an event) string id, length + bytes [MISC]: a name
 *               the other kinds use by id, defined once per trace, before
 *               or after its first use in merged order (like stack nodes).
 *               Id 0 is the empty string and is never defined.
 *   PHASE_PUSH  seq delta [SEQ], time delta [TIME], name id [MISC]: enter
 *               a phase; phases nest, the innermost is the current one.
 *   PHASE_POP   seq delta [SEQ], time delta [TIME]: leave the innermost.
 *   STEP        seq delta [SEQ], time delta [TIME], step number [MISC]:
 *               a training step begins.
 *   SCOPE_PUSH  seq delta [SEQ], time delta [TIME], path id [MISC]: enter
 *               a module (a dotted path such as blocks.3.fc1).
 *   SCOPE_POP   seq delta [SEQ], time delta [TIME]: leave the innermost.
 *   TAG         seq delta [SEQ], time delta [TIME], addr [ADDR], category
 *               id [MISC], space [MISC] (enum mt_tag_space): the
 *               allocation that starts at addr, live now, belongs to the
 *               category for its whole life (a later TAG overrides).
 *   TAG_BLOCK   (packed chunks only) seq delta [SEQ], time delta [TIME],
 *               this record's seq minus the seq of the heap allocation it
 *               tags [REF], category id [MISC]: a host TAG whose address
 *               `memtrace pack` resolved to its block.
 * GPU     (version 2) device memory, from the CUDA driver and runtime
 *         (preload/cuda.c), and per-tensor events of a framework's own
 *         allocator. Events. Kinds (enum mt_gpu_kind):
 *   ALLOC  seq delta [SEQ], time delta [TIME], addr [ADDR], size [SIZE],
 *          device [MISC], stream [MISC] (0: none), api [MISC] (enum
 *          mt_gpu_api: the function called), space [MISC] (enum
 *          mt_gpu_space), stack id [STACK].
 *   FREE   seq delta [SEQ], time delta [TIME], addr [ADDR], device [MISC],
 *          api [MISC], space [MISC]: releases the ALLOC of that space,
 *          device and address.
 *   OOM    seq delta [SEQ], time delta [TIME], size [SIZE], device [MISC],
 *          api [MISC], space [MISC], result [MISC] (the CUresult or
 *          cudaError_t), stack id [STACK]: an allocation that failed.
 *         GPU addresses are kept by `memtrace pack`, as mappings' are.
 *
 * Packed chunks. The decompressed payload of a ZSTD chunk is not one run of
 * records but MT_STREAM_COUNT streams, in the order of enum mt_stream, each
 * preceded by its byte length as a varint: TAG holds the tag bytes, and
 * each other stream the fields of its class, record after record. A reader
 * decodes a packed chunk like a RAW one, taking the tag from TAG and each
 * field from the stream of its class (byte strings included, with their
 * length, in MISC); deltas chain exactly as in a RAW chunk. A packed chunk
 * is malformed if any stream is not used up exactly. Like with like (sizes
 * with sizes, times with times) compresses far better than interleaved
 * records. `memtrace pack` also drops the addresses of heap blocks, which
 * nothing downstream needs once each free names its allocation: it writes
 * BLOCK_ALLOC and BLOCK_FREE for ALLOC and FREE, and keeps FREE (with its
 * address) only for a free of a block whose allocation is not in the trace.
 */

enum mt_rec_type {
    MT_REC_ALLOC = 1,
    MT_REC_FREE = 2,
    MT_REC_MMAP = 3,
    MT_REC_MUNMAP = 4,
    MT_REC_STACK = 5,
    MT_REC_MODULE = 6,
    MT_REC_RSS = 7,
    MT_REC_PROCESS = 8,
    MT_REC_END = 9,
    MT_REC_LOST = 10,
    MT_REC_BLOCK_ALLOC = 11, /* packed chunks only */
    MT_REC_BLOCK_FREE = 12,  /* packed chunks only */
    MT_REC_MARK = 13,        /* version 2 */
    MT_REC_GPU = 14,         /* version 2 */
};

/* Stream classes of packed chunks, in payload order. */
enum mt_stream {
    MT_STREAM_TAG = 0,
    MT_STREAM_SEQ = 1,
    MT_STREAM_TIME = 2,
    MT_STREAM_ADDR = 3,
    MT_STREAM_SIZE = 4,
    MT_STREAM_STACK = 5,
    MT_STREAM_REF = 6,
    MT_STREAM_MISC = 7,
    MT_STREAM_COUNT = 8
};

/* Kinds of ALLOC: the entry point that allocated. */
enum mt_alloc_kind {
    MT_ALLOC_MALLOC = 0,
    MT_ALLOC_CALLOC = 1,
    MT_ALLOC_REALLOC = 2, /* realloc/reallocarray: new block */
    MT_ALLOC_POSIX_MEMALIGN = 3,
    MT_ALLOC_ALIGNED_ALLOC = 4,
    MT_ALLOC_MEMALIGN = 5,
    MT_ALLOC_VALLOC = 6,
    MT_ALLOC_PVALLOC = 7,
    MT_ALLOC_REALLOCARRAY = 8,
    MT_ALLOC_KIND_COUNT
};

/* Kinds of FREE. */
enum mt_free_kind {
    MT_FREE_FREE = 0,
    MT_FREE_REALLOC = 1, /* the old block of a realloc (moved, shrunk, size 0) */
    MT_FREE_IMPLICIT = 2, /* BLOCK_FREE only: address reused without a free */
};

/* Kinds of MMAP and MUNMAP. */
enum mt_map_kind {
    MT_MAP_ANON = 0,        /* MMAP: anonymous mapping made by the program */
    MT_MAP_FILE = 1,        /* MMAP: file-backed mapping */
    MT_MAP_REMAP = 2,       /* MMAP: new range of an mremap; anonymous or
                               file-backed as the range it came from was */
    MT_UNMAP_MUNMAP = 0,    /* MUNMAP: munmap (may cover part of a mapping) */
    MT_UNMAP_REMAP = 1,     /* MUNMAP: old range of an mremap */
};

enum mt_module_kind { MT_MODULE_LOAD = 0, MT_MODULE_UNLOAD = 1 };
enum mt_rss_kind { MT_RSS_SAMPLE = 0, MT_RSS_HWM = 1 };

enum mt_mark_kind {
    MT_MARK_STRING = 0,
    MT_MARK_PHASE_PUSH = 1,
    MT_MARK_PHASE_POP = 2,
    MT_MARK_STEP = 3,
    MT_MARK_SCOPE_PUSH = 4,
    MT_MARK_SCOPE_POP = 5,
    MT_MARK_TAG = 6,
    MT_MARK_TAG_BLOCK = 7, /* packed chunks only */
};

/* Where a TAG's address lives. */
enum mt_tag_space {
    MT_TAG_HOST = 0, /* a heap block (malloc family) */
    MT_TAG_GPU = 1,  /* a GPU ALLOC of space DEVICE or TENSOR */
};

enum mt_gpu_kind { MT_GPU_ALLOC = 0, MT_GPU_FREE = 1, MT_GPU_OOM = 2 };

/* What a GPU ALLOC's bytes are. DEVICE is device memory the driver handed
 * out (what PyTorch calls reserved); TENSOR is one tensor inside it, from
 * the framework's allocator (allocated); the others are kept apart. */
enum mt_gpu_space {
    MT_GPU_SPACE_DEVICE = 0,     /* cuMemAlloc*, cuMemAllocAsync, pools */
    MT_GPU_SPACE_HOST = 1,       /* pinned host memory: cuMemHostAlloc, cuMemAllocHost */
    MT_GPU_SPACE_MANAGED = 2,    /* cuMemAllocManaged */
    MT_GPU_SPACE_REGISTERED = 3, /* cuMemHostRegister: existing host memory pinned */
    MT_GPU_SPACE_VA = 4,         /* cuMemAddressReserve: addresses, no memory */
    MT_GPU_SPACE_PHYSICAL = 5,   /* cuMemCreate: memory, addr is the handle */
    MT_GPU_SPACE_MAPPED = 6,     /* cuMemMap: a VA range backed by PHYSICAL */
    MT_GPU_SPACE_TENSOR = 7,     /* a framework's per-tensor allocation */
    MT_GPU_SPACE_POOL = 8,       /* what a stream-ordered pool holds: addr is
                                    the pool, size its reserved bytes; a
                                    change is a FREE of the old amount and an
                                    ALLOC of the new one */
    MT_GPU_SPACE_COUNT
};

/* The function behind a GPU record (driver unless named cuda*). */
enum mt_gpu_api {
    MT_GPU_API_OTHER = 0,
    MT_GPU_API_MEM_ALLOC = 1,        /* cuMemAlloc_v2 */
    MT_GPU_API_MEM_ALLOC_PITCH = 2,  /* cuMemAllocPitch_v2 */
    MT_GPU_API_MEM_FREE = 3,         /* cuMemFree_v2 */
    MT_GPU_API_MEM_ALLOC_MANAGED = 4,
    MT_GPU_API_MEM_HOST_ALLOC = 5,
    MT_GPU_API_MEM_ALLOC_HOST = 6,   /* cuMemAllocHost_v2 */
    MT_GPU_API_MEM_FREE_HOST = 7,
    MT_GPU_API_MEM_HOST_REGISTER = 8,
    MT_GPU_API_MEM_HOST_UNREGISTER = 9,
    MT_GPU_API_MEM_ADDRESS_RESERVE = 10,
    MT_GPU_API_MEM_ADDRESS_FREE = 11,
    MT_GPU_API_MEM_CREATE = 12,
    MT_GPU_API_MEM_RELEASE = 13,
    MT_GPU_API_MEM_MAP = 14,
    MT_GPU_API_MEM_UNMAP = 15,
    MT_GPU_API_MEM_ALLOC_ASYNC = 16,
    MT_GPU_API_MEM_FREE_ASYNC = 17,
    MT_GPU_API_MEM_ALLOC_FROM_POOL_ASYNC = 18,
    MT_GPU_API_CUDA_MALLOC = 19,     /* runtime API */
    MT_GPU_API_CUDA_FREE = 20,
    MT_GPU_API_CUDA_MALLOC_ASYNC = 21,
    MT_GPU_API_CUDA_FREE_ASYNC = 22,
    MT_GPU_API_CUDA_MALLOC_MANAGED = 23,
    MT_GPU_API_CUDA_MALLOC_HOST = 24,
    MT_GPU_API_CUDA_HOST_ALLOC = 25,
    MT_GPU_API_CUDA_FREE_HOST = 26,
    MT_GPU_API_CUDA_MALLOC_PITCH = 27,
    MT_GPU_API_TORCH = 28,           /* PyTorch's caching allocator (TENSOR) */
    MT_GPU_API_MEM_POOL = 29,        /* a pool's reserved bytes (POOL), read
                                        with cuMemPoolGetAttribute */
    MT_GPU_API_COUNT
};

enum mt_end_kind {
    MT_END_EXIT = 0,  /* exit() or return from main: destructors ran */
    MT_END_UNDERSCORE_EXIT = 1, /* _exit/_Exit called */
};

#define MT_MAX_FRAMES 128u
#define MT_MAX_PATH 4096u
#define MT_MAX_BUILD_ID 64u
#define MT_MAX_SEGMENTS 16u
#define MT_MAX_ARGV 65536u

/* Longest encoding of any event record (ALLOC, FREE, MMAP, MUNMAP, MARK
 * events, GPU). */
#define MT_MAX_EVENT_RECORD (1 + 9 * 10)
#define MT_MAX_STRING 4096u /* longest MARK STRING */

static inline uint8_t mt_tag(unsigned type, unsigned kind)
{
    return (uint8_t)((type << 4) | (kind & 15u));
}

/* ---- varints ------------------------------------------------------------- */

/* Writes v as LEB128 into p (room for 10 bytes); returns the new end. */
static inline uint8_t *mt_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint64_t mt_zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t mt_unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Reads one LEB128 varint from [*pp, end). Returns 0 and advances *pp, or
 * -1 if the input ends inside the varint or it is longer than 10 bytes. */
static inline int mt_get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *ret)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return -1;
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *ret = v;
            return 0;
        }
    }
    return -1;
}

#endif /* MEMTRACE_FORMAT_H */
