/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as used by the ZSTD
 * chunks of the trace format and by zlib/gzip.
 *
 * mt_crc32(0, buf, len) is the CRC of buf; feeding the result back as `crc`
 * continues it over more bytes. Tables are built once on first use
 * (pthread_once), so the function is thread-safe.
 */
#ifndef MT_CRC32_H
#define MT_CRC32_H

#include <stddef.h>
#include <stdint.h>

uint32_t mt_crc32(uint32_t crc, const void *buf, size_t len);

#endif /* MT_CRC32_H */
