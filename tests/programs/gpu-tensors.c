/* gpu-tensors: per-tensor GPU events through include/memtrace.h (as a
 * framework's allocator would send them) in marked phases, with numbers
 * the test knows: device 0 gets 1000 (parameters, tagged), then in forward
 * 300 + 200 (activations), in backward 1000 (gradients, tagged) while the
 * activations are freed, in optimizer 2000 (optimizer_state, tagged);
 * device 1 gets one 4096-byte tensor in forward, freed at the end. */
#include "memtrace.h"

int main(void)
{
    const uint64_t base = 0x7f0000000000ull;
    memtrace_gpu_tensor_alloc(base, 1000, 0, 0);
    memtrace_tag_gpu(base, "parameters");
    memtrace_step(0);
    memtrace_phase_push("forward");
    memtrace_gpu_tensor_alloc(base + 0x1000, 300, 0, 7);
    memtrace_gpu_tensor_alloc(base + 0x2000, 200, 0, 7);
    memtrace_gpu_tensor_alloc(base + 0x9000, 4096, 1, 0);
    memtrace_phase_pop();
    memtrace_phase_push("backward");
    memtrace_gpu_tensor_alloc(base + 0x3000, 1000, 0, 7);
    memtrace_tag_gpu(base + 0x3000, "gradients");
    memtrace_gpu_tensor_free(base + 0x1000, 0);
    memtrace_gpu_tensor_free(base + 0x2000, 0);
    memtrace_phase_pop();
    memtrace_phase_push("optimizer");
    memtrace_gpu_tensor_alloc(base + 0x4000, 2000, 0, 7);
    memtrace_tag_gpu(base + 0x4000, "optimizer_state");
    memtrace_phase_pop();
    memtrace_gpu_tensor_free(base + 0x9000, 1);
    memtrace_gpu_tensor_free(base + 0x5000, 0); /* never allocated */
    return 0;
}
