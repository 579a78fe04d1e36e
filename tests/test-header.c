/* The public header compiles on its own as strict C11 (and, from
 * test-header.cc, as C++), and its varint helpers round-trip. Built with
 * -std=c11 -pedantic -Werror; exits non-zero on a wrong round trip. */
#include "memtrace-format.h"

#include <stdio.h>

int main(void)
{
    static const uint64_t values[] = { 0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, (uint64_t)1 << 63,
                                       UINT64_MAX };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint8_t buf[10];
        uint8_t *end = mt_put_varint(buf, values[i]);
        const uint8_t *p = buf;
        uint64_t back = 0;
        if (mt_get_varint(&p, end, &back) != 0 || back != values[i] || p != end) {
            printf("varint round trip failed for %llu\n", (unsigned long long)values[i]);
            return 1;
        }
        int64_t s = (int64_t)values[i];
        if (mt_unzigzag(mt_zigzag(s)) != s) {
            printf("zigzag round trip failed for %lld\n", (long long)s);
            return 1;
        }
    }
    if (sizeof(struct mt_file_hdr) != MT_FILE_HDR_SIZE || sizeof(struct mt_chunk_hdr) != MT_CHUNK_HDR_SIZE) {
        printf("header struct sizes differ from the format\n");
        return 1;
    }
    const uint8_t cut[] = { 0x80, 0x80 };
    const uint8_t *p = cut;
    uint64_t v;
    if (mt_get_varint(&p, cut + 2, &v) != -1) {
        printf("a cut varint was accepted\n");
        return 1;
    }
    printf("1 passed, 0 failed\n");
    return 0;
}
