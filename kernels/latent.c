/* latent.c: latent (low-rank) compression and the matmul that times
 * recomputation.
 *
 * x [rows][dim] is stored as z = x * B [rows][rank], B [dim][rank] with
 * orthonormal columns, and read back as x_hat = z * B^T: the MLA-style
 * down- and up-projection with a shared basis. The basis comes from a few
 * rounds of subspace iteration on x^T x (each a multiply by x and by x^T,
 * then modified Gram-Schmidt in double), which converges to the top-rank
 * right singular vectors, the best rank-r projection; 0 rounds leaves a
 * random orthonormal basis. Since B^T B = I, ||x - x_hat||^2 = ||x||^2 -
 * ||z||^2 up to rounding, which the tests check.
 *
 * The matmul is the plain i-k-j loop, compiled per ISA like kv.c: the
 * inner loop vectorizes over the output columns and every output element
 * is still summed over k in order, so all variants agree bit for bit. It is
 * a timing stand-in for a layer's forward, not a tuned GEMM.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels-internal.h"

MTI_INLINE void matmul_body(const float *restrict a, const float *restrict b, float *restrict c,
                            size_t m, size_t k, size_t n)
{
    for (size_t i = 0; i < m; i++) {
        float *restrict ci = c + i * n;
        memset(ci, 0, n * sizeof *ci);
        for (size_t p = 0; p < k; p++) {
            float aip = a[i * k + p];
            const float *restrict bp = b + p * n;
            for (size_t j = 0; j < n; j++)
                ci[j] += aip * bp[j];
        }
    }
}

/* c[k][n] = a[m][k]^T * b[m][n], each element summed over m in order. */
MTI_INLINE void matmul_tn_body(const float *restrict a, const float *restrict b,
                               float *restrict c, size_t m, size_t k, size_t n)
{
    memset(c, 0, k * n * sizeof *c);
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p++) {
            float aip = a[i * k + p];
            float *restrict cp = c + p * n;
            const float *restrict bi = b + i * n;
            for (size_t j = 0; j < n; j++)
                cp[j] += aip * bi[j];
        }
}

static void mm_scalar(const float *a, const float *b, float *c, size_t m, size_t k, size_t n)
{
    matmul_body(a, b, c, m, k, n);
}
static void mmtn_scalar(const float *a, const float *b, float *c, size_t m, size_t k, size_t n)
{
    matmul_tn_body(a, b, c, m, k, n);
}
#if defined(__x86_64__) || defined(__i386__)
MTI_AVX2 static void mm_avx2(const float *a, const float *b, float *c, size_t m, size_t k, size_t n)
{
    matmul_body(a, b, c, m, k, n);
}
MTI_AVX2 static void mmtn_avx2(const float *a, const float *b, float *c, size_t m, size_t k, size_t n)
{
    matmul_tn_body(a, b, c, m, k, n);
}
MTI_AVX512 static void mm_avx512(const float *a, const float *b, float *c, size_t m, size_t k, size_t n)
{
    matmul_body(a, b, c, m, k, n);
}
MTI_AVX512 static void mmtn_avx512(const float *a, const float *b, float *c, size_t m, size_t k,
                                   size_t n)
{
    matmul_tn_body(a, b, c, m, k, n);
}
#else
#define mm_avx2 mm_scalar
#define mm_avx512 mm_scalar
#define mmtn_avx2 mmtn_scalar
#define mmtn_avx512 mmtn_scalar
#endif

typedef void (*mm_fn)(const float *, const float *, float *, size_t, size_t, size_t);

void mt_matmul(const float *a, const float *b, float *c, size_t m, size_t k, size_t n)
{
    static const mm_fn fns[MT_ISA_COUNT] = {mm_scalar, mm_avx2, mm_avx512};
    fns[mti_isa()](a, b, c, m, k, n);
}

static void matmul_tn(const float *a, const float *b, float *c, size_t m, size_t k, size_t n)
{
    static const mm_fn fns[MT_ISA_COUNT] = {mmtn_scalar, mmtn_avx2, mmtn_avx512};
    fns[mti_isa()](a, b, c, m, k, n);
}

/* Orthonormalize the columns of q [dim][rank] in place (modified
 * Gram-Schmidt, double accumulation). A column that vanishes is replaced
 * by the next unit vector e_0, e_1, ... (rank <= dim: one of them is
 * independent of the columns before it). */
static void orthonormalize(float *q, size_t dim, size_t rank)
{
    size_t unit = 0;
    for (size_t j = 0; j < rank; j++) {
        for (size_t i = 0; i < j; i++) {
            double dot = 0;
            for (size_t d = 0; d < dim; d++)
                dot += (double)q[d * rank + i] * q[d * rank + j];
            for (size_t d = 0; d < dim; d++)
                q[d * rank + j] = (float)(q[d * rank + j] - dot * q[d * rank + i]);
        }
        double norm = 0;
        for (size_t d = 0; d < dim; d++)
            norm += (double)q[d * rank + j] * q[d * rank + j];
        if (norm < 1e-30) {
            for (size_t d = 0; d < dim; d++)
                q[d * rank + j] = d == unit % dim ? 1.0f : 0.0f;
            unit++;
            j--; /* re-orthogonalize the unit vector against the others */
            continue;
        }
        norm = sqrt(norm);
        for (size_t d = 0; d < dim; d++)
            q[d * rank + j] = (float)(q[d * rank + j] / norm);
    }
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int mt_latent_basis(const float *x, size_t rows, size_t dim, size_t rank, unsigned iters,
                    uint64_t seed, float *basis)
{
    if (!rank || rank > dim || !rows)
        return -EINVAL;
    for (size_t i = 0; i < dim * rank; i++)
        basis[i] = (float)((double)(splitmix(&seed) >> 11) * 0x1p-53 - 0.5);
    orthonormalize(basis, dim, rank);
    float *y = iters ? malloc(rows * rank * sizeof *y) : NULL;
    if (iters && !y)
        return -ENOMEM;
    for (unsigned it = 0; it < iters; it++) {
        mt_matmul(x, basis, y, rows, dim, rank);
        matmul_tn(x, y, basis, rows, dim, rank);
        orthonormalize(basis, dim, rank);
    }
    free(y);
    return 0;
}

int mt_latent_project(const float *x, size_t rows, size_t dim, const float *basis, size_t rank,
                      float *z)
{
    if (!rank || rank > dim)
        return -EINVAL;
    mt_matmul(x, basis, z, rows, dim, rank);
    return 0;
}

int mt_latent_reconstruct(const float *z, size_t rows, size_t rank, const float *basis,
                          size_t dim, float *x_hat)
{
    if (!rank || rank > dim)
        return -EINVAL;
    float *bt = malloc(rank * dim * sizeof *bt);
    if (!bt)
        return -ENOMEM;
    for (size_t d = 0; d < dim; d++)
        for (size_t r = 0; r < rank; r++)
            bt[r * dim + d] = basis[d * rank + r];
    mt_matmul(z, bt, x_hat, rows, rank, dim);
    free(bt);
    return 0;
}
