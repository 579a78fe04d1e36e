/* adamw-consts.h: the per-call constants of an AdamW step, computed once on
 * the host and shared by the C variants (adamw8.c) and the CUDA kernels
 * (cuda/kernels.cu), so every variant on both sides uses equal floats. */
#ifndef MT_ADAMW_CONSTS_H
#define MT_ADAMW_CONSTS_H

#include <math.h>

#include "mtkernels.h"

struct mt_adamw_consts {
    float decay, b1, c1, b2, c2, step_size, bc2_sqrt, eps;
};

static inline struct mt_adamw_consts mt_adamw_consts_of(const struct mt_adamw_params *hp, long step)
{
    struct mt_adamw_consts k;
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

#endif
