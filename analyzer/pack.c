/* pack: RAW trace -> packed trace (see pack.h).
 *
 * The source is opened with the reader, so the whole chunk chain is
 * validated before anything is written; payloads are then copied chunk by
 * chunk with pread (RAW payloads are compressed, ZSTD chunks found in an
 * unpacked file are copied as they are). The output goes to
 * "<dir>/.<name>.pack-XXXXXX" next to the real file (symlinks resolved), is
 * fsync'ed and re-opened with the reader as a check, then renamed over the
 * original: a crash or error at any point leaves the original intact.
 * Memory: two buffers the size of the largest chunk. No shared state.
 */
#include "pack.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "crc32.h"
#include "reader.h"
#include "report.h"

static int write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int read_full(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n) {
        ssize_t k = pread(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO; /* shorter than the index said: the file changed */
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* True if pid names a running (not zombie) process on this machine. */
static bool process_alive(uint32_t pid)
{
    if (pid == 0 || pid > INT_MAX)
        return false;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM)
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%" PRIu32 "/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *rp = strrchr(buf, ')');
    if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
        return false;
    return true;
}

static int grow(uint8_t **buf, size_t *cap, size_t want)
{
    if (*cap >= want)
        return 0;
    uint8_t *nb = realloc(*buf, want);
    if (!nb)
        return -ENOMEM;
    *buf = nb;
    *cap = want;
    return 0;
}

/* Writes the packed form of r into fd. */
static int pack_into(struct mt_reader *r, int fd, const char *path, int level,
                     uint64_t *chunks_out, uint64_t *bytes_out, struct mt_error *err)
{
    const int in = mt_reader_fd(r);
    uint8_t *ibuf = NULL, *obuf = NULL;
    size_t icap = 0, ocap = 0;
    uint64_t nchunks = 0, bytes = 0;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    int rc = cctx ? 0 : -ENOMEM;
    if (rc < 0)
        goto nomem;

    struct mt_file_hdr fh;
    rc = read_full(in, &fh, sizeof fh, 0);
    if (rc < 0)
        goto io;
    fh.flags |= MT_FILE_PACKED;
    rc = write_full(fd, &fh, sizeof fh);
    if (rc < 0)
        goto wr;
    bytes += sizeof fh;

    size_t n = mt_reader_chunk_count(r);
    for (size_t i = 0; i < n; i++) {
        struct mt_chunk_info c;
        mt_reader_chunk(r, i, &c);
        struct mt_chunk_hdr h = {
            .magic = MT_CHUNK_MAGIC, .type = MT_CHUNK_ZSTD, .hdr_size = MT_CHUNK_HDR_SIZE,
            .tid = c.tid, .used = c.used, .seq_base = c.seq_base, .time_base = c.time_base,
        };
        const uint8_t *data;
        size_t dlen;
        if (c.type == MT_CHUNK_RAW && c.used > 0) {
            if (c.used > SIZE_MAX / 2 || grow(&ibuf, &icap, (size_t)c.used) < 0)
                goto nomem;
            rc = read_full(in, ibuf, (size_t)c.used, c.offset + MT_CHUNK_HDR_SIZE);
            if (rc < 0)
                goto io;
            size_t bound = ZSTD_compressBound((size_t)c.used);
            if (grow(&obuf, &ocap, bound) < 0)
                goto nomem;
            size_t z = ZSTD_compressCCtx(cctx, obuf, ocap, ibuf, (size_t)c.used, level);
            if (ZSTD_isError(z)) {
                mti_error_set(err, "%s: compression failed: %s", path, ZSTD_getErrorName(z));
                rc = -EIO;
                goto out;
            }
            if (z > UINT32_MAX) {
                mti_error_set(err, "%s: chunk at byte offset %" PRIu64 " too large to pack", path,
                              c.offset);
                rc = -EFBIG;
                goto out;
            }
            h.stored = (uint32_t)z;
            h.crc = mt_crc32(0, obuf, z);
            data = obuf;
            dlen = z;
        } else if (c.type == MT_CHUNK_ZSTD && c.used > 0) {
            if (grow(&obuf, &ocap, c.stored) < 0)
                goto nomem;
            rc = read_full(in, obuf, c.stored, c.offset + MT_CHUNK_HDR_SIZE);
            if (rc < 0)
                goto io;
            h.stored = c.stored;
            h.crc = c.crc;
            data = obuf;
            dlen = c.stored;
        } else {
            continue; /* FREE, empty, or a stray TRAILER */
        }
        h.size = MT_CHUNK_HDR_SIZE + (uint64_t)dlen;
        rc = write_full(fd, &h, sizeof h);
        if (rc == 0)
            rc = write_full(fd, data, dlen);
        if (rc < 0)
            goto wr;
        bytes += h.size;
        nchunks++;
    }
    struct mt_chunk_hdr t = {
        .magic = MT_CHUNK_MAGIC, .type = MT_CHUNK_TRAILER, .hdr_size = MT_CHUNK_HDR_SIZE,
        .size = MT_CHUNK_HDR_SIZE, .used = nchunks,
    };
    rc = write_full(fd, &t, sizeof t);
    if (rc < 0)
        goto wr;
    bytes += sizeof t;
    if (fsync(fd) < 0) {
        rc = -errno;
        goto wr;
    }
    *chunks_out = nchunks;
    *bytes_out = bytes;
    goto out;

nomem:
    rc = -ENOMEM;
    mti_error_set(err, "%s: out of memory", path);
    goto out;
io:
    mti_error_set(err, "cannot read '%s': %s", path, strerror(-rc));
    goto out;
wr:
    mti_error_set(err, "cannot write the packed copy of '%s': %s", path, strerror(-rc));
out:
    ZSTD_freeCCtx(cctx);
    free(ibuf);
    free(obuf);
    return rc;
}

int mt_pack_file_ex(const char *path, int level, unsigned flags, struct mt_pack_result *res,
                    struct mt_error *err)
{
    if (level < 1 || level > ZSTD_maxCLevel()) {
        mti_error_set(err, "compression level %d out of range (1..%d)", level, ZSTD_maxCLevel());
        return -EINVAL;
    }
    struct mt_reader *r = NULL;
    int rc = mt_reader_open(path, &r, err);
    if (rc < 0)
        return rc;
    const struct mt_trace_info *info = mt_reader_info(r);
    struct mt_pack_result out = { .bytes_before = info->file_size };
    char *real = NULL, *tmp = NULL;
    int fd = -1;

    if (info->packed) {
        out.already_packed = true;
        out.bytes_after = info->file_size;
        out.chunks = info->data_chunks;
        goto done;
    }
    if (mt_reader_partial(r)) {
        mti_error_set(err, "%s: trace is truncated; not packing it (the packed file would hide the cut)",
                      path);
        rc = -EINVAL;
        goto done;
    }
    if (!(flags & MT_PACK_FORCE) && process_alive(info->pid)) {
        mti_error_set(err, "%s: process %" PRIu32 " is still running and may still write this trace;"
                      " not packing it (--force packs anyway)", path, info->pid);
        rc = -EBUSY;
        goto done;
    }

    real = realpath(path, NULL);
    if (!real) {
        rc = -errno;
        mti_error_set(err, "cannot open '%s': %s", path, strerror(-rc));
        goto done;
    }
    const char *slash = strrchr(real, '/');
    size_t dlen = (size_t)(slash - real);
    size_t tlen = strlen(real) + 32;
    tmp = malloc(tlen);
    if (!tmp) {
        rc = -ENOMEM;
        mti_error_set(err, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, tlen, "%.*s/.%s.pack-XXXXXX", (int)dlen, real, slash + 1);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        mti_error_set(err, "cannot create a temporary file beside '%s': %s", path, strerror(-rc));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    struct stat st;
    if (fstat(mt_reader_fd(r), &st) == 0)
        (void)fchmod(fd, st.st_mode & 07777);

    rc = pack_into(r, fd, path, level, &out.chunks, &out.bytes_after, err);
    if (close(fd) < 0 && rc == 0) {
        rc = -errno;
        mti_error_set(err, "cannot write the packed copy of '%s': %s", path, strerror(-rc));
    }
    fd = -1;
    if (rc < 0)
        goto done;

    /* Check what was written before it replaces the original. */
    struct mt_reader *check = NULL;
    struct mt_error cerr;
    rc = mt_reader_open(tmp, &check, &cerr);
    if (rc == 0 && (mt_reader_partial(check) || mt_reader_info(check)->data_chunks != out.chunks))
        rc = -EIO;
    mt_reader_close(check);
    if (rc < 0) {
        mti_error_set(err, "%s: the packed copy does not read back; original kept", path);
        goto done;
    }
    if (rename(tmp, real) < 0) {
        rc = -errno;
        mti_error_set(err, "cannot replace '%s': %s", path, strerror(-rc));
        goto done;
    }
    free(tmp);
    tmp = NULL;

done:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(real);
    mt_reader_close(r);
    if (rc == 0 && res)
        *res = out;
    return rc;
}

int mt_pack_file(const char *path, int level, struct mt_error *err)
{
    return mt_pack_file_ex(path, level, 0, NULL, err);
}

/* ---- command line ------------------------------------------------------------ */

static void pack_usage(FILE *f)
{
    fprintf(f,
            "Usage: memtrace pack [--level N] [--force] FILE...\n"
            "\n"
            "Compress traces left uncompressed (a run that was killed, or run with packing\n"
            "off). Each FILE is rewritten in place; an already packed FILE is left as it is.\n"
            "\n"
            "Options:\n"
            "  -l, --level N  zstd compression level, 1..%d (default 3)\n"
            "  -f, --force    pack even if the traced process still seems to be running\n"
            "  -h, --help     show this help\n"
            "\n"
            "Exit status: 0 all packed, 1 a FILE could not be packed, 2 usage error.\n",
            ZSTD_maxCLevel());
}

static int pack_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memtrace pack: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'memtrace pack --help'.\n");
    return 2;
}

static bool parse_level(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > ZSTD_maxCLevel())
        return false;
    *out = (int)v;
    return true;
}

int mt_pack_main(int argc, char **argv)
{
    int level = 3;
    unsigned flags = 0;
    int nfiles = 0;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) {
        fprintf(stderr, "memtrace: out of memory\n");
        return 1;
    }
    bool opts = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts && !strcmp(a, "--")) {
            opts = false;
        } else if (opts && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            pack_usage(stdout);
            free(files);
            return 0;
        } else if (opts && (!strcmp(a, "-f") || !strcmp(a, "--force"))) {
            flags |= MT_PACK_FORCE;
        } else if (opts && (!strcmp(a, "-l") || !strcmp(a, "--level"))) {
            if (i + 1 >= argc) {
                free(files);
                return pack_usage_error("option '%s' needs a value", a);
            }
            if (!parse_level(argv[++i], &level)) {
                free(files);
                return pack_usage_error("invalid compression level '%s'", argv[i]);
            }
        } else if (opts && !strncmp(a, "--level=", 8)) {
            if (!parse_level(a + 8, &level)) {
                free(files);
                return pack_usage_error("invalid compression level '%s'", a + 8);
            }
        } else if (opts && a[0] == '-' && a[1]) {
            free(files);
            return pack_usage_error("unknown option '%s'", a);
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (nfiles == 0) {
        free(files);
        return pack_usage_error("%s", "no trace file given");
    }
    int status = 0;
    for (int i = 0; i < nfiles; i++) {
        struct mt_error err;
        struct mt_pack_result res;
        if (mt_pack_file_ex(files[i], level, flags, &res, &err) < 0) {
            fprintf(stderr, "memtrace: %s\n", err.msg);
            status = 1;
            continue;
        }
        if (res.already_packed) {
            printf("%s: already packed\n", files[i]);
            continue;
        }
        char before[32], after[32];
        mt_human_size(res.bytes_before, before, sizeof before);
        mt_human_size(res.bytes_after, after, sizeof after);
        printf("%s: packed, %s -> %s (%" PRIu64 " chunks)\n", files[i], before, after, res.chunks);
    }
    fflush(stdout);
    free(files);
    return status;
}
