// The public format header, included from C++ (compiled only).
#include "memtrace-format.h"

int main()
{
    uint8_t buf[10];
    const uint8_t *p = buf;
    uint64_t v = 0;
    uint8_t *end = mt_put_varint(buf, 12345);
    return mt_get_varint(&p, end, &v) == 0 && v == 12345 ? 0 : 1;
}
