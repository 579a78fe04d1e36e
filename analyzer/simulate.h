/* simulate: replays a trace with its allocations transformed as a
 * memory-saving technique would transform them, and predicts the peaks.
 *
 * Not a formula on totals: every allocation of the trace is replayed in
 * order, with the size and the life a technique would give it, against the
 * phases, steps and modules the trace marks (phases.h), and the peaks of
 * the replay are the prediction. What each technique does to which
 * allocations, and what it costs per step, is in docs/SIMULATE.md; in
 * short:
 *  - checkpointing (module granularity, over the repeated blocks such as
 *    blocks.0 .. blocks.N-1): the activations a checkpointed segment makes
 *    in forward are freed when the segment's forward ends (its output is
 *    kept), and made again, all at once, when backward reaches the
 *    segment, together with the transient peak of its forward; cost: the
 *    measured forward time of the recomputed blocks;
 *  - optimizer state in N bits with one fp32 absmax per block: state
 *    tensors of at least 4096 fp32 values shrink to N/8 + 4/block bytes per
 *    value; GaLore keeps rank-r moments (tensors taken as square);
 *  - lower-precision activations, gradient accumulation (activations and
 *    forward/backward temporaries scaled), KV-cache compression and window
 *    (allocations tagged kv_cache), offloading a category off the device
 *    (to the host, or out of RAM to disk) with its transfer time.
 * Per GPU the same transforms apply to per-tensor allocations; reserved is
 * predicted as the predicted allocated peak plus the baseline's reserve
 * over allocated.
 */
#ifndef MT_SIMULATE_H
#define MT_SIMULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mt-error.h"
#include "phases.h"

enum mt_ck_mode { MT_CK_NONE, MT_CK_EVERY, MT_CK_EVERY_K, MT_CK_SQRT, MT_CK_BUDGET, MT_CK_OPTIMAL };

enum {
    MT_OFFLOAD_OPTIMIZER = 1 << 0,
    MT_OFFLOAD_ACTIVATIONS = 1 << 1,
    MT_OFFLOAD_KV = 1 << 2,
};

#define MT_SIM_MAX_BLOCKS 1024u

struct mt_sim_opts {
    enum mt_ck_mode ck;
    unsigned ck_k;              /* every:K */
    uint64_t ck_budget;         /* budget:BYTES and optimal: host (or --device) bytes */
    unsigned opt_bits;          /* 0: optimizer state as traced */
    unsigned opt_block;         /* values per absmax (default 128) */
    unsigned galore_rank;       /* 0: off */
    unsigned act_bytes;         /* activations' bytes per value: 0 as traced (4), 2 or 1 */
    unsigned grad_accum;        /* 0 or 1: off */
    unsigned offload;           /* MT_OFFLOAD_* */
    bool offload_disk;          /* to a file instead of host memory */
    double bandwidth_gbps;      /* for transfer times (0: the default, 25) */
    double kv_latent_ratio;     /* 0: off */
    unsigned kv_bits, kv_group; /* 0: off */
    unsigned kv_elem_bytes;     /* the traced cache's bytes per value (4) */
    uint64_t kv_window;         /* tokens, 0: off */
    int device;                 /* device whose numbers budget/optimal use; -1 host */
    /* The checkpointed segments (filled from ck by mt_sim_run): block i is
     * in segment seg[i] (-1: not checkpointed); a segment is a run of
     * consecutive blocks with the same number. */
    int seg[MT_SIM_MAX_BLOCKS];
};

/* What the baseline replay measured of the repeated blocks. */
struct mt_sim_chain {
    char prefix[256];         /* e.g. "blocks" */
    unsigned n;               /* blocks prefix.0 .. prefix.n-1 */
    uint64_t act[MT_SIM_MAX_BLOCKS];   /* activation bytes made in its forward (mean over steps) */
    uint64_t out[MT_SIM_MAX_BLOCKS];   /* of those, its output (the last one made) */
    uint64_t temp[MT_SIM_MAX_BLOCKS];  /* transient peak of its forward over the activations
                                          (host heap; least over steps) */
    uint64_t temp_gpu[MT_SIM_MAX_BLOCKS]; /* the same on the first GPU */
    double fwd_s[MT_SIM_MAX_BLOCKS];   /* its forward time (mean over steps) */
};

struct mt_sim_phase {
    char name[64];
    uint64_t base_peak, pred_peak;
};

struct mt_sim_device {
    uint32_t device;
    bool simulated;             /* per-tensor allocations were there to transform */
    uint64_t base_reserved, base_allocated; /* peaks (0 with has_* false) */
    bool has_reserved, has_allocated;
    uint64_t pred_reserved, pred_allocated;
    size_t nphase;
    struct mt_sim_phase *phase; /* allocated peaks per phase */
};

struct mt_sim_result {
    uint64_t base_peak, pred_peak;       /* host heap */
    size_t nphase;
    struct mt_sim_phase *phase;          /* host heap per phase */
    size_t ndev;
    struct mt_sim_device *dev;
    double extra_s_per_step;             /* added time, no overlap */
    double extra_s_overlap;              /* with transfers overlapping compute */
    double recompute_s, transfer_s;      /* parts of extra_s_per_step */
    uint64_t offloaded_peak;             /* bytes kept on the host or disk instead */
    uint64_t steps;
    unsigned ck_segments, ck_blocks;     /* checkpointed segments and blocks */
    char schedule[256];                  /* the segments, e.g. "0-1,2-3" */
    char note[512];                      /* what could not be simulated */
};

/* A trace read once: its phases (pass 1 of phases.h), every allocation's
 * category and the chain of repeated blocks. */
struct mt_sim_base;

int mt_sim_open(const char *path, struct mt_sim_base **out, struct mt_error *err);
void mt_sim_close(struct mt_sim_base *b);
const struct mt_sim_chain *mt_sim_chain(const struct mt_sim_base *b);
const struct mt_phases *mt_sim_phases(const struct mt_sim_base *b);

/* Replays the trace under opts (its seg[] is filled from ck). 0, or a
 * negative errno-style code and err. res is freed with mt_sim_result_free. */
int mt_sim_run(struct mt_sim_base *b, struct mt_sim_opts *opts, struct mt_sim_result *res, struct mt_error *err);
void mt_sim_result_free(struct mt_sim_result *res);
void mt_sim_opts_init(struct mt_sim_opts *o);

/* "8GiB", "500MB", "1.5G", "123456": bytes; false on anything else. */
bool mt_parse_size(const char *s, uint64_t *out);

/* simulate-cmd.c: the commands. */
int mt_simulate_main(int argc, char **argv);
int mt_plan_main(int argc, char **argv);

#endif
