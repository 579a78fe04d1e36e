/* kernels.cu: CUDA versions of the q8 quantizer, the int8 AdamW step, KV
 * quantization and the offload copies (declared in kernels-cuda.h).
 *
 * q8 quantize and AdamW (blocks a multiple of 4, up to 4096): a CTA of 256
 * threads holds 256 / T quantization blocks of T threads each (T = 8..256,
 * two float4 per thread where the block allows: T = 32 for block 256, 256
 * for block 2048), so a block is read once, with coalesced float4 and char4
 * accesses, kept in registers, reduced to its absmax (integer max of |x|
 * bit patterns, as in q8.c) by xor shuffles within a warp and, for T > 32,
 * one shared word per warp, then quantized from registers. q8 dequantize:
 * four float4 per thread, the block index a shift for power-of-two blocks.
 * KV values: a warp takes 32 * KV_K float4s, groups spread over
 * neighbouring lanes, min/max by shuffles, each group's fp16 parameters
 * computed by one lane and broadcast; keys: 4 threads hold the G rows of 4
 * channels in registers, G / 4 rows each. min/max in kv.c's total order
 * (order_key), so the bits match for zeros of both signs. The KV
 * quantizers code without a division or conversion per value (kv_code_d)
 * and take fp16 parameters from the GPU's directed conversions
 * (kv_params_d); mtc_kv_selftest proves both exhaustively on the device. Other shapes (blocks not a multiple
 * of 4, other groups, unaligned pointers) take the older generic kernels
 * below. Arithmetic mirrors the C code operation for operation (_rn
 * intrinsics, -fmad=false), value by value, so only the order of the
 * order-independent max/min reductions differs.
 */
#include <math.h>
#include <string.h>

#include <thread>
#include <vector>

#include <cuda_fp16.h>

#include "kernels-cuda.h"
#include "kv-group.h"
#include "adamw-consts.h"

#define Q8_THREADS 64

__device__ static inline int q8_scale_d(uint32_t mbits, float *absmax, float *inv)
{
    if (mbits >= 0x7f800000u) {
        *absmax = __int_as_float(0x7fc00000);
        return 0;
    }
    float a = __uint_as_float(mbits);
    if (a < MT_Q8_TINY) {
        *absmax = 0.0f;
        return 0;
    }
    *absmax = a;
    *inv = __fdiv_rn(127.0f, a);
    return 1;
}

/* Max over the CTA (Q8_THREADS threads). */
__device__ static inline uint32_t cta_max(uint32_t m)
{
    __shared__ uint32_t part[Q8_THREADS / 32];
    for (int o = 16; o; o >>= 1)
        m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = m;
    __syncthreads();
    m = part[0];
    for (int w = 1; w < Q8_THREADS / 32; w++)
        m = max(m, part[w]);
    __syncthreads();
    return m;
}

__device__ static inline int8_t q8_code_d(float x, float inv)
{
    return (int8_t)__float2int_rn(__fmul_rn(x, inv));
}

/* ---- grouped q8 and AdamW ----------------------------------------------
 *
 * A CTA of CTA threads holds CTA / T quantization blocks, T threads each
 * (T a power of two, 8..256): thread `lane` of a block holds float4 number
 * lane, lane + T, ... (VEC of them) of its block, so every load and store
 * of a warp is one contiguous run. The absmax is reduced with xor shuffles
 * within the T threads (T <= 32) and, for T > 32, through one shared word
 * per warp (a second stage over the T / 32 warps of the block). The last
 * float4 of a short final block is read and written element by element. */
#define CTA 256

/* Max of a and b over the T threads of this thread's group. Every thread of
 * the CTA calls it (it may synchronize the CTA). */
template <int T>
__device__ static inline void group_max2(uint32_t &a, uint32_t &b)
{
    __shared__ uint32_t part[2][CTA / 32];
#pragma unroll
    for (int o = 1; o < (T < 32 ? T : 32); o <<= 1) {
        a = max(a, __shfl_xor_sync(0xffffffffu, a, o));
        b = max(b, __shfl_xor_sync(0xffffffffu, b, o));
    }
    if constexpr (T > 32) {
        unsigned w = threadIdx.x >> 5, w0 = w & ~(unsigned)(T / 32 - 1);
        if ((threadIdx.x & 31) == 0) {
            part[0][w] = a;
            part[1][w] = b;
        }
        __syncthreads();
        a = part[0][w0];
        b = part[1][w0];
#pragma unroll
        for (int i = 1; i < T / 32; i++) {
            a = max(a, part[0][w0 + i]);
            b = max(b, part[1][w0 + i]);
        }
        __syncthreads();
    }
}

__device__ static inline uint32_t absbits4(float4 v)
{
    return max(max(__float_as_uint(v.x) & 0x7fffffffu, __float_as_uint(v.y) & 0x7fffffffu),
               max(__float_as_uint(v.z) & 0x7fffffffu, __float_as_uint(v.w) & 0x7fffffffu));
}

/* The 4 elements at p[i..i+3] as one vector V, those at or past len read
 * as 0 (p + i is aligned for V), and the store that writes only those
 * before len. */
template <typename T, typename V> __device__ static inline V load_v4(const T *p, size_t i, size_t len)
{
    if (i + 4 <= len)
        return *(const V *)(p + i);
    V v{};
    if (i < len)
        v.x = p[i];
    if (i + 1 < len)
        v.y = p[i + 1];
    if (i + 2 < len)
        v.z = p[i + 2];
    return v;
}

template <typename T, typename V> __device__ static inline void store_v4(T *p, size_t i, size_t len, V v)
{
    if (i + 4 <= len) {
        *(V *)(p + i) = v;
        return;
    }
    if (i < len)
        p[i] = v.x;
    if (i + 1 < len)
        p[i + 1] = v.y;
    if (i + 2 < len)
        p[i + 2] = v.z;
}

__device__ static inline float4 load4(const float *p, size_t i, size_t len) { return load_v4<float, float4>(p, i, len); }
__device__ static inline void store4(float *p, size_t i, size_t len, float4 v) { store_v4<float, float4>(p, i, len, v); }
__device__ static inline char4 load_c4(const int8_t *p, size_t i, size_t len) { return load_v4<int8_t, char4>(p, i, len); }
__device__ static inline void store_c4(int8_t *p, size_t i, size_t len, char4 c) { store_v4<int8_t, char4>(p, i, len, c); }

__device__ static inline char4 codes4(int ok, float4 v, float inv)
{
    return ok ? make_char4(q8_code_d(v.x, inv), q8_code_d(v.y, inv), q8_code_d(v.z, inv),
                           q8_code_d(v.w, inv))
              : make_char4(0, 0, 0, 0);
}

template <int T, int VEC>
__global__ void __launch_bounds__(CTA)
    q8_quantize_grp(const float *x, size_t n, size_t block, int8_t *codes, float *absmax,
                    size_t nblocks)
{
    const unsigned per_cta = CTA / T, lane = threadIdx.x % T;
    for (size_t b0 = (size_t)blockIdx.x * per_cta; b0 < nblocks; b0 += (size_t)gridDim.x * per_cta) {
        size_t b = b0 + threadIdx.x / T, base = b * block;
        size_t len = b < nblocks ? min(block, n - base) : 0;
        float4 v[VEC];
        uint32_t m = 0, unused = 0;
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            v[k] = load4(x + base, 4 * ((size_t)k * T + lane), len);
            m = max(m, absbits4(v[k]));
        }
        group_max2<T>(m, unused);
        float a, inv = 0;
        int ok = q8_scale_d(m, &a, &inv);
        if (len && lane == 0)
            absmax[b] = a;
#pragma unroll
        for (int k = 0; k < VEC; k++)
            store_c4(codes + base, 4 * ((size_t)k * T + lane), len, codes4(ok, v[k], inv));
    }
}

/* T and VEC for a block of block4 float4s: the fewest threads (at least 8)
 * that hold it with two float4 each, up to CTA threads; 0 when a block is
 * larger than CTA * 4 float4s. (Four float4 per thread measured slower
 * for AdamW: fewer CTAs resident.) */
static int pick_grp(size_t block4, unsigned *ret_t, unsigned *ret_vec)
{
    unsigned t = 8;
    while (t < CTA && 2 * (size_t)t < block4)
        t *= 2;
    size_t vec = (block4 + t - 1) / t;
    if (vec > 4)
        return 0;
    *ret_t = t;
    *ret_vec = vec <= 1 ? 1 : vec <= 2 ? 2 : 4;
    return 1;
}

/* Launch KERNEL<T, VEC> (the combinations pick_grp returns). */
#define GRP_LAUNCH(KERNEL, t, vec, grid, stream, ...)                                              \
    do {                                                                                           \
        switch ((t) * 8 + (vec)) {                                                                 \
        case 8 * 8 + 1: KERNEL<8, 1><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;                \
        case 8 * 8 + 2: KERNEL<8, 2><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;                \
        case 16 * 8 + 2: KERNEL<16, 2><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;              \
        case 32 * 8 + 2: KERNEL<32, 2><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;              \
        case 64 * 8 + 2: KERNEL<64, 2><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;              \
        case 128 * 8 + 2: KERNEL<128, 2><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;            \
        case 256 * 8 + 2: KERNEL<256, 2><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;            \
        default: KERNEL<256, 4><<<grid, CTA, 0, stream>>>(__VA_ARGS__); break;                     \
        }                                                                                          \
    } while (0)

__global__ void q8_quantize_any(const float *x, size_t n, size_t block, int8_t *codes,
                                float *absmax, size_t nblocks)
{
    for (size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
        size_t base = b * block, len = min(block, n - base);
        uint32_t m = 0;
        for (size_t i = threadIdx.x; i < len; i += Q8_THREADS)
            m = max(m, __float_as_uint(x[base + i]) & 0x7fffffffu);
        m = cta_max(m);
        float a, inv = 0;
        int ok = q8_scale_d(m, &a, &inv);
        if (threadIdx.x == 0)
            absmax[b] = a;
        for (size_t i = threadIdx.x; i < len; i += Q8_THREADS)
            codes[base + i] = ok ? q8_code_d(x[base + i], inv) : 0;
    }
}

static unsigned grid_for(size_t nblocks)
{
    return (unsigned)(nblocks < (1u << 30) ? nblocks : (1u << 30));
}

static int aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

static int aligned4(const void *p)
{
    return ((uintptr_t)p & 3) == 0;
}

cudaError_t mtc_q8_quantize(const float *x, size_t n, size_t block, int8_t *codes, float *absmax,
                            cudaStream_t stream)
{
    if (!block)
        return cudaErrorInvalidValue;
    size_t nb = mt_q8_blocks(n, block);
    if (!nb)
        return cudaSuccess;
    unsigned t, vec;
    if (block % 4 == 0 && aligned16(x) && aligned4(codes) && pick_grp(block / 4, &t, &vec)) {
        unsigned g = grid_for((nb + CTA / t - 1) / (CTA / t));
        GRP_LAUNCH(q8_quantize_grp, t, vec, g, stream, x, n, block, codes, absmax, nb);
    } else {
        q8_quantize_any<<<grid_for(nb), Q8_THREADS, 0, stream>>>(x, n, block, codes, absmax, nb);
    }
    return cudaGetLastError();
}

/* Blocks of a multiple of 4: a warp takes 128 float4s, lane L numbers L,
 * L + 32, L + 64, L + 96 (coalesced char4 loads and float4 stores, four
 * in flight per thread); the block index is a shift when the block is a
 * power of two (shift4 >= 0), a division otherwise. The n % 4 last values
 * are done by one thread. */
__global__ void q8_dequantize_vec(const int8_t *codes, const float *absmax, size_t n, size_t block4,
                                  int shift4, float *x)
{
    const char4 *c4 = (const char4 *)codes;
    float4 *x4 = (float4 *)x;
    size_t n4 = n / 4, lane = threadIdx.x & 31;
    for (size_t base = (blockIdx.x * (size_t)blockDim.x + threadIdx.x - lane) * 4; base < n4;
         base += (size_t)gridDim.x * blockDim.x * 4) {
        char4 c[4];
        float a[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            size_t j = base + 32 * k + lane;
            if (j < n4) {
                c[k] = c4[j];
                a[k] = absmax[shift4 >= 0 ? j >> shift4 : j / block4];
            }
        }
#pragma unroll
        for (int k = 0; k < 4; k++) {
            size_t j = base + 32 * k + lane;
            if (j < n4) {
                float s = __fdiv_rn(a[k], 127.0f);
                x4[j] = make_float4(__fmul_rn((float)c[k].x, s), __fmul_rn((float)c[k].y, s),
                                    __fmul_rn((float)c[k].z, s), __fmul_rn((float)c[k].w, s));
            }
        }
    }
    if (blockIdx.x == 0 && threadIdx.x == 0)
        for (size_t i = n4 * 4; i < n; i++)
            x[i] = __fmul_rn((float)codes[i], __fdiv_rn(absmax[i / (4 * block4)], 127.0f));
}

__global__ void q8_dequantize_any(const int8_t *codes, const float *absmax, size_t n, size_t block,
                                  float *x)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn((float)codes[i], __fdiv_rn(absmax[i / block], 127.0f));
}

static unsigned elem_grid(size_t n, unsigned threads)
{
    size_t g = (n + threads - 1) / threads;
    return (unsigned)(g < 65536 * 32 ? (g ? g : 1) : 65536 * 32);
}

cudaError_t mtc_q8_dequantize(const int8_t *codes, const float *absmax, size_t n, size_t block,
                              float *x, cudaStream_t stream)
{
    if (!block)
        return cudaErrorInvalidValue;
    if (!n)
        return cudaSuccess;
    if (block % 4 == 0 && aligned16(x) && aligned4(codes)) {
        size_t b4 = block / 4;
        int shift4 = (b4 & (b4 - 1)) == 0 ? __builtin_ctzll(b4) : -1;
        q8_dequantize_vec<<<elem_grid((n / 4 + 3) / 4, 256), 256, 0, stream>>>(codes, absmax, n, b4,
                                                                              shift4, x);
    }
    else
        q8_dequantize_any<<<elem_grid(n, 256), 256, 0, stream>>>(codes, absmax, n, block, x);
    return cudaGetLastError();
}

/* ---- AdamW ------------------------------------------------------------- */

__device__ static inline void update1_d(const mt_adamw_consts &k, float &p, float g, float &m, float &v)
{
    float pp = __fmul_rn(p, k.decay);
    float mm = __fadd_rn(__fmul_rn(k.b1, m), __fmul_rn(k.c1, g));
    float vv = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(k.c2, __fmul_rn(g, g)));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), k.bc2_sqrt), k.eps);
    p = __fsub_rn(pp, __fdiv_rn(__fmul_rn(k.step_size, mm), denom));
    m = mm;
    v = vv;
}

/* Generic path: one CTA per block, moments kept in registers (per thread
 * up to PER elements, strided by Q8_THREADS). */
template <int PER>
__global__ void adamw8_kernel(mt_adamw_consts k, float *p, const float *g, int8_t *mc, float *ma,
                              int8_t *vc, float *va, size_t n, size_t block, size_t nblocks)
{
    for (size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
        size_t base = b * block, len = min(block, n - base);
        float sm = __fdiv_rn(ma[b], 127.0f), sv = __fdiv_rn(va[b], 127.0f);
        float m[PER], v[PER];
        uint32_t mmax = 0, vmax = 0;
#pragma unroll
        for (int e = 0; e < PER; e++) {
            size_t i = (size_t)e * Q8_THREADS + threadIdx.x;
            m[e] = v[e] = 0;
            if (i < len) {
                float pp = p[base + i];
                m[e] = __fmul_rn((float)mc[base + i], sm);
                v[e] = __fmul_rn((float)vc[base + i], sv);
                update1_d(k, pp, g[base + i], m[e], v[e]);
                p[base + i] = pp;
                mmax = max(mmax, __float_as_uint(m[e]) & 0x7fffffffu);
                vmax = max(vmax, __float_as_uint(v[e]) & 0x7fffffffu);
            }
        }
        mmax = cta_max(mmax);
        vmax = cta_max(vmax);
        float am, av, im = 0, iv = 0;
        int okm = q8_scale_d(mmax, &am, &im), okv = q8_scale_d(vmax, &av, &iv);
        if (threadIdx.x == 0) {
            ma[b] = am;
            va[b] = av;
        }
#pragma unroll
        for (int e = 0; e < PER; e++) {
            size_t i = (size_t)e * Q8_THREADS + threadIdx.x;
            if (i < len) {
                mc[base + i] = okm ? q8_code_d(m[e], im) : 0;
                vc[base + i] = okv ? q8_code_d(v[e], iv) : 0;
            }
        }
    }
}

__device__ static inline void update4_d(const mt_adamw_consts &k, float4 &p, float4 g, float4 &m, float4 &v)
{
    update1_d(k, p.x, g.x, m.x, v.x);
    update1_d(k, p.y, g.y, m.y, v.y);
    update1_d(k, p.z, g.z, m.z, v.z);
    update1_d(k, p.w, g.w, m.w, v.w);
}

__device__ static inline float4 dequant4(char4 c, float s)
{
    return make_float4(__fmul_rn((float)c.x, s), __fmul_rn((float)c.y, s), __fmul_rn((float)c.z, s),
                       __fmul_rn((float)c.w, s));
}

/* Grouped path (layout as q8_quantize_grp): the moments stay in registers
 * between the update and the requantization. Values past the end of a
 * short last block are computed on zeros and never stored; their moments
 * are zeroed before the absmax. */
/* CTAs of adamw8_grp an SM must hold at once: with 5 the compiler keeps
 * the kernel within 48 registers a thread (4 bytes spill). On the H200, 5
 * gave 84% of device-to-device copy bandwidth, against 77% with no bound
 * (57 registers, 4 CTAs), 81% with 6 and 62% with 8 (docs/PERFORMANCE.md). */
#ifndef MTC_ADAMW_MIN_CTAS
#define MTC_ADAMW_MIN_CTAS 5
#endif

template <int T, int VEC>
__global__ void __launch_bounds__(CTA, MTC_ADAMW_MIN_CTAS)
    adamw8_grp(mt_adamw_consts k, float *p, const float *g, int8_t *mc, float *ma, int8_t *vc, float *va,
               size_t n, size_t block, size_t nblocks)
{
    const unsigned per_cta = CTA / T, lane = threadIdx.x % T;
    for (size_t b0 = (size_t)blockIdx.x * per_cta; b0 < nblocks; b0 += (size_t)gridDim.x * per_cta) {
        size_t b = b0 + threadIdx.x / T, base = b * block;
        size_t len = b < nblocks ? min(block, n - base) : 0;
        float sm = 0, sv = 0;
        if (len) {
            sm = __fdiv_rn(ma[b], 127.0f);
            sv = __fdiv_rn(va[b], 127.0f);
        }
        float4 m[VEC], v[VEC];
        uint32_t mmax = 0, vmax = 0;
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            size_t i = 4 * ((size_t)e * T + lane);
            float4 pp = load4(p + base, i, len), gg = load4(g + base, i, len);
            m[e] = dequant4(load_c4(mc + base, i, len), sm);
            v[e] = dequant4(load_c4(vc + base, i, len), sv);
            update4_d(k, pp, gg, m[e], v[e]);
            store4(p + base, i, len, pp);
            if (i + 4 > len) {
                float4 z = make_float4(0, 0, 0, 0);
                if (i + 3 >= len)
                    m[e].w = v[e].w = 0;
                if (i + 2 >= len)
                    m[e].z = v[e].z = 0;
                if (i + 1 >= len)
                    m[e].y = v[e].y = 0;
                if (i >= len)
                    m[e] = v[e] = z;
            }
            mmax = max(mmax, absbits4(m[e]));
            vmax = max(vmax, absbits4(v[e]));
        }
        group_max2<T>(mmax, vmax);
        float am, av, im = 0, iv = 0;
        int okm = q8_scale_d(mmax, &am, &im), okv = q8_scale_d(vmax, &av, &iv);
        if (len && lane == 0) {
            ma[b] = am;
            va[b] = av;
        }
#pragma unroll
        for (int e = 0; e < VEC; e++) {
            size_t i = 4 * ((size_t)e * T + lane);
            store_c4(mc + base, i, len, codes4(okm, m[e], im));
            store_c4(vc + base, i, len, codes4(okv, v[e], iv));
        }
    }
}

cudaError_t mtc_adamw8_step(float *param, const float *grad, int8_t *m, float *m_absmax,
                            int8_t *v, float *v_absmax, size_t n, size_t block,
                            const struct mt_adamw_params *hp, long step, cudaStream_t stream)
{
    if (!block || step < 1 || block > 64 * Q8_THREADS)
        return cudaErrorInvalidValue;
    size_t nb = mt_q8_blocks(n, block);
    if (!nb)
        return cudaSuccess;
    mt_adamw_consts k = mt_adamw_consts_of(hp, step);
    unsigned t, vec;
    if (block % 4 == 0 && aligned16(param) && aligned16(grad) && aligned4(m) && aligned4(v) &&
        pick_grp(block / 4, &t, &vec)) {
        unsigned g = grid_for((nb + CTA / t - 1) / (CTA / t));
        GRP_LAUNCH(adamw8_grp, t, vec, g, stream, k, param, grad, m, m_absmax, v, v_absmax, n, block,
                   nb);
        return cudaGetLastError();
    }
    size_t per = (block + Q8_THREADS - 1) / Q8_THREADS;
    unsigned g = grid_for(nb);
#define L(P) adamw8_kernel<P><<<g, Q8_THREADS, 0, stream>>>(k, param, grad, m, m_absmax, v, v_absmax, n, block, nb)
    if (per <= 4)
        L(4);
    else if (per <= 8)
        L(8);
    else if (per <= 16)
        L(16);
    else if (per <= 32)
        L(32);
    else
        L(64);
#undef L
    return cudaGetLastError();
}

/* ---- KV ---------------------------------------------------------------- */

/* Pack the codes of 32 consecutive elements held by a warp's lanes and
 * write them at element index `first` (a multiple of 32) of `codes`. */
__device__ static inline void pack_store(unsigned code, unsigned bits, uint8_t *codes, size_t elem,
                                         bool valid)
{
    unsigned lane = threadIdx.x & 31;
    unsigned v = code;
    if (bits == 4) {
        v |= __shfl_down_sync(0xffffffffu, code, 1) << 4;
        if (valid && lane % 2 == 0)
            codes[elem / 2] = (uint8_t)v;
    } else if (bits == 2) {
        v |= __shfl_down_sync(0xffffffffu, code, 1) << 2;
        v |= __shfl_down_sync(0xffffffffu, code, 2) << 4;
        v |= __shfl_down_sync(0xffffffffu, code, 3) << 6;
        if (valid && lane % 4 == 0)
            codes[elem / 4] = (uint8_t)v;
    } else if (valid) {
        codes[elem] = (uint8_t)v;
    }
}

/* Values, groups dividing 32: thread per element. */
__global__ void kv_values_warp(const float *x, size_t n, size_t C, unsigned bits, unsigned G,
                               uint8_t *codes, uint16_t *meta)
{
    float levels = (float)((1u << bits) - 1u);
    size_t stride = (size_t)gridDim.x * blockDim.x;
    /* every lane of a warp runs the same number of iterations */
    size_t start = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    size_t warp_base = start - (threadIdx.x & 31);
    for (size_t wb = warp_base; wb < n; wb += stride) {
        size_t i = wb + (threadIdx.x & 31);
        bool valid = i < n;
        float xv = valid ? x[i] : 0.0f;
        float mn = xv, mx = xv;
        for (unsigned o = 1; o < G; o <<= 1) {
            mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        }
        uint16_t zh = 0, sh = 0;
        float z = 0, s = 0;
        mt_kv_group_params(mn, mx, (unsigned)levels, &zh, &sh, &z, &s);
        if (valid && i % G == 0) {
            size_t grp = i / G; /* (t * C + c) / G = t * (C / G) + c / G */
            meta[2 * grp] = zh;
            meta[2 * grp + 1] = sh;
        }
        unsigned code = (unsigned)mt_kv_code(xv, z, mt_kv_divisor(s), (int)levels);
        pack_store(code, bits, codes, i, valid);
    }
    (void)C;
}

/* Values, any group: thread per group. */
__global__ void kv_values_any(const float *x, size_t groups, unsigned bits, size_t G,
                              uint8_t *codes, uint16_t *meta)
{
    float levels = (float)((1u << bits) - 1u);
    for (size_t gi = blockIdx.x * (size_t)blockDim.x + threadIdx.x; gi < groups;
         gi += (size_t)gridDim.x * blockDim.x) {
        const float *xg = x + gi * G;
        float mn = xg[0], mx = xg[0];
        for (size_t i = 1; i < G; i++) {
            mn = fminf(mn, xg[i]);
            mx = fmaxf(mx, xg[i]);
        }
        uint16_t zh = 0, sh = 0;
        float z = 0, s = 0;
        mt_kv_group_params(mn, mx, (unsigned)levels, &zh, &sh, &z, &s);
        meta[2 * gi] = zh;
        meta[2 * gi + 1] = sh;
        unsigned per = 8 / bits;
        for (size_t i = 0; i < G; i += per) {
            unsigned byte = 0;
            for (unsigned j = 0; j < per; j++)
                byte |= (unsigned)mt_kv_code(xg[i + j], z, mt_kv_divisor(s), (int)levels) << (j * bits);
            codes[(gi * G + i) / per] = (uint8_t)byte;
        }
    }
}

/* Keys: thread per channel of a token group (grid.y = token group). */
__global__ void kv_keys(const float *x, size_t C, unsigned bits, size_t G, uint8_t *codes,
                        uint16_t *meta)
{
    float levels = (float)((1u << bits) - 1u);
    size_t tg = blockIdx.y;
    size_t c = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    bool valid = c < C;
    const float *x0 = x + tg * G * C;
    float mn = valid ? x0[c] : 0.0f, mx = mn;
    for (size_t t = 1; t < G; t++) {
        float v = valid ? x0[t * C + c] : 0.0f;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    uint16_t zh = 0, sh = 0;
    float z = 0, s = 0;
    mt_kv_group_params(mn, mx, (unsigned)levels, &zh, &sh, &z, &s);
    if (valid) {
        meta[2 * (tg * C + c)] = zh;
        meta[2 * (tg * C + c) + 1] = sh;
    }
    for (size_t t = 0; t < G; t++) {
        float v = valid ? x0[t * C + c] : 0.0f;
        unsigned code = (unsigned)mt_kv_code(v, z, mt_kv_divisor(s), (int)levels);
        pack_store(code, bits, codes, (tg * G + t) * C + c, valid);
    }
}

/* ---- KV, vectorized paths ----------------------------------------------
 *
 * min and max in kv.c's total order (-0 < +0): the integer order of
 * order_key, which is its own inverse. Used by the paths below, so they
 * give the C bits for any finite input, zeros of both signs included. */
__device__ static inline int32_t order_key_d(float f)
{
    uint32_t u = __float_as_uint(f);
    return (int32_t)(u ^ ((uint32_t)((int32_t)u >> 31) >> 1));
}

__device__ static inline float of_key_d(int32_t k)
{
    return __uint_as_float((uint32_t)k ^ ((uint32_t)(k >> 31) >> 1));
}

/* The code mt_kv_code gives, without a division per value. With r =
 * RN(1/d), computed once per group, q0 = a * r is within an ulp or so of
 * a / d and one residual step, q0 + (a - q0 d) r with the residual exact
 * by FMA, gives RN(a / d) (Markstein's theorem) whenever nothing
 * underflows; quotients small enough to underflow are far below 1/2 and
 * give code 0 either way. Checked on the host against the division near
 * every rounding tie of every fp16 scale (tests/test-kernels.c) and bit for
 * bit by kernels-cuda-check. Rounding to nearest even is the addition of
 * 1.5 * 2^23, exact for 0 <= q < 2^22, after which the code is the low
 * bits. In a group with valid parameters 0 <= a = x - z and q < levels +
 * 1/2 (z <= min, s >= (max - z) / levels), so the code needs no clamp;
 * the mask keeps an invalid group's garbage out of its neighbours' bits.
 * No conversion is issued per value: conversions and the reciprocal run at
 * a quarter of the rate of an add, and the division and rintf() were what
 * bounded these kernels (measured: docs/PERFORMANCE.md). */
__device__ static inline unsigned kv_code_d(float x, float z, float d, float r, unsigned levels)
{
    float a = __fsub_rn(x, z), q0 = __fmul_rn(a, r);
    float q = __fmaf_rn(__fmaf_rn(-q0, d, a), r, q0);
    return (unsigned)__float_as_int(__fadd_rn(q, 12582912.0f)) & levels;
}

/* mt_kv_group_params with the GPU's own conversions: rounding mn down to
 * fp16 is what rounding to nearest and stepping down when above gives, and
 * rounding the scale up likewise; fp16 to fp32 is exact. Same bits for
 * every finite min and max (and an error for the same groups). */
__device__ static inline int kv_params_d(float mn, float mx, unsigned levels, uint16_t *ret_zh,
                                         uint16_t *ret_sh, float *ret_z, float *ret_s)
{
    uint16_t zh = __half_as_ushort(__float2half_rd(mn));
    float z = __half2float(__ushort_as_half(zh));
    float want = __fdiv_rn(__fsub_rn(mx, z), (float)levels);
    uint16_t sh = __half_as_ushort(__float2half_ru(want));
    if ((zh & 0x7c00u) == 0x7c00u || (sh & 0x7c00u) == 0x7c00u)
        return -1;
    *ret_zh = zh;
    *ret_sh = sh;
    *ret_z = z;
    *ret_s = __half2float(__ushort_as_half(sh));
    return 0;
}

__device__ static inline float f16_d(uint32_t h)
{
    return __half2float(__ushort_as_half((uint16_t)h));
}

/* (float)c for 0 <= c < 2^23, exactly, by an add instead of a conversion. */
__device__ static inline float small_u2f(unsigned c)
{
    return __fsub_rn(__uint_as_float(0x4b000000u | c), 8388608.0f);
}

/* Codes of 4 consecutive values packed as kv.c packs them: bits * 4 bits. */
__device__ static inline unsigned pack4(float4 v, float z, float d, float r, unsigned bits,
                                       unsigned levels)
{
    return kv_code_d(v.x, z, d, r, levels) | kv_code_d(v.y, z, d, r, levels) << bits |
           kv_code_d(v.z, z, d, r, levels) << (2 * bits) | kv_code_d(v.w, z, d, r, levels) << (3 * bits);
}

/* Store the packed codes of float4 number j of a row-major code array. */
__device__ static inline void store_codes4(uint8_t *codes, size_t j, unsigned bits, unsigned c)
{
    if (bits == 2)
        codes[j] = (uint8_t)c;
    else if (bits == 4)
        ((uint16_t *)codes)[j] = (uint16_t)c;
    else
        ((uint32_t *)codes)[j] = c;
}

__device__ static inline unsigned load_codes4(const uint8_t *codes, size_t j, unsigned bits)
{
    if (bits == 2)
        return codes[j];
    if (bits == 4)
        return ((const uint16_t *)codes)[j];
    return ((const uint32_t *)codes)[j];
}

__device__ static inline float dequant1(unsigned c, float z, float s)
{
    return __fadd_rn(__fmul_rn(small_u2f(c), s), z);
}

__device__ static inline float4 dequant_kv4(unsigned c, float z, float s, unsigned bits)
{
    unsigned mask = (1u << bits) - 1u;
    return make_float4(dequant1(c & mask, z, s), dequant1((c >> bits) & mask, z, s),
                       dequant1((c >> (2 * bits)) & mask, z, s),
                       dequant1((c >> (3 * bits)) & mask, z, s));
}

/* float4 loads per lane and chunk (values): 4 measured faster than 8 (48
 * against 96 registers: more warps resident to overlap one warp's codes
 * with the others' loads; H200, values quantize 89-98% against 82-91%).
 * The MTC_ macros below are compile-time knobs kept for such
 * measurements; the defaults are the measured best. */
#ifndef KV_K
#define KV_K 4
#endif

/* Values, G in {8, 16, 32, 64}: a warp takes a chunk of 32 * KV_K float4s;
 * load k of lane L is float4 number 32k + L of the chunk (coalesced), so S
 * = G / 4 neighbouring lanes hold one group of each load. min and max: in
 * the lane, then over the S lanes (xor shuffles). The group parameters
 * (the expensive fp16 part) are computed once per group: lane L does those
 * of load r*S + L%S of its own S lanes, in round r, and the others fetch
 * them with one shuffle each. Groups never straddle the end of the input
 * (n is a multiple of G), so a group is wholly valid or wholly not. */
template <int G>
__global__ void __launch_bounds__(256)
    kv_values_vec(const float4 *x, size_t n4, unsigned bits, uint8_t *codes, uint32_t *meta)
{
    constexpr int S = G / 4, R = (KV_K + S - 1) / S;
    const unsigned levels = (1u << bits) - 1u;
    const unsigned lane = threadIdx.x & 31, seg = lane / S * S;
    size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    size_t nwarps = ((size_t)gridDim.x * blockDim.x) >> 5;
    size_t nchunks = (n4 + 32 * KV_K - 1) / (32 * KV_K);
    for (size_t ch = warp; ch < nchunks; ch += nwarps) {
        size_t c0 = ch * 32 * KV_K;
        float4 v[KV_K];
        int32_t kn[KV_K], kx[KV_K];
#pragma unroll
        for (int k = 0; k < KV_K; k++) {
            size_t j = c0 + 32 * k + lane;
            v[k] = j < n4 ? x[j] : make_float4(0, 0, 0, 0);
            int32_t a = order_key_d(v[k].x), b = order_key_d(v[k].y), c = order_key_d(v[k].z),
                    d = order_key_d(v[k].w);
            kn[k] = min(min(a, b), min(c, d));
            kx[k] = max(max(a, b), max(c, d));
        }
#pragma unroll
        for (int k = 0; k < KV_K; k++)
#pragma unroll
            for (int o = 1; o < S; o <<= 1) {
                kn[k] = min(kn[k], __shfl_xor_sync(0xffffffffu, kn[k], o));
                kx[k] = max(kx[k], __shfl_xor_sync(0xffffffffu, kx[k], o));
            }
        float zr[R], dr[R], rr[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            int mine = r * S + (int)(lane % S); /* the load whose group this lane does */
            int32_t mn = kn[0], mx = kx[0];
#pragma unroll
            for (int k = 1; k < KV_K; k++)
                if (k == mine) {
                    mn = kn[k];
                    mx = kx[k];
                }
            uint16_t zh = 0, sh = 0;
            float z = 0, s = 0;
            kv_params_d(of_key_d(mn), of_key_d(mx), (unsigned)levels, &zh, &sh, &z, &s);
            zr[r] = z;
            dr[r] = mt_kv_divisor(s);
            rr[r] = __frcp_rn(dr[r]);
            size_t j = c0 + 32 * (size_t)mine + seg; /* first float4 of that group */
            if (mine < KV_K && j < n4)
                meta[j / S] = (uint32_t)zh | (uint32_t)sh << 16;
        }
#pragma unroll
        for (int k = 0; k < KV_K; k++) {
            float z = __shfl_sync(0xffffffffu, zr[k / S], seg + k % S);
            float d = __shfl_sync(0xffffffffu, dr[k / S], seg + k % S);
            float rc = __shfl_sync(0xffffffffu, rr[k / S], seg + k % S);
            size_t j = c0 + 32 * k + lane;
            if (j < n4)
                store_codes4(codes, j, bits, pack4(v[k], z, d, rc, bits, levels));
        }
    }
}

/* Keys, G in {8, 16, 32}: P threads take 4 channels (one float4 column)
 * of a token group, G / P rows each, held in registers: one read of x.
 * The P threads of a column are lanes L apart (L = 32 / P), so each row's
 * loads and stores stay coalesced over L lanes; min and max per channel in
 * the thread, then over the P threads by xor shuffles. Part p computes the
 * parameters of the groups q with q % P == p and the others fetch them by
 * shuffles; part 0 writes the 16 bytes of metadata. grid.y walks the token
 * groups. P = 1 holds all G rows in one thread (168 registers at G = 32,
 * 84-89% on the H100), P = 2 96 registers (88-96% on the H200), P = 4 64
 * registers (89-101% on the H200). */
#ifndef MTC_KV_KEYS_P
#define MTC_KV_KEYS_P 4
#endif
template <int G, int P>
__global__ void __launch_bounds__(128)
    kv_keys_vec(const float4 *x, size_t C4, size_t ntg, unsigned bits, uint8_t *codes, uint4 *meta)
{
    constexpr int L = 32 / P, GP = G / P;
    const unsigned levels = (1u << bits) - 1u;
    const unsigned lane = threadIdx.x & 31, part = lane / L, col = lane % L;
    size_t c4 = blockIdx.x * (size_t)(128 / P) + (threadIdx.x >> 5) * L + col;
    bool valid = c4 < C4;
    for (size_t tg = blockIdx.y; tg < ntg; tg += gridDim.y) {
        const float4 *x0 = x + (tg * G + part * GP) * C4 + c4;
        float4 v[GP];
#pragma unroll
        for (int t = 0; t < GP; t++)
            v[t] = valid ? x0[t * C4] : make_float4(0, 0, 0, 0);
        int32_t mn[4], mx[4];
        mn[0] = mx[0] = order_key_d(v[0].x), mn[1] = mx[1] = order_key_d(v[0].y);
        mn[2] = mx[2] = order_key_d(v[0].z), mn[3] = mx[3] = order_key_d(v[0].w);
#pragma unroll
        for (int t = 1; t < GP; t++) {
            int32_t a = order_key_d(v[t].x), b = order_key_d(v[t].y), c = order_key_d(v[t].z),
                    d = order_key_d(v[t].w);
            mn[0] = min(mn[0], a), mx[0] = max(mx[0], a);
            mn[1] = min(mn[1], b), mx[1] = max(mx[1], b);
            mn[2] = min(mn[2], c), mx[2] = max(mx[2], c);
            mn[3] = min(mn[3], d), mx[3] = max(mx[3], d);
        }
#pragma unroll
        for (int o = L; o < 32; o <<= 1)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                mn[q] = min(mn[q], __shfl_xor_sync(0xffffffffu, mn[q], o));
                mx[q] = max(mx[q], __shfl_xor_sync(0xffffffffu, mx[q], o));
            }
        constexpr int Q = 4 / P; /* groups whose parameters this thread computes */
        float zm[Q], dm[Q], rm[Q];
        uint32_t mm[Q];
#pragma unroll
        for (int i = 0; i < Q; i++) {
            int q = i * P + (int)part;
            int32_t kn = mn[0], kx = mx[0];
#pragma unroll
            for (int u = 1; u < 4; u++)
                if (u == q)
                    kn = mn[u], kx = mx[u];
            uint16_t zh = 0, sh = 0;
            float s = 0;
            zm[i] = 0;
            kv_params_d(of_key_d(kn), of_key_d(kx), (unsigned)levels, &zh, &sh, &zm[i], &s);
            dm[i] = mt_kv_divisor(s);
            rm[i] = __frcp_rn(dm[i]);
            mm[i] = (uint32_t)zh | (uint32_t)sh << 16;
        }
        float z[4], d[4], r[4];
        uint32_t m[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            if constexpr (P == 1) {
                z[q] = zm[q], d[q] = dm[q], r[q] = rm[q], m[q] = mm[q];
            } else {
                int src = (q % P) * L + (int)col;
                z[q] = __shfl_sync(0xffffffffu, zm[q / P], src);
                d[q] = __shfl_sync(0xffffffffu, dm[q / P], src);
                r[q] = __shfl_sync(0xffffffffu, rm[q / P], src);
                m[q] = __shfl_sync(0xffffffffu, mm[q / P], src);
            }
        }
        if (valid && part == 0)
            meta[tg * C4 + c4] = make_uint4(m[0], m[1], m[2], m[3]);
        if (valid) {
#pragma unroll
            for (int t = 0; t < GP; t++) {
                unsigned c = kv_code_d(v[t].x, z[0], d[0], r[0], levels) |
                             kv_code_d(v[t].y, z[1], d[1], r[1], levels) << bits |
                             kv_code_d(v[t].z, z[2], d[2], r[2], levels) << (2 * bits) |
                             kv_code_d(v[t].w, z[3], d[3], r[3], levels) << (3 * bits);
                store_codes4(codes, (tg * G + part * GP + t) * C4 + c4, bits, c);
            }
        }
    }
}

/* Keys dequantize, any G: a thread takes one float4 column of R rows of
 * a token group (grid.y walks the (token group, row block) pairs), the 4
 * (z, s) pairs of its column read once, its R code loads issued before the
 * first store. R = 4 measured best on the H200 (R = 1: 76-82%, 4: 87-93%,
 * 32: 85-90%). */
#ifndef MTC_KV_KDQ_R
#define MTC_KV_KDQ_R 4
#endif
__global__ void kv_keys_dequant_vec(const uint8_t *codes, const uint4 *meta, size_t C4, size_t ntg,
                                    unsigned bits, size_t G, float4 *x)
{
    constexpr int R = MTC_KV_KDQ_R;
    size_t c4 = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (c4 >= C4)
        return;
    unsigned mask = (1u << bits) - 1u;
    size_t per = (G + R - 1) / R, units = ntg * per;
    for (size_t u = blockIdx.y; u < units; u += gridDim.y) {
        size_t tg = u / per, t0 = (u % per) * R;
        uint4 m = meta[tg * C4 + c4];
        float z[4] = {f16_d(m.x & 0xffffu), f16_d(m.y & 0xffffu), f16_d(m.z & 0xffffu),
                      f16_d(m.w & 0xffffu)};
        float s[4] = {f16_d(m.x >> 16), f16_d(m.y >> 16), f16_d(m.z >> 16), f16_d(m.w >> 16)};
        unsigned c[R];
#pragma unroll
        for (int i = 0; i < R; i++)
            if (t0 + i < G)
                c[i] = load_codes4(codes, (tg * G + t0 + i) * C4 + c4, bits);
#pragma unroll
        for (int i = 0; i < R; i++)
            if (t0 + i < G)
                x[(tg * G + t0 + i) * C4 + c4] =
                    make_float4(dequant1(c[i] & mask, z[0], s[0]),
                                dequant1((c[i] >> bits) & mask, z[1], s[1]),
                                dequant1((c[i] >> (2 * bits)) & mask, z[2], s[2]),
                                dequant1((c[i] >> (3 * bits)) & mask, z[3], s[3]));
    }
}

/* Values dequantize, G a multiple of 4: a warp takes 32 * K float4s, lane
 * L numbers L, L + 32, ... (coalesced code loads and float4 stores, K
 * loads in flight per thread before the first store). */
#ifndef MTC_KV_DQ_K
#define MTC_KV_DQ_K 4
#endif
template <int G>
__global__ void kv_values_dequant_vec(const uint8_t *codes, const uint32_t *meta, size_t n4,
                                      unsigned bits, float4 *x)
{
    constexpr int K = MTC_KV_DQ_K;
    size_t lane = threadIdx.x & 31;
    for (size_t base = (blockIdx.x * (size_t)blockDim.x + threadIdx.x - lane) * K; base < n4;
         base += (size_t)gridDim.x * blockDim.x * K) {
        unsigned c[K];
        uint32_t m[K];
#pragma unroll
        for (int k = 0; k < K; k++) {
            size_t j = base + 32 * k + lane;
            if (j < n4) {
                c[k] = load_codes4(codes, j, bits);
                m[k] = meta[j / (G / 4)];
            }
        }
#pragma unroll
        for (int k = 0; k < K; k++) {
            size_t j = base + 32 * k + lane;
            if (j < n4) {
                float z = f16_d(m[k] & 0xffffu), s = f16_d(m[k] >> 16);
                x[j] = dequant_kv4(c[k], z, s, bits);
            }
        }
    }
}

static int kv_vec_ok(const void *x, const void *codes, const void *meta, size_t channels)
{
    return channels % 4 == 0 && aligned16(x) && aligned4(codes) && aligned16(meta);
}

static unsigned ygrid(size_t ntg)
{
    return (unsigned)(ntg < 65535 ? ntg : 65535);
}

cudaError_t mtc_kv_quantize(enum mt_kv_kind kind, const float *x, size_t tokens, size_t channels,
                            unsigned bits, size_t group, uint8_t *codes, uint16_t *meta,
                            cudaStream_t stream)
{
    struct mt_kv_layout l;
    if (mt_kv_layout(kind, tokens, channels, bits, group, &l))
        return cudaErrorInvalidValue;
    size_t n = tokens * channels;
    if (!n)
        return cudaSuccess;
    int vec = kv_vec_ok(x, codes, meta, channels);
    size_t C4 = channels / 4, ntg = tokens / group;
    if (vec && kind == MT_KV_KEYS && (group == 8 || group == 16 || group == 32)) {
        constexpr int P = MTC_KV_KEYS_P, W = 128 / P; /* columns per CTA */
        dim3 grid((unsigned)((C4 + W - 1) / W), ygrid(ntg));
        const float4 *x4 = (const float4 *)x;
        if (group == 8)
            kv_keys_vec<8, P><<<grid, 128, 0, stream>>>(x4, C4, ntg, bits, codes, (uint4 *)meta);
        else if (group == 16)
            kv_keys_vec<16, P><<<grid, 128, 0, stream>>>(x4, C4, ntg, bits, codes, (uint4 *)meta);
        else
            kv_keys_vec<32, P><<<grid, 128, 0, stream>>>(x4, C4, ntg, bits, codes, (uint4 *)meta);
    } else if (vec && kind == MT_KV_VALUES &&
               (group == 8 || group == 16 || group == 32 || group == 64)) {
        size_t n4 = n / 4, warps = (n4 + 32 * KV_K - 1) / (32 * KV_K);
        unsigned g = elem_grid(warps * 32, 256);
        const float4 *x4 = (const float4 *)x;
        uint32_t *m32 = (uint32_t *)meta;
        if (group == 8)
            kv_values_vec<8><<<g, 256, 0, stream>>>(x4, n4, bits, codes, m32);
        else if (group == 16)
            kv_values_vec<16><<<g, 256, 0, stream>>>(x4, n4, bits, codes, m32);
        else if (group == 32)
            kv_values_vec<32><<<g, 256, 0, stream>>>(x4, n4, bits, codes, m32);
        else
            kv_values_vec<64><<<g, 256, 0, stream>>>(x4, n4, bits, codes, m32);
    } else if (kind == MT_KV_KEYS) {
        /* one grid row per token group */
        if (tokens / group > 65535)
            return cudaErrorInvalidValue;
        dim3 grid((unsigned)((channels + 255) / 256), (unsigned)(tokens / group));
        kv_keys<<<grid, 256, 0, stream>>>(x, channels, bits, group, codes, meta);
    } else if (group <= 32 && 32 % group == 0) {
        kv_values_warp<<<elem_grid(n, 256), 256, 0, stream>>>(x, n, channels, bits,
                                                                (unsigned)group, codes, meta);
    } else {
        kv_values_any<<<elem_grid(l.groups, 128), 128, 0, stream>>>(x, l.groups, bits, group,
                                                                     codes, meta);
    }
    return cudaGetLastError();
}

__global__ void kv_dequant(enum mt_kv_kind kind, const uint8_t *codes, const uint16_t *meta,
                           size_t n, size_t C, unsigned bits, size_t G, float *x)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C, c = i % C;
        size_t grp = kind == MT_KV_KEYS ? (t / G) * C + c : i / G;
        float z = mt_f16_to_f32(meta[2 * grp]), s = mt_f16_to_f32(meta[2 * grp + 1]);
        size_t bit = i * bits;
        unsigned code = (codes[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
        x[i] = __fadd_rn(__fmul_rn((float)code, s), z);
    }
}

cudaError_t mtc_kv_dequantize(enum mt_kv_kind kind, const uint8_t *codes, const uint16_t *meta,
                              size_t tokens, size_t channels, unsigned bits, size_t group,
                              float *x, cudaStream_t stream)
{
    struct mt_kv_layout l;
    if (mt_kv_layout(kind, tokens, channels, bits, group, &l))
        return cudaErrorInvalidValue;
    size_t n = tokens * channels;
    if (!n)
        return cudaSuccess;
    size_t C4 = channels / 4, n4 = n / 4;
    if (kv_vec_ok(x, codes, meta, channels) && kind == MT_KV_KEYS) {
        size_t units = tokens / group * ((group + MTC_KV_KDQ_R - 1) / MTC_KV_KDQ_R);
        dim3 grid((unsigned)((C4 + 127) / 128), ygrid(units));
        kv_keys_dequant_vec<<<grid, 128, 0, stream>>>(codes, (const uint4 *)meta, C4, tokens / group,
                                                      bits, group, (float4 *)x);
    } else if (kv_vec_ok(x, codes, meta, channels) && kind == MT_KV_VALUES &&
               (group == 8 || group == 16 || group == 32 || group == 64)) {
        const uint32_t *m32 = (const uint32_t *)meta;
        unsigned g = elem_grid((n4 + MTC_KV_DQ_K - 1) / MTC_KV_DQ_K, 256);
        if (group == 8)
            kv_values_dequant_vec<8><<<g, 256, 0, stream>>>(codes, m32, n4, bits, (float4 *)x);
        else if (group == 16)
            kv_values_dequant_vec<16><<<g, 256, 0, stream>>>(codes, m32, n4, bits, (float4 *)x);
        else if (group == 32)
            kv_values_dequant_vec<32><<<g, 256, 0, stream>>>(codes, m32, n4, bits, (float4 *)x);
        else
            kv_values_dequant_vec<64><<<g, 256, 0, stream>>>(codes, m32, n4, bits, (float4 *)x);
    } else {
        kv_dequant<<<elem_grid(n, 256), 256, 0, stream>>>(kind, codes, meta, n, channels, bits,
                                                          group, x);
    }
    return cudaGetLastError();
}

/* ---- KV self-test --------------------------------------------------------
 *
 * The identities the fast KV paths rest on, checked on the device itself
 * rather than on random data: [0] fp16 rounding down and up by the GPU's
 * conversions against kv-group.h's round-to-nearest-and-step, for every
 * finite float; [1] the GPU's fp16 -> fp32 against mt_f16_to_f32 for every
 * non-NaN half; [2] kv_code_d against mt_kv_code (the division) for every
 * positive fp16 scale, at each rounding tie between two of the 256 levels
 * of 8 bits (which holds those of 2 and 4 bits) and the 16 floats either
 * side of it. (Quotients above the top level + 1/2 do not occur, above.) */
__global__ void kv_selftest_round(unsigned long long *bad)
{
    unsigned long long n = 0;
    for (uint64_t u = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; u < (1ull << 32);
         u += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t b = (uint32_t)u;
        if ((b & 0x7f800000u) == 0x7f800000u)
            continue;
        float f = __uint_as_float(b);
        uint16_t dn = mt_f16_rne(f), up = dn;
        if (mt_f16_to_f32(dn) > f)
            dn = mt_f16_down(dn);
        if (mt_f16_to_f32(up) < f)
            up = mt_f16_up(up);
        n += __half_as_ushort(__float2half_rd(f)) != dn;
        n += __half_as_ushort(__float2half_ru(f)) != up;
    }
    if (n)
        atomicAdd(bad, n);
}

__global__ void kv_selftest_widen(unsigned long long *bad)
{
    unsigned h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h < 65536 && (h & 0x7fffu) <= 0x7c00u &&
        __float_as_uint(f16_d(h)) != __float_as_uint(mt_f16_to_f32((uint16_t)h)))
        atomicAdd(bad, 1ull);
}

__global__ void kv_selftest_code(unsigned long long *bad)
{
    unsigned h = blockIdx.x + 1; /* fp16 scales 0x0001 .. 0x7bff */
    float d = mt_f16_to_f32((uint16_t)h), r = __frcp_rn(d);
    unsigned long long n = 0;
    for (unsigned i = threadIdx.x; i < 255 * 33; i += blockDim.x) {
        unsigned k = i / 33;
        int off = (int)(i % 33) - 16;
        float t = __fmul_rn((float)k + 0.5f, d); /* the tie, or the float nearest it */
        uint32_t tb = __float_as_uint(t);
        if (off < 0 && tb < (uint32_t)-off)
            continue;
        float x = __uint_as_float(tb + off);
        n += kv_code_d(x, 0.0f, d, r, 255u) != (unsigned)mt_kv_code(x, 0.0f, d, 255);
    }
    if (n)
        atomicAdd(bad, n);
}

cudaError_t mtc_kv_selftest(unsigned long long mismatches[3])
{
    unsigned long long *d;
    cudaError_t e = cudaMalloc(&d, 3 * sizeof *d);
    if (e != cudaSuccess)
        return e;
    cudaMemset(d, 0, 3 * sizeof *d);
    kv_selftest_round<<<4096, 256>>>(d);
    kv_selftest_widen<<<256, 256>>>(d + 1);
    kv_selftest_code<<<0x7bff, 256>>>(d + 2);
    e = cudaGetLastError();
    if (e == cudaSuccess)
        e = cudaMemcpy(mismatches, d, 3 * sizeof *d, cudaMemcpyDeviceToHost);
    cudaFree(d);
    return e;
}

/* ---- offload ----------------------------------------------------------- */

static cudaError_t chunked(void *dst, const void *src, size_t bytes, size_t chunk,
                           cudaMemcpyKind kind, cudaStream_t s[2])
{
    if (!chunk)
        return cudaErrorInvalidValue;
    cudaError_t e = cudaSuccess;
    for (size_t off = 0, i = 0; off < bytes && e == cudaSuccess; off += chunk, i++) {
        size_t len = bytes - off < chunk ? bytes - off : chunk;
        e = cudaMemcpyAsync((char *)dst + off, (const char *)src + off, len, kind, s[i & 1]);
    }
    cudaError_t e0 = cudaStreamSynchronize(s[0]), e1 = cudaStreamSynchronize(s[1]);
    return e != cudaSuccess ? e : e0 != cudaSuccess ? e0 : e1;
}

cudaError_t mtc_offload_d2h(void *host_pinned, const void *dev, size_t bytes, size_t chunk,
                            cudaStream_t s[2])
{
    return chunked(host_pinned, dev, bytes, chunk, cudaMemcpyDeviceToHost, s);
}

cudaError_t mtc_offload_h2d(void *dev, const void *host_pinned, size_t bytes, size_t chunk,
                            cudaStream_t s[2])
{
    return chunked(dev, host_pinned, bytes, chunk, cudaMemcpyHostToDevice, s);
}

/* One pipeline: chunk i + 1's DMA into one staging chunk overlaps the
 * host copy of chunk i out of the other. */
static cudaError_t d2h_staged_1(char *host, const char *dev, size_t bytes, size_t chunk,
                                char *stage_pinned, cudaStream_t s[2])
{
    size_t nchunks = (bytes + chunk - 1) / chunk;
    char *stage[2] = {stage_pinned, stage_pinned + chunk};
    cudaError_t e = cudaSuccess;
#define LEN(i) (bytes - (i) * chunk < chunk ? bytes - (i) * chunk : chunk)
    if (nchunks)
        e = cudaMemcpyAsync(stage[0], dev, LEN(0), cudaMemcpyDeviceToHost, s[0]);
    for (size_t i = 0; i < nchunks && e == cudaSuccess; i++) {
        /* stage[(i+1)&1] was emptied by the host copy of chunk i-1 */
        if (i + 1 < nchunks)
            e = cudaMemcpyAsync(stage[(i + 1) & 1], dev + (i + 1) * chunk, LEN(i + 1),
                                cudaMemcpyDeviceToHost, s[(i + 1) & 1]);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(s[i & 1]);
        if (e == cudaSuccess)
            memcpy(host + i * chunk, stage[i & 1], LEN(i));
    }
    cudaStreamSynchronize(s[0]);
    cudaStreamSynchronize(s[1]);
    return e;
}

static cudaError_t h2d_staged_1(char *dev, const char *host, size_t bytes, size_t chunk,
                                char *stage_pinned, cudaStream_t s[2])
{
    size_t nchunks = (bytes + chunk - 1) / chunk;
    char *stage[2] = {stage_pinned, stage_pinned + chunk};
    cudaError_t e = cudaSuccess;
    for (size_t i = 0; i < nchunks && e == cudaSuccess; i++) {
        /* wait for the copy that last used this staging buffer (chunk i-2) */
        e = cudaStreamSynchronize(s[i & 1]);
        if (e != cudaSuccess)
            break;
        memcpy(stage[i & 1], host + i * chunk, LEN(i));
        e = cudaMemcpyAsync(dev + i * chunk, stage[i & 1], LEN(i), cudaMemcpyHostToDevice,
                            s[i & 1]);
    }
#undef LEN
    cudaError_t e0 = cudaStreamSynchronize(s[0]), e1 = cudaStreamSynchronize(s[1]);
    return e != cudaSuccess ? e : e0 != cudaSuccess ? e0 : e1;
}

/* `threads` pipelines side by side, each on its own slice (whole 4 KiB
 * pages), staging pair and streams: one host thread's memcpy out of pinned
 * memory runs at a fraction of the link's speed, several keep up with it. */
template <class F>
static cudaError_t staged(char *dst, const char *src, size_t bytes, size_t chunk, char *stage,
                          cudaStream_t *s, unsigned threads, F one)
{
    if (!chunk || !threads)
        return cudaErrorInvalidValue;
    size_t slice = ((bytes + threads - 1) / threads + 4095) & ~(size_t)4095;
    std::vector<std::thread> pool;
    std::vector<cudaError_t> err(threads, cudaSuccess);
    for (unsigned t = 0; t < threads; t++) {
        size_t off = t * slice;
        if (off >= bytes)
            break;
        size_t len = bytes - off < slice ? bytes - off : slice;
        auto run = [&, t, off, len] {
            err[t] = one(dst + off, src + off, len, chunk, stage + 2 * chunk * t, s + 2 * t);
        };
        if (t + 1 < threads && off + len < bytes)
            pool.emplace_back(run);
        else
            run(); /* the last slice on the calling thread */
    }
    for (auto &th : pool)
        th.join();
    for (cudaError_t e : err)
        if (e != cudaSuccess)
            return e;
    return cudaSuccess;
}

cudaError_t mtc_offload_d2h_staged(void *host, const void *dev, size_t bytes, size_t chunk,
                                   void *stage_pinned, cudaStream_t *s, unsigned threads)
{
    return staged((char *)host, (const char *)dev, bytes, chunk, (char *)stage_pinned, s, threads,
                  d2h_staged_1);
}

cudaError_t mtc_offload_h2d_staged(void *dev, const void *host, size_t bytes, size_t chunk,
                                   void *stage_pinned, cudaStream_t *s, unsigned threads)
{
    return staged((char *)dev, (const char *)host, bytes, chunk, (char *)stage_pinned, s, threads,
                  h2d_staged_1);
}
