/* phases: a training loop in C that marks its phases with include/memtrace.h
 * and prints the numbers memtrace must report for it.
 *
 * The "model" has LAYERS layers. Each step: forward keeps one activation per
 * layer and makes a short-lived scratch buffer per layer; backward frees the
 * activations in reverse and, in the first step, makes the gradients;
 * optimizer makes the optimizer state (two moments per parameter) in the
 * first step and a scratch buffer every step. Every block is tagged or
 * falls into a category by its lifetime (see docs/PHASES.md). Because the
 * program knows each allocation, it computes the peaks itself and prints
 * them as "expect KEY BYTES" lines (with snprintf and write: stdio's own
 * buffer would be an allocation of the program too).
 *
 * Build: cc -I include -o phases examples/phases.c
 * Run:   memtrace run -o phases.bin -- ./phases [STEPS]
 *        memtrace report phases.bin
 * Without memtrace the calls do nothing and the program runs the same.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memtrace.h"

#define LAYERS 4
static const size_t param_size[LAYERS] = { 40000, 80000, 80000, 20000 };
static const size_t act_size[LAYERS] = { 30000, 30000, 30000, 10000 };
static const size_t scratch_size = 5000;

enum { OTHER, FORWARD, BACKWARD, OPTIMIZER, NPHASE };
static const char *const phase_name[NPHASE] = { "other", "forward", "backward", "optimizer" };

/* What the program knows about its heap. */
static uint64_t live, peak, phase_peak[NPHASE], step_phase_peak[NPHASE];
static int phase = OTHER;

static void *take(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    memset(p, 1, n);
    live += n;
    if (live > peak)
        peak = live;
    if (live > phase_peak[phase])
        phase_peak[phase] = live;
    if (live > step_phase_peak[phase])
        step_phase_peak[phase] = live;
    return p;
}

static void give(void *p, size_t n)
{
    free(p);
    live -= n;
}

static void enter(int ph)
{
    memtrace_phase_push(phase_name[ph]);
    phase = ph;
    /* Entering counts: the phase sees what is live now. */
    if (live > phase_peak[ph])
        phase_peak[ph] = live;
    if (live > step_phase_peak[ph])
        step_phase_peak[ph] = live;
}

static void leave(void)
{
    memtrace_phase_pop();
    phase = OTHER;
    if (live > phase_peak[OTHER])
        phase_peak[OTHER] = live;
    if (live > step_phase_peak[OTHER])
        step_phase_peak[OTHER] = live;
}

static void say(const char *key, uint64_t v)
{
    char line[128];
    int n = snprintf(line, sizeof line, "expect %s %llu\n", key, (unsigned long long)v);
    if (write(1, line, (size_t)n) != n)
        exit(1);
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 3;
    if (steps < 1)
        steps = 1;
    void *param[LAYERS], *grad[LAYERS], *state[LAYERS], *act[LAYERS];
    uint64_t params = 0;
    for (int l = 0; l < LAYERS; l++) {
        param[l] = take(param_size[l]);
        memtrace_tag(param[l], "parameters");
        params += param_size[l];
    }
    uint64_t acts = 0, scratch_peak = 0;
    for (int s = 0; s < steps; s++) {
        memset(step_phase_peak, 0, sizeof step_phase_peak);
        memtrace_step((uint64_t)s);
        enter(FORWARD);
        for (int l = 0; l < LAYERS; l++) {
            char path[32];
            snprintf(path, sizeof path, "layers.%d", l);
            memtrace_scope_push(path);
            void *tmp = take(scratch_size);
            act[l] = take(act_size[l]);
            give(tmp, scratch_size);
            memtrace_scope_pop();
        }
        leave();
        enter(BACKWARD);
        for (int l = LAYERS - 1; l >= 0; l--) {
            if (s == 0) {
                grad[l] = take(param_size[l]);
                memtrace_tag(grad[l], "gradients");
            }
            give(act[l], act_size[l]);
        }
        leave();
        enter(OPTIMIZER);
        for (int l = 0; l < LAYERS; l++) {
            if (s == 0) {
                state[l] = take(2 * param_size[l]);
                memtrace_tag(state[l], "optimizer_state");
            }
        }
        void *tmp = take(scratch_size);
        give(tmp, scratch_size);
        leave();
        if (s == steps - 1) {
            char key[64];
            for (int ph = FORWARD; ph < NPHASE; ph++) {
                snprintf(key, sizeof key, "last_step.%s", phase_name[ph]);
                say(key, step_phase_peak[ph]);
            }
        }
    }
    for (int l = 0; l < LAYERS; l++)
        acts += act_size[l];
    scratch_peak = scratch_size;
    say("peak", peak);
    for (int ph = 0; ph < NPHASE; ph++) {
        char key[64];
        snprintf(key, sizeof key, "phase.%s", phase_name[ph]);
        say(key, phase_peak[ph]);
    }
    say("category.parameters", params);
    say("category.gradients", params);
    say("category.optimizer_state", 2 * params);
    say("category.activations", acts);
    say("category.temporaries", scratch_peak);
    say("steps", (uint64_t)steps);
    for (int l = 0; l < LAYERS; l++) {
        give(state[l], 2 * param_size[l]);
        give(grad[l], param_size[l]);
        give(param[l], param_size[l]);
    }
    return 0;
}
