/* phases: what the program's markers (and its GPU records) (include/memtrace.h, or memtrace's
 * PyTorch integration) say about its heap: peaks per phase and per step,
 * the breakdown by category, allocations by module, memory efficiency.
 *
 * Only for traces with MARK or GPU records; the report runs it after its
 * own pass when it saw any. GPU memory per device (devices.h) is counted in
 * the same passes, against the same phases and steps, with categories
 * decided the same way. Two more passes over the trace:
 *  1. Replays phases (a process-wide stack of names, the innermost
 *     current; nothing pushed is "other"), steps and scopes (module paths)
 *     against the heap: the peak of each phase, of each phase within each
 *     step, of each module, and the category of every block once its life
 *     is over (kept in one byte per seq): its tag if it has one, else
 *     "activations" if made in a forward phase and freed in a later
 *     backward, "temporaries" if made and freed within one phase instance
 *     (between two phase changes), "other".
 *  2. With every block's category known from its allocation on, the live
 *     bytes of each category: its peak, and the breakdown at the global
 *     heap peak and at each phase's peak (exact: taken at the seq of the
 *     event that reached it).
 * Heap bytes are the report's: requested sizes of live malloc-family
 * blocks. Memory: one entry per live block, one byte per seq in the trace.
 *
 * Observer (mt_phases_compute_obs): other passes that need, per block, the
 * phase it was made in and its category (flamegraphs, timelines) get them
 * from pass 1 through optional callbacks instead of replaying the markers:
 * one call per heap block and per GPU allocation when its life is over (at
 * its free, or after the pass for those live at the end), one per phase
 * change and one per step. The callbacks only observe: the numbers above
 * are the same with or without them.
 */
#ifndef MT_PHASES_H
#define MT_PHASES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices.h"
#include "mt-error.h"

struct mt_report_site;

/* Categories the report always lists, in this order; tags with other
 * names add categories after these. */
enum mt_category {
    MT_CAT_PARAMETERS,
    MT_CAT_GRADIENTS,
    MT_CAT_OPTIMIZER_STATE,
    MT_CAT_ACTIVATIONS,
    MT_CAT_TEMPORARIES,
    MT_CAT_KV_CACHE,
    MT_CAT_OTHER,
    MT_CAT_FIXED
};

struct mt_peak {
    uint64_t bytes;   /* most heap bytes live */
    uint64_t time_ns; /* when first reached */
    uint64_t seq;     /* the event that reached it (0: never current) */
};

struct mt_phase_stat {
    char *name;               /* "other" for index 0 */
    struct mt_peak peak;
    uint64_t time_ns;         /* time it was the current phase */
    uint64_t instances;       /* times it became current */
    uint64_t *cat_at_peak;    /* per category, bytes live at its peak */
};

struct mt_step_stat {
    uint64_t step;            /* as marked */
    uint64_t start_ns;
    struct mt_peak peak;      /* within the step */
    struct mt_peak *phase;    /* per phase (index as in phase[]); seq 0:
                                 not current in this step */
    struct mt_step_device *dev; /* per device and phase, GPU peaks */
    size_t ndev;
};

struct mt_module_stat {
    char *path;
    uint64_t peak_bytes;      /* most bytes live that were allocated under
                                 it or a submodule */
    uint64_t self_peak_bytes; /* the same, under it only */
    uint64_t alloc_count;     /* allocations under it (submodules included) */
    uint64_t alloc_bytes;
};

struct mt_phases {
    size_t nphase;
    struct mt_phase_stat *phase;
    size_t nstep;
    struct mt_step_stat *step;
    size_t ncat;
    char **cat_name;          /* ncat names */
    uint64_t *cat_peak;       /* per category: most bytes live at once */
    uint64_t *cat_at_peak;    /* per category: bytes live at the heap peak */
    size_t nmodule;
    struct mt_module_stat *module; /* by peak_bytes, largest first */
    struct mt_peak peak;      /* the heap peak (as the report's) */
    uint64_t mean_live_bytes; /* time-weighted, first to last event */
    uint64_t tags, tags_unmatched; /* host TAGs; those naming no live block */
    uint64_t marks;           /* MARK events */
    struct mt_device_stat *dev; /* GPUs, in order of first use (devices.h) */
    size_t ndev;
    /* Filled and freed by the report (NULL here): per device, one site per
     * OOM event with its stack resolved. */
    struct mt_report_site **oom_sites;
    uint64_t gpu_tags, gpu_tags_unmatched;
};

/* A heap block or GPU allocation whose life is over, as pass 1 saw it. */
struct mt_block_life {
    bool gpu;           /* a GPU allocation (size and stack_id are 0) */
    uint64_t seq;       /* its allocation's seq (a heap block's id) */
    uint64_t end_seq;   /* the event that ended it; 0: live at the end */
    uint64_t size;      /* heap: requested bytes */
    uint64_t stack_id;  /* heap: its allocation's call-tree node */
    unsigned phase;     /* index into mt_phases.phase it was made in */
    unsigned category;  /* index into mt_phases.cat_name */
};

/* Callbacks of pass 1 (each may be NULL). Phase indices and category
 * indices are final when given; names are in the result once it returns.
 * phase: the phase index p became current at time_ns (also when the same
 * phase starts again). step: a STEP marker (value as marked). */
struct mt_phases_observer {
    void (*block)(const struct mt_block_life *b, void *arg);
    void (*phase)(unsigned p, uint64_t time_ns, void *arg);
    void (*step)(uint64_t step, uint64_t time_ns, void *arg);
    void *arg;
};

/* Runs the two passes over path. 0 and *out, or a negative errno-style
 * code and err (-ENOMEM, or the reader's). */
int mt_phases_compute(const char *path, struct mt_phases *out, struct mt_error *err);
/* The same, with a classifier of GPU allocation stacks (devices.h:
 * framework allocations are what the report calls reserved). */
int mt_phases_compute_ex(const char *path, int (*is_framework)(uint64_t stack_id, void *arg), void *arg,
                         struct mt_phases *out, struct mt_error *err);
/* The same, calling obs (may be NULL) during pass 1. */
int mt_phases_compute_obs(const char *path, int (*is_framework)(uint64_t stack_id, void *arg), void *arg,
                          const struct mt_phases_observer *obs, struct mt_phases *out, struct mt_error *err);
void mt_phases_destroy(struct mt_phases *p);

#endif
