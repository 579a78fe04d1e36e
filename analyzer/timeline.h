/* timeline: `memtrace timeline`, memory over time as a picture (SVG, or
 * HTML holding the same SVG) and as a Chrome trace / Perfetto JSON.
 *
 * Everything comes from heap-view.h's grid (at most MT_VIEW_BUCKETS
 * buckets), so the output has a bounded size whatever the trace's length:
 *   - host panel: the heap, stacked by category (each bucket shows the live
 *     set at the instant its heap total was highest, so the stack adds up
 *     to the bucket's maximum), the RSS as a dashed line when sampled;
 *   - one panel per GPU (the first MT_VIEW_GPUS): reserved and allocated
 *     bytes (highest in each bucket);
 *   - phase bands behind the panels (the phase current longest in each
 *     bucket), step ticks under them, the heap peak marked with the site
 *     holding most of its bytes; a tooltip per bucket.
 * Chrome JSON: counter events ("C") per bucket for the heap by category,
 * RSS and each GPU, complete events ("X") for phase and step slices (exact
 * for the first MT_VIEW_SLICES of them, else the bands and an instant event
 * per step tick), an instant event at the heap peak.
 */
#ifndef MT_TIMELINE_H
#define MT_TIMELINE_H

/* `memtrace timeline FILE [-o OUT.svg|OUT.html] [--chrome OUT.json]
 * [--title T] [--width PX] [--no-symbols]`; argv[0] is "timeline". Exit
 * status 0, 1 (error), 2 (usage). */
int mt_timeline_main(int argc, char **argv);

#endif
