/* mtkernels.h: the measurement kernels behind `memtrace verify`.
 *
 * Each technique the simulator models (8-bit optimizer state, KV-cache
 * quantization, latent compression, offloading, recomputation) has a real
 * kernel here, so that its assumptions (bytes per value, error, throughput,
 * transfer time) can be measured on the user's machine at the user's sizes.
 * docs/KERNELS.md gives each kernel's formula, error bound and layout.
 *
 * Every compute kernel has a scalar reference and AVX2 and AVX-512 variants
 * chosen at run time; the variants perform the same IEEE operations in the
 * same order (the library is built with -ffp-contract=off), so their outputs
 * are bit-identical to the scalar reference, not merely close.
 *
 * Errors are values: functions return 0 or -errno and write their ret_ /
 * output arguments only on success (output arrays may be partly written on
 * failure). Thread-safety: kernels are reentrant; mt_isa_use() and
 * mt_threads_use() change process-wide settings and must not race with
 * running kernels.
 *
 * Threads: q8, AdamW and KV quantize/dequantize split large calls (at
 * least 1 MiB per part) over mt_threads_current() threads, 1 unless
 * mt_threads_use() says otherwise; the output is the same bits whatever
 * the count.
 */
#ifndef MTKERNELS_H
#define MTKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- instruction set selection ---------------------------------------- */

enum mt_isa { MT_ISA_SCALAR = 0, MT_ISA_AVX2 = 1, MT_ISA_AVX512 = 2 };
#define MT_ISA_COUNT 3

/* Whether this CPU runs the variant (the scalar one always). */
int mt_isa_supported(enum mt_isa isa);
/* The best variant this CPU runs; the default until mt_isa_use(). */
enum mt_isa mt_isa_best(void);
/* Use `isa` from now on: 0, or -ENOTSUP when the CPU lacks it. */
int mt_isa_use(enum mt_isa isa);
enum mt_isa mt_isa_current(void);
/* "scalar", "avx2", "avx512". */
const char *mt_isa_name(enum mt_isa isa);

/* ---- threads --------------------------------------------------------- */

#define MT_THREADS_MAX 256
/* CPUs this process may run on (its affinity mask), 1 to MT_THREADS_MAX. */
unsigned mt_threads_available(void);
/* Use n threads (1 to MT_THREADS_MAX) from now on: 0, or -EINVAL. */
int mt_threads_use(unsigned n);
unsigned mt_threads_current(void);

/* ---- block-wise int8 absmax quantization ------------------------------ */
/* Block b covers x[b*block, min((b+1)*block, n)); absmax[b] = max |x| over
 * it; codes[i] = rne(x[i] * fl(127/absmax[b])); dequantized value
 * codes[i] * fl(absmax[b]/127). A block with an Inf or NaN stores
 * absmax = NaN and codes 0 (it dequantizes to NaN: an overflow is never
 * turned into a finite value); a block with absmax < MT_Q8_TINY stores
 * absmax = 0 and codes 0. */
#define MT_Q8_TINY 0x1p-120f

/* Number of blocks (and of absmax values) for n values. */
size_t mt_q8_blocks(size_t n, size_t block);
/* 1 + 4/block: storage per value, scales included. */
double mt_q8_bytes_per_value(size_t block);
/* Largest |x - dequant(quant(x))| in a block of that absmax:
 * absmax * (1/254 + 5 * 2^-24) (derivation in docs/KERNELS.md). */
double mt_q8_error_bound(double absmax);

/* x: n floats; codes: n bytes; absmax: mt_q8_blocks(n, block) floats.
 * -EINVAL when block is 0. */
int mt_q8_quantize(const float *x, size_t n, size_t block,
                   int8_t *codes, float *absmax);
int mt_q8_dequantize(const int8_t *codes, const float *absmax, size_t n,
                     size_t block, float *x);

/* ---- AdamW with int8 moments ------------------------------------------ */
/* PyTorch's AdamW (decoupled weight decay, bias correction) for step t >= 1:
 *   p  = p * (1 - lr*wd)
 *   m  = b1*m + (1-b1)*g;   v = b2*v + (1-b2)*g*g
 *   p  = p - (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * mt_adamw32_step is the fp32 reference; mt_adamw8_step keeps m and v as
 * int8 codes with one absmax per block (the mt_q8 format above) and, block
 * by block in one pass, dequantizes them, updates p with the fp32 moments
 * and requantizes. Given the same dequantized moments, its p is bit-equal
 * to the reference's and its stored moments are within mt_q8_error_bound of
 * the reference's. */
struct mt_adamw_params {
    float lr, beta1, beta2, eps, weight_decay;
};

void mt_adamw32_step(float *param, const float *grad, float *m, float *v,
                     size_t n, const struct mt_adamw_params *hp, long step);
/* m, v: n codes each; m_absmax, v_absmax: mt_q8_blocks(n, block) floats.
 * -EINVAL for block 0 or step < 1, -ENOMEM. */
int mt_adamw8_step(float *param, const float *grad,
                   int8_t *m, float *m_absmax, int8_t *v, float *v_absmax,
                   size_t n, size_t block,
                   const struct mt_adamw_params *hp, long step);

/* ---- KV-cache quantization (KIVI-style) ------------------------------- */
/* x is [tokens][channels] fp32, row-major. Keys are quantized per channel
 * (a group is `group` consecutive tokens of one channel), values per token
 * (a group is `group` consecutive channels of one token). Each group keeps
 * an fp16 zero point z (its min, rounded down) and an fp16 scale s
 * ((max - z) / (2^bits - 1), rounded up); code = rne((x - z) / s) clamped
 * to [0, 2^bits - 1]; value = code * s + z. Codes are packed little-endian
 * within bytes, each row's channels contiguous. Non-finite inputs are
 * refused (-EDOM), as is a group whose zero
 * or scale overflows fp16 (-ERANGE). */
enum mt_kv_kind { MT_KV_KEYS = 0, MT_KV_VALUES = 1 };

struct mt_kv_layout {
    size_t code_bytes;      /* tokens * channels * bits / 8 */
    size_t groups;          /* number of (zero, scale) pairs */
    size_t meta_bytes;      /* groups * 4 (two fp16) */
    double bits_per_value;  /* bits + 32 / group */
};

/* bits 2, 4 or 8; keys need tokens % group == 0 (keep the residual tokens
 * in full precision, as KIVI does), values channels % group == 0; channels
 * * bits must be a multiple of 8. -EINVAL otherwise. */
int mt_kv_layout(enum mt_kv_kind kind, size_t tokens, size_t channels,
                 unsigned bits, size_t group, struct mt_kv_layout *ret);
/* meta: 2 * groups uint16 (fp16 bits), pairs (zero, scale); keys: group
 * index = token_group * channels + channel; values: token * (channels /
 * group) + channel_group. -EINVAL, -EDOM, -ENOMEM. */
int mt_kv_quantize(enum mt_kv_kind kind, const float *x, size_t tokens,
                   size_t channels, unsigned bits, size_t group,
                   uint8_t *codes, uint16_t *meta);
int mt_kv_dequantize(enum mt_kv_kind kind, const uint8_t *codes,
                     const uint16_t *meta, size_t tokens, size_t channels,
                     unsigned bits, size_t group, float *x);
/* The bound on |x - value| for a group with that zero and scale:
 * s/2 + 2^-21 * (|z| + s * (2^bits - 1)). */
double mt_kv_error_bound(double zero, double scale, unsigned bits);
/* fp16 <-> fp32 (round to nearest even), the conversions used above. */
uint16_t mt_f16_from_f32(float f);
float mt_f32_from_f16(uint16_t h);

/* ---- latent compression (low-rank projection) ------------------------- */
/* x is [rows][dim]; basis is [dim][rank] with orthonormal columns;
 * z = x * basis ([rows][rank]); x_hat = z * basis^T. mt_latent_basis
 * builds the basis by subspace iteration on x^T x (iters rounds, each
 * followed by modified Gram-Schmidt) from a seeded random start; iters = 0
 * gives a random orthonormal basis. Compression ratio rank / dim. */
int mt_latent_basis(const float *x, size_t rows, size_t dim, size_t rank,
                    unsigned iters, uint64_t seed, float *basis);
int mt_latent_project(const float *x, size_t rows, size_t dim,
                      const float *basis, size_t rank, float *z);
int mt_latent_reconstruct(const float *z, size_t rows, size_t rank,
                          const float *basis, size_t dim, float *x_hat);
/* c[m][n] = a[m][k] * b[k][n] (each c element summed over k in order),
 * the forward whose time models recomputation. */
void mt_matmul(const float *a, const float *b, float *c,
               size_t m, size_t k, size_t n);

/* ---- host-side offload copies ----------------------------------------- */
/* A page-aligned host buffer, mlock'd when RLIMIT_MEMLOCK allows
 * (locked = 1), plain otherwise. */
struct mt_pinned {
    void *ptr;
    size_t bytes;
    int locked;
};
int mt_pinned_alloc(size_t bytes, struct mt_pinned *ret);
void mt_pinned_free(struct mt_pinned *p);   /* NULL or empty is fine */

/* memcpy cut into contiguous runs of whole `chunk`-byte chunks over max(2,
 * mt_threads_current()) threads (parts of at least 1 MiB; a copy of one
 * chunk or less stays on the caller). -EINVAL when chunk is 0. */
int mt_offload_copy(void *dst, const void *src, size_t bytes, size_t chunk);
/* Write `bytes` from src to a new file at path (truncated) / read them
 * back, through two staging buffers: the caller fills one while a helper
 * thread writes (reads) the other. O_DIRECT when the file system takes it
 * (*ret_direct = 1), buffered I/O otherwise. chunk is rounded up to 4 KiB.
 * -errno of open/write/read, -EIO on a short file. */
int mt_offload_file_write(const char *path, const void *src, size_t bytes,
                          size_t chunk, int *ret_direct);
int mt_offload_file_read(const char *path, void *dst, size_t bytes,
                         size_t chunk, int *ret_direct);

/* ---- measurements for `memtrace verify` ------------------------------- */
/* Each mt_measure_* runs one kernel on synthetic data (seeded, normal-like,
 * or the given sizes), best of `reps` timed runs, and reports what the
 * simulator assumes. Throughput counts bytes read plus bytes written; the
 * baseline is memcpy of the kernel's input buffer, timed in the same call,
 * likewise counted (2 bytes moved per byte copied). Fields that do not
 * apply are 0. */
struct mt_measure {
    double bytes_before;     /* size of the uncompressed data */
    double bytes_after;      /* size stored (codes + metadata) */
    double bytes_per_value;  /* bytes_after / values */
    double max_abs_err;      /* over all values */
    double mean_abs_err;
    double rel_err;          /* ||x - x_hat||_2 / ||x||_2 */
    double seconds;          /* one run, best of reps */
    double gbps;             /* (read + written bytes) / seconds / 1e9 */
    double baseline_gbps;    /* memcpy on the same buffer, same count */
    double aux;              /* kernel-specific: see each function */
};

/* Quantize then dequantize n values; seconds/gbps of the quantize,
 * aux = the dequantize's gbps. */
int mt_measure_q8(size_t n, size_t block, unsigned reps, struct mt_measure *ret);
/* One AdamW step on n params; errors: the moments against the fp32
 * reference after `reps` steps; aux = bytes per param of optimizer state. */
int mt_measure_adamw8(size_t n, size_t block, unsigned reps, struct mt_measure *ret);
/* Quantize then dequantize [tokens][channels]; aux = dequantize gbps. */
int mt_measure_kv(enum mt_kv_kind kind, size_t tokens, size_t channels,
                  unsigned bits, size_t group, unsigned reps,
                  struct mt_measure *ret);
/* Data of effective rank about 2*rank; basis by 2 subspace iterations;
 * seconds/gbps of project + reconstruct; aux = basis build seconds. */
int mt_measure_latent(size_t rows, size_t dim, size_t rank, unsigned reps,
                      struct mt_measure *ret);
/* mt_offload_copy into pinned memory; aux = 1 if the buffer is locked. */
int mt_measure_offload_pinned(size_t bytes, size_t chunk, unsigned reps,
                              struct mt_measure *ret);
/* Write then read back a file in directory dir; seconds/gbps of the write
 * (bytes / s, baseline = memcpy), aux = read GB/s; max_abs_err = 1 if the
 * bytes differ. */
int mt_measure_offload_file(const char *dir, size_t bytes, size_t chunk,
                            struct mt_measure *ret);
/* mt_matmul of [m][k] x [k][n]: seconds per forward, aux = GFLOP/s. */
int mt_measure_recompute(size_t m, size_t k, size_t n, unsigned reps,
                         struct mt_measure *ret);

#ifdef __cplusplus
}
#endif

#endif
