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
 * computed by one lane and broadcast; keys: a thread holds the G rows of 4
 * channels in registers. min/max in kv.c's total order (order_key), so the
 * bits match for zeros of both signs. Other shapes (blocks not a multiple
 * of 4, other groups, unaligned pointers) take the older generic kernels
 * below. Arithmetic mirrors the C code operation for operation (_rn
 * intrinsics, -fmad=false), value by value, so only the order of the
 * order-independent max/min reductions differs.
 */
#include <math.h>
#include <string.h>

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

/* Codes of 4 consecutive values packed as kv.c packs them: bits * 4 bits. */
__device__ static inline unsigned pack4(float4 v, float z, float d, unsigned bits, int levels)
{
    return (unsigned)mt_kv_code(v.x, z, d, levels) | (unsigned)mt_kv_code(v.y, z, d, levels) << bits |
           (unsigned)mt_kv_code(v.z, z, d, levels) << (2 * bits) |
           (unsigned)mt_kv_code(v.w, z, d, levels) << (3 * bits);
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

__device__ static inline float4 dequant_kv4(unsigned c, float z, float s, unsigned bits)
{
    unsigned mask = (1u << bits) - 1u;
    return make_float4(__fadd_rn(__fmul_rn((float)(c & mask), s), z),
                       __fadd_rn(__fmul_rn((float)((c >> bits) & mask), s), z),
                       __fadd_rn(__fmul_rn((float)((c >> (2 * bits)) & mask), s), z),
                       __fadd_rn(__fmul_rn((float)((c >> (3 * bits)) & mask), s), z));
}

/* float4 loads per lane and chunk (values): 4 measured faster than 8 (more
 * warps resident to overlap one warp's division-bound codes with the
 * others' loads) */
#define KV_K 4

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
    const int levels = (int)((1u << bits) - 1u);
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
        float zr[R], dr[R];
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
            mt_kv_group_params(of_key_d(mn), of_key_d(mx), (unsigned)levels, &zh, &sh, &z, &s);
            zr[r] = z;
            dr[r] = mt_kv_divisor(s);
            size_t j = c0 + 32 * (size_t)mine + seg; /* first float4 of that group */
            if (mine < KV_K && j < n4)
                meta[j / S] = (uint32_t)zh | (uint32_t)sh << 16;
        }
#pragma unroll
        for (int k = 0; k < KV_K; k++) {
            float z = __shfl_sync(0xffffffffu, zr[k / S], seg + k % S);
            float d = __shfl_sync(0xffffffffu, dr[k / S], seg + k % S);
            size_t j = c0 + 32 * k + lane;
            if (j < n4)
                store_codes4(codes, j, bits, pack4(v[k], z, d, bits, levels));
        }
    }
}

/* Keys, G in {8, 16, 32}: a thread takes 4 channels (one float4 column)
 * of a token group and holds its G rows in registers: one read of x, the
 * min and max per channel in the thread, 4 groups' parameters, 16 bytes
 * of metadata. grid.y walks the token groups. */
template <int G>
__global__ void __launch_bounds__(128)
    kv_keys_vec(const float4 *x, size_t C4, size_t ntg, unsigned bits, uint8_t *codes, uint4 *meta)
{
    const int levels = (int)((1u << bits) - 1u);
    size_t c4 = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (c4 >= C4)
        return;
    for (size_t tg = blockIdx.y; tg < ntg; tg += gridDim.y) {
        const float4 *x0 = x + tg * G * C4 + c4;
        float4 v[G];
#pragma unroll
        for (int t = 0; t < G; t++)
            v[t] = x0[t * C4];
        int32_t n0 = order_key_d(v[0].x), n1 = order_key_d(v[0].y), n2 = order_key_d(v[0].z),
                n3 = order_key_d(v[0].w);
        int32_t x0k = n0, x1k = n1, x2k = n2, x3k = n3;
#pragma unroll
        for (int t = 1; t < G; t++) {
            int32_t a = order_key_d(v[t].x), b = order_key_d(v[t].y), c = order_key_d(v[t].z),
                    d = order_key_d(v[t].w);
            n0 = min(n0, a), x0k = max(x0k, a);
            n1 = min(n1, b), x1k = max(x1k, b);
            n2 = min(n2, c), x2k = max(x2k, c);
            n3 = min(n3, d), x3k = max(x3k, d);
        }
        int32_t mn[4] = {n0, n1, n2, n3}, mx[4] = {x0k, x1k, x2k, x3k};
        float z[4], d[4];
        uint32_t m[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            uint16_t zh = 0, sh = 0;
            float s = 0;
            z[q] = 0;
            mt_kv_group_params(of_key_d(mn[q]), of_key_d(mx[q]), (unsigned)levels, &zh, &sh, &z[q],
                               &s);
            d[q] = mt_kv_divisor(s);
            m[q] = (uint32_t)zh | (uint32_t)sh << 16;
        }
        meta[tg * C4 + c4] = make_uint4(m[0], m[1], m[2], m[3]);
#pragma unroll
        for (int t = 0; t < G; t++) {
            unsigned c = (unsigned)mt_kv_code(v[t].x, z[0], d[0], levels) |
                         (unsigned)mt_kv_code(v[t].y, z[1], d[1], levels) << bits |
                         (unsigned)mt_kv_code(v[t].z, z[2], d[2], levels) << (2 * bits) |
                         (unsigned)mt_kv_code(v[t].w, z[3], d[3], levels) << (3 * bits);
            store_codes4(codes, (tg * G + t) * C4 + c4, bits, c);
        }
    }
}

/* Keys dequantize, any G: a thread takes one float4 column of a token
 * group, its 4 (z, s) pairs read once. */
__global__ void kv_keys_dequant_vec(const uint8_t *codes, const uint4 *meta, size_t C4, size_t ntg,
                                    unsigned bits, size_t G, float4 *x)
{
    size_t c4 = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (c4 >= C4)
        return;
    unsigned mask = (1u << bits) - 1u;
    for (size_t tg = blockIdx.y; tg < ntg; tg += gridDim.y) {
        uint4 m = meta[tg * C4 + c4];
        uint32_t mw[4] = {m.x, m.y, m.z, m.w};
        float z[4], s[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            z[q] = mt_f16_to_f32((uint16_t)(mw[q] & 0xffffu));
            s[q] = mt_f16_to_f32((uint16_t)(mw[q] >> 16));
        }
#pragma unroll 8
        for (size_t t = 0; t < G; t++) {
            size_t j = (tg * G + t) * C4 + c4;
            unsigned c = load_codes4(codes, j, bits);
            x[j] = make_float4(__fadd_rn(__fmul_rn((float)(c & mask), s[0]), z[0]),
                               __fadd_rn(__fmul_rn((float)((c >> bits) & mask), s[1]), z[1]),
                               __fadd_rn(__fmul_rn((float)((c >> (2 * bits)) & mask), s[2]), z[2]),
                               __fadd_rn(__fmul_rn((float)((c >> (3 * bits)) & mask), s[3]), z[3]));
        }
    }
}

/* Values dequantize, G a multiple of 4: a thread per float4. */
template <int G>
__global__ void kv_values_dequant_vec(const uint8_t *codes, const uint32_t *meta, size_t n4,
                                      unsigned bits, float4 *x)
{
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n4;
         j += (size_t)gridDim.x * blockDim.x) {
        uint32_t m = meta[j / (G / 4)];
        float z = mt_f16_to_f32((uint16_t)(m & 0xffffu)), s = mt_f16_to_f32((uint16_t)(m >> 16));
        x[j] = dequant_kv4(load_codes4(codes, j, bits), z, s, bits);
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
        dim3 grid((unsigned)((C4 + 127) / 128), ygrid(ntg));
        const float4 *x4 = (const float4 *)x;
        if (group == 8)
            kv_keys_vec<8><<<grid, 128, 0, stream>>>(x4, C4, ntg, bits, codes, (uint4 *)meta);
        else if (group == 16)
            kv_keys_vec<16><<<grid, 128, 0, stream>>>(x4, C4, ntg, bits, codes, (uint4 *)meta);
        else
            kv_keys_vec<32><<<grid, 128, 0, stream>>>(x4, C4, ntg, bits, codes, (uint4 *)meta);
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
        dim3 grid((unsigned)((C4 + 127) / 128), ygrid(tokens / group));
        kv_keys_dequant_vec<<<grid, 128, 0, stream>>>(codes, (const uint4 *)meta, C4, tokens / group,
                                                      bits, group, (float4 *)x);
    } else if (kv_vec_ok(x, codes, meta, channels) && kind == MT_KV_VALUES &&
               (group == 8 || group == 16 || group == 32 || group == 64)) {
        const uint32_t *m32 = (const uint32_t *)meta;
        unsigned g = elem_grid(n4, 256);
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

cudaError_t mtc_offload_d2h_staged(void *host, const void *dev, size_t bytes, size_t chunk,
                                   void *stage_pinned, cudaStream_t s[2])
{
    if (!chunk)
        return cudaErrorInvalidValue;
    size_t nchunks = (bytes + chunk - 1) / chunk;
    char *stage[2] = {(char *)stage_pinned, (char *)stage_pinned + chunk};
    cudaError_t e = cudaSuccess;
#define LEN(i) (bytes - (i) * chunk < chunk ? bytes - (i) * chunk : chunk)
    if (nchunks)
        e = cudaMemcpyAsync(stage[0], dev, LEN(0), cudaMemcpyDeviceToHost, s[0]);
    for (size_t i = 0; i < nchunks && e == cudaSuccess; i++) {
        /* stage[(i+1)&1] was emptied by the host copy of chunk i-1 */
        if (i + 1 < nchunks)
            e = cudaMemcpyAsync(stage[(i + 1) & 1], (const char *)dev + (i + 1) * chunk,
                                LEN(i + 1), cudaMemcpyDeviceToHost, s[(i + 1) & 1]);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(s[i & 1]);
        if (e == cudaSuccess)
            memcpy((char *)host + i * chunk, stage[i & 1], LEN(i));
    }
    cudaStreamSynchronize(s[0]);
    cudaStreamSynchronize(s[1]);
    return e;
}

cudaError_t mtc_offload_h2d_staged(void *dev, const void *host, size_t bytes, size_t chunk,
                                   void *stage_pinned, cudaStream_t s[2])
{
    if (!chunk)
        return cudaErrorInvalidValue;
    size_t nchunks = (bytes + chunk - 1) / chunk;
    char *stage[2] = {(char *)stage_pinned, (char *)stage_pinned + chunk};
    cudaError_t e = cudaSuccess;
    for (size_t i = 0; i < nchunks && e == cudaSuccess; i++) {
        /* wait for the copy that last used this staging buffer (chunk i-2) */
        e = cudaStreamSynchronize(s[i & 1]);
        if (e != cudaSuccess)
            break;
        memcpy(stage[i & 1], (const char *)host + i * chunk, LEN(i));
        e = cudaMemcpyAsync((char *)dev + i * chunk, stage[i & 1], LEN(i), cudaMemcpyHostToDevice,
                            s[i & 1]);
    }
#undef LEN
    cudaError_t e0 = cudaStreamSynchronize(s[0]), e1 = cudaStreamSynchronize(s[1]);
    return e != cudaSuccess ? e : e0 != cudaSuccess ? e0 : e1;
}
