/* kernels.cu: CUDA versions of the q8 quantizer, the int8 AdamW step, KV
 * quantization and the offload copies (declared in kernels-cuda.h).
 *
 * q8 and AdamW: one CTA of 64 threads per quantization block; when the
 * block is a multiple of 4 (and the pointers 16-byte aligned) each thread
 * holds up to PER float4 of its block in registers, so the block is read
 * once, reduced to its absmax (integer max of |x| bit patterns, as in
 * q8.c), and quantized from registers; other blocks take a generic path
 * that reads the block twice. KV values: one thread per element, groups
 * reduced with warp shuffles, codes packed with shuffles; keys: one thread
 * per channel walking the group's tokens. Arithmetic mirrors the C code
 * operation for operation (_rn intrinsics, -fmad=false).
 */
#include <math.h>
#include <string.h>

#include "kernels-cuda.h"
#include "kv-group.h"

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

template <int PER>
__global__ void q8_quantize_vec(const float4 *x, size_t n4, size_t block4, char4 *codes,
                                float *absmax, size_t nblocks)
{
    for (size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
        size_t base = b * block4, len = min(block4, n4 - base);
        float4 v[PER];
        uint32_t m = 0;
#pragma unroll
        for (int k = 0; k < PER; k++) {
            size_t i = (size_t)k * Q8_THREADS + threadIdx.x;
            v[k] = i < len ? x[base + i] : make_float4(0, 0, 0, 0);
            m = max(m, __float_as_uint(v[k].x) & 0x7fffffffu);
            m = max(m, __float_as_uint(v[k].y) & 0x7fffffffu);
            m = max(m, __float_as_uint(v[k].z) & 0x7fffffffu);
            m = max(m, __float_as_uint(v[k].w) & 0x7fffffffu);
        }
        m = cta_max(m);
        float a, inv = 0;
        int ok = q8_scale_d(m, &a, &inv);
        if (threadIdx.x == 0)
            absmax[b] = a;
#pragma unroll
        for (int k = 0; k < PER; k++) {
            size_t i = (size_t)k * Q8_THREADS + threadIdx.x;
            if (i < len)
                codes[base + i] = ok ? make_char4(q8_code_d(v[k].x, inv), q8_code_d(v[k].y, inv),
                                                  q8_code_d(v[k].z, inv), q8_code_d(v[k].w, inv))
                                     : make_char4(0, 0, 0, 0);
        }
    }
}

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

cudaError_t mtc_q8_quantize(const float *x, size_t n, size_t block, int8_t *codes, float *absmax,
                            cudaStream_t stream)
{
    if (!block)
        return cudaErrorInvalidValue;
    size_t nb = mt_q8_blocks(n, block);
    if (!nb)
        return cudaSuccess;
    size_t per = (block / 4 + Q8_THREADS - 1) / Q8_THREADS;
    if (block % 4 == 0 && n % 4 == 0 && aligned16(x) && aligned16(codes) && per <= 16) {
        const float4 *x4 = (const float4 *)x;
        char4 *c4 = (char4 *)codes;
        size_t n4 = n / 4, b4 = block / 4;
        unsigned g = grid_for(nb);
        if (per <= 1)
            q8_quantize_vec<1><<<g, Q8_THREADS, 0, stream>>>(x4, n4, b4, c4, absmax, nb);
        else if (per <= 2)
            q8_quantize_vec<2><<<g, Q8_THREADS, 0, stream>>>(x4, n4, b4, c4, absmax, nb);
        else if (per <= 4)
            q8_quantize_vec<4><<<g, Q8_THREADS, 0, stream>>>(x4, n4, b4, c4, absmax, nb);
        else if (per <= 8)
            q8_quantize_vec<8><<<g, Q8_THREADS, 0, stream>>>(x4, n4, b4, c4, absmax, nb);
        else
            q8_quantize_vec<16><<<g, Q8_THREADS, 0, stream>>>(x4, n4, b4, c4, absmax, nb);
    } else {
        q8_quantize_any<<<grid_for(nb), Q8_THREADS, 0, stream>>>(x, n, block, codes, absmax, nb);
    }
    return cudaGetLastError();
}

__global__ void q8_dequantize_vec(const char4 *codes, const float *absmax, size_t n4, size_t block4,
                                  float4 *x)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        float s = __fdiv_rn(absmax[i / block4], 127.0f);
        char4 c = codes[i];
        x[i] = make_float4(__fmul_rn((float)c.x, s), __fmul_rn((float)c.y, s),
                           __fmul_rn((float)c.z, s), __fmul_rn((float)c.w, s));
    }
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
    if (block % 4 == 0 && n % 4 == 0 && aligned16(x) && aligned16(codes))
        q8_dequantize_vec<<<elem_grid(n / 4, 256), 256, 0, stream>>>(
            (const char4 *)codes, absmax, n / 4, block / 4, (float4 *)x);
    else
        q8_dequantize_any<<<elem_grid(n, 256), 256, 0, stream>>>(codes, absmax, n, block, x);
    return cudaGetLastError();
}

/* ---- AdamW ------------------------------------------------------------- */

struct consts {
    float decay, b1, c1, b2, c2, step_size, bc2_sqrt, eps;
};

/* As adamw8.c's consts_of, on the host, so both sides use equal floats. */
static struct consts consts_of(const struct mt_adamw_params *hp, long step)
{
    struct consts k;
    double bc1 = 1.0 - pow((double)hp->beta1, (double)step);
    double bc2 = 1.0 - pow((double)hp->beta2, (double)step);
    k.decay = 1.0f - hp->lr * hp->weight_decay;
    k.b1 = hp->beta1;
    k.c1 = 1.0f - hp->beta1;
    k.b2 = hp->beta2;
    k.c2 = 1.0f - hp->beta2;
    k.step_size = (float)((double)hp->lr / bc1);
    k.bc2_sqrt = (float)sqrt(bc2);
    k.eps = hp->eps;
    return k;
}

__device__ static inline void update1_d(const consts &k, float &p, float g, float &m, float &v)
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
__global__ void adamw8_kernel(consts k, float *p, const float *g, int8_t *mc, float *ma,
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

cudaError_t mtc_adamw8_step(float *param, const float *grad, int8_t *m, float *m_absmax,
                            int8_t *v, float *v_absmax, size_t n, size_t block,
                            const struct mt_adamw_params *hp, long step, cudaStream_t stream)
{
    if (!block || step < 1 || block > 64 * Q8_THREADS)
        return cudaErrorInvalidValue;
    size_t nb = mt_q8_blocks(n, block);
    if (!nb)
        return cudaSuccess;
    consts k = consts_of(hp, step);
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
    if (kind == MT_KV_KEYS) {
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
    kv_dequant<<<elem_grid(n, 256), 256, 0, stream>>>(kind, codes, meta, n, channels, bits, group,
                                                      x);
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
