/* ckpt-order: a three-block chain on "GPU 0" (per-tensor events through
 * include/memtrace.h) whose backward frees the framework's small host
 * bookkeeping of every block at once, out of the blocks' order, while it
 * is still in the last block, as PyTorch's autograd engine does with its
 * graph nodes on a CUDA run.
 *
 * Device 0: 1,000,000 bytes before the steps (never freed). Forward, block
 * l (scope layers.l): two activations of A[l] bytes, then the block's
 * output of 50,000, then a 256-byte host node. A = 100,000, 300,000,
 * 100,000. Backward, block by block from the last (scope layers.l): a
 * 100,000-byte gradient buffer, then (in block 2 only) the host nodes of
 * all three blocks, then the block's activations, buffer and output go.
 * Two steps.
 *
 * Checkpointing every block, worked out by hand: block 1's backward holds
 * its recomputed activations (600,000), the outputs of blocks 0 and 1
 * (100,000) and its buffer (100,000) over the 1,000,000: 1,800,000, the
 * peak. Taking the host nodes' frees for the start of block 0's and 1's
 * backward would swap block 2's recomputed activations for block 1's in
 * block 2's backward: 1,850,000. */
#include <stdlib.h>

#include "memtrace.h"

#define BLOCKS 3

int main(void)
{
    const uint64_t base = 0x7e0000000000ull;
    const uint64_t act[BLOCKS] = { 100000, 300000, 100000 };
    static const char *const path[BLOCKS] = { "layers.0", "layers.1", "layers.2" };
    memtrace_gpu_tensor_alloc(base, 1000000, 0, 0);
    for (int step = 0; step < 2; step++) {
        uint64_t a = base + 0x100000 + (uint64_t)step * 0x100000;
        void *node[BLOCKS];
        memtrace_step((uint64_t)step);
        memtrace_phase_push("forward");
        for (int l = 0; l < BLOCKS; l++) {
            memtrace_scope_push(path[l]);
            memtrace_gpu_tensor_alloc(a + (uint64_t)l * 0x1000 + 0x000, act[l], 0, 0);
            memtrace_gpu_tensor_alloc(a + (uint64_t)l * 0x1000 + 0x100, act[l], 0, 0);
            memtrace_gpu_tensor_alloc(a + (uint64_t)l * 0x1000 + 0x200, 50000, 0, 0);
            if (!(node[l] = malloc(256)))
                return 1;
            memtrace_scope_pop();
        }
        memtrace_phase_pop();
        memtrace_phase_push("backward");
        for (int l = BLOCKS - 1; l >= 0; l--) {
            memtrace_scope_push(path[l]);
            memtrace_gpu_tensor_alloc(a + 0x8000, 100000, 0, 0);
            if (l == BLOCKS - 1)
                for (int k = 0; k < BLOCKS; k++)
                    free(node[k]);
            memtrace_gpu_tensor_free(a + (uint64_t)l * 0x1000 + 0x000, 0);
            memtrace_gpu_tensor_free(a + (uint64_t)l * 0x1000 + 0x100, 0);
            memtrace_gpu_tensor_free(a + 0x8000, 0);
            memtrace_gpu_tensor_free(a + (uint64_t)l * 0x1000 + 0x200, 0);
            memtrace_scope_pop();
        }
        memtrace_phase_pop();
    }
    return 0;
}
