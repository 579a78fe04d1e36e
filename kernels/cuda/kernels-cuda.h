/* kernels-cuda.h: the CUDA kernels (kernels.cu), each the GPU twin of a C
 * kernel in mtkernels.h with the same formats and the same arithmetic, so
 * the results are bit-identical (device code uses the _rn intrinsics and is
 * built with -fmad=false). Pointers are device pointers unless named
 * host_*; every launcher is asynchronous on `stream` and returns the
 * launch's cudaError_t. Offload copies are synchronous and return when the
 * data has arrived.
 */
#ifndef MT_KERNELS_CUDA_H
#define MT_KERNELS_CUDA_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "mtkernels.h"

cudaError_t mtc_q8_quantize(const float *x, size_t n, size_t block, int8_t *codes, float *absmax,
                            cudaStream_t stream);
cudaError_t mtc_q8_dequantize(const int8_t *codes, const float *absmax, size_t n, size_t block,
                              float *x, cudaStream_t stream);
cudaError_t mtc_adamw8_step(float *param, const float *grad, int8_t *m, float *m_absmax,
                            int8_t *v, float *v_absmax, size_t n, size_t block,
                            const struct mt_adamw_params *hp, long step, cudaStream_t stream);
/* Same shape rules as mt_kv_layout. Fast paths where channels % 4 == 0, x
 * and meta are 16-byte aligned and codes 4-byte aligned: keys groups 8, 16
 * and 32, values groups 8, 16, 32 and 64 (dequantize: keys any group);
 * other shapes take slower generic kernels (values groups dividing 32 a
 * warp per group, others a thread per group). */
cudaError_t mtc_kv_quantize(enum mt_kv_kind kind, const float *x, size_t tokens, size_t channels,
                            unsigned bits, size_t group, uint8_t *codes, uint16_t *meta,
                            cudaStream_t stream);
cudaError_t mtc_kv_dequantize(enum mt_kv_kind kind, const uint8_t *codes, const uint16_t *meta,
                              size_t tokens, size_t channels, unsigned bits, size_t group,
                              float *x, cudaStream_t stream);

/* The arithmetic identities the fast KV paths rest on, checked
 * exhaustively on the device (kernels.cu says which): the number of
 * mismatches of each of the three, all 0 on a correct device. */
cudaError_t mtc_kv_selftest(unsigned long long mismatches[3]);

/* Device <-> pinned host in chunks alternating between two streams. */
cudaError_t mtc_offload_d2h(void *host_pinned, const void *dev, size_t bytes, size_t chunk,
                            cudaStream_t s[2]);
cudaError_t mtc_offload_h2d(void *dev, const void *host_pinned, size_t bytes, size_t chunk,
                            cudaStream_t s[2]);
/* Device <-> pageable host through pinned staging chunks: the DMA of one
 * chunk overlaps the host copy of the other. `threads` such pipelines run
 * side by side on slices of the buffer (the host memcpy is what limits
 * one), each with its own two staging chunks (stage_pinned holds 2 *
 * chunk * threads bytes) and two streams (s[2 * threads]). */
cudaError_t mtc_offload_d2h_staged(void *host, const void *dev, size_t bytes, size_t chunk,
                                   void *stage_pinned, cudaStream_t *s, unsigned threads);
cudaError_t mtc_offload_h2d_staged(void *dev, const void *host, size_t bytes, size_t chunk,
                                   void *stage_pinned, cudaStream_t *s, unsigned threads);

#endif
