/* libFuzzer target for the trace reader.
 *
 * Each input is written to an anonymous memory file and read as a trace:
 * open, then every record in merged order. The reader must come back with
 * a record, the end, or one clear error for any input, and never read out
 * of bounds, leak, or crash; the sanitizers (ASan, UBSan) and libFuzzer's
 * leak check watch for it. tests/test-fuzz.sh builds this with clang and
 * runs it briefly over a seed corpus of real traces; tests/README.md gives
 * the command for a long run.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("trace", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    struct mt_reader *r = NULL;
    struct mt_error err;
    if (mt_reader_open(path, &r, &err) == 0) {
        struct mt_record rec;
        uint64_t n = 0;
        int rc;
        while ((rc = mt_reader_next(r, &rec)) > 0) {
            /* Touch what the record points to, as a consumer would. */
            if (rec.type == MT_REC_MODULE && rec.path_len)
                n += (uint8_t)rec.path[rec.path_len - 1];
            if (rec.type == MT_REC_PROCESS && rec.argv_len)
                n += (uint8_t)rec.argv[rec.argv_len - 1];
            n++;
        }
        if (rc < 0 && !mt_reader_error(r)[0])
            __builtin_trap(); /* an error must come with a message */
        (void)mt_reader_partial(r);
        mt_reader_close(r);
    } else if (!err.msg[0]) {
        __builtin_trap();
    }
    close(fd);
    return 0;
}
