/* timeline: the SVG/HTML picture and the Chrome JSON of heap-view.h's grid
 * (see timeline.h). Coordinates: x from time (bucket i spans
 * [i << shift, (i + 1) << shift) ns, drawn up to the trace's end), y per
 * panel from 0 to the panel's largest value rounded up.
 */
#include "timeline.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heap-view.h"
#include "out-file.h"
#include "report.h"

#define LEFT 78
#define RIGHT 190
#define HOST_H 260
#define GPU_H 140
#define GAP 34
#define TOP 44

struct tl {
    struct mt_view *v;
    unsigned width;
    double xscale;        /* px per ns */
    uint64_t span_ns;
    const char *peak_site; /* innermost frame of the top site at the peak */
    uint64_t peak_site_bytes;
};

static double xpos(const struct tl *t, uint64_t ns)
{
    return LEFT + (double)ns * t->xscale;
}

static void human_time(uint64_t ns, char *buf, size_t n)
{
    if (ns >= 10000000000ull)
        snprintf(buf, n, "%.0f s", (double)ns / 1e9);
    else if (ns >= 1000000000ull)
        snprintf(buf, n, "%.2f s", (double)ns / 1e9);
    else if (ns >= 1000000)
        snprintf(buf, n, "%.1f ms", (double)ns / 1e6);
    else
        snprintf(buf, n, "%.1f us", (double)ns / 1e3);
}

/* A round axis maximum at or above v. */
static uint64_t nice_max(uint64_t v)
{
    if (v == 0)
        return 1;
    double p = pow(10, floor(log10((double)v)));
    for (double m = 1; m <= 10; m += m < 2 ? 1 : m < 5 ? 3 : 5) /* 1 2 5 10 */
        if (m * p >= (double)v)
            return (uint64_t)(m * p);
    return (uint64_t)(10 * p);
}

/* The site with most bytes at the peak and its innermost frame. */
static int find_peak_site(struct tl *t)
{
    struct mt_view *v = t->v;
    uint64_t best = 0, best_stack = 0;
    /* sites are per (stack, phase): sum a stack's entries, sorted by stack */
    struct mt_view_site *s = malloc((v->nsite ? v->nsite : 1) * sizeof *s);
    if (!s)
        return -ENOMEM;
    memcpy(s, v->site, v->nsite * sizeof *s);
    size_t n = v->nsite; /* shell sort by stack id */
    for (size_t gap = n / 2; gap > 0; gap /= 2)
        for (size_t i = gap; i < n; i++)
            for (size_t j = i; j >= gap && s[j - gap].stack_id > s[j].stack_id; j -= gap) {
                struct mt_view_site x = s[j];
                s[j] = s[j - gap];
                s[j - gap] = x;
            }
    for (size_t i = 0; i < n;) {
        uint64_t sum = 0, id = s[i].stack_id;
        for (; i < n && s[i].stack_id == id; i++)
            sum += s[i].peak_bytes;
        if (sum > best) {
            best = sum;
            best_stack = id;
        }
    }
    free(s);
    if (!best)
        return 0;
    struct mt_view_frame fr[MT_MAX_FRAMES * 4];
    int k = mt_view_frames(v, best_stack, fr, MT_MAX_FRAMES * 4);
    if (k < 0)
        return k;
    t->peak_site = k ? fr[k - 1].name : NULL;
    t->peak_site_bytes = best;
    return 0;
}

static void axis(FILE *f, const struct tl *t, unsigned y0, unsigned h, uint64_t max, const char *label)
{
    double x1 = t->width - RIGHT;
    fprintf(f, "<rect x=\"%d\" y=\"%u\" width=\"%.1f\" height=\"%u\" fill=\"none\" stroke=\"#888\"/>\n", LEFT, y0,
            x1 - LEFT, h);
    for (int k = 0; k <= 4; k++) {
        double y = y0 + h - (double)h * k / 4;
        char b[32];
        mt_human_size((uint64_t)((double)max * k / 4), b, sizeof b);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" class=\"ax\">%s</text>\n",
                LEFT, y, x1, y, LEFT - 4, y + 4, b);
    }
    fprintf(f, "<text x=\"%d\" y=\"%u\" class=\"pt\">", LEFT, y0 - 6);
    mt_xml_escape(f, label);
    fputs("</text>\n", f);
}

/* A filled area between two per-bucket series (lo may be NULL: zero). */
static void area(FILE *f, const struct tl *t, const uint64_t *hi, const uint64_t *lo, size_t stride, unsigned y0,
                 unsigned h, uint64_t max, uint32_t rgb, const char *name)
{
    const struct mt_view *v = t->v;
    fprintf(f, "<path fill=\"#%06x\" fill-opacity=\"0.85\" stroke=\"none\" d=\"", rgb);
    double ys = (double)h / (double)max;
    for (unsigned i = 0; i < v->nbuckets; i++) {
        uint64_t a = mt_view_bucket_ns(v, i), b = mt_view_bucket_ns(v, i + 1);
        if (b > t->span_ns)
            b = t->span_ns;
        double y = y0 + h - (double)(hi[i * stride] + (lo ? lo[i * stride] : 0)) * ys;
        fprintf(f, "%s%.1f %.1fH%.1f", i ? "L" : "M", xpos(t, a), y, xpos(t, b));
    }
    for (unsigned i = v->nbuckets; i-- > 0;) {
        uint64_t a = mt_view_bucket_ns(v, i), b = mt_view_bucket_ns(v, i + 1);
        if (b > t->span_ns)
            b = t->span_ns;
        double y = y0 + h - (double)(lo ? lo[i * stride] : 0) * ys;
        fprintf(f, "L%.1f %.1fH%.1f", xpos(t, b), y, xpos(t, a));
    }
    fputs("Z\"><title>", f);
    mt_xml_escape(f, name);
    fputs("</title></path>\n", f);
}

static void line(FILE *f, const struct tl *t, unsigned s, unsigned y0, unsigned h, uint64_t max, const char *color,
                 const char *dash, const char *name)
{
    const struct mt_view *v = t->v;
    fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"%s%s%s d=\"", color, dash ? " stroke-dasharray=\"" : "",
            dash ? dash : "", dash ? "\"" : "");
    double ys = (double)h / (double)max;
    for (unsigned i = 0; i < v->nbuckets; i++) {
        uint64_t a = mt_view_bucket_ns(v, i), b = mt_view_bucket_ns(v, i + 1);
        if (b > t->span_ns)
            b = t->span_ns;
        fprintf(f, "%s%.1f %.1fH%.1f", i ? "L" : "M", xpos(t, a), y0 + h - (double)v->b[i].v[s] * ys, xpos(t, b));
    }
    fputs("\"><title>", f);
    mt_xml_escape(f, name);
    fputs("</title></path>\n", f);
}

static void legend_item(FILE *f, double x, double *y, uint32_t rgb, const char *name, const char *extra)
{
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"#%06x\"/><text x=\"%.1f\" y=\"%.1f\">", x,
            *y - 9, rgb, x + 14, *y);
    mt_xml_escape(f, name);
    if (extra)
        mt_xml_escape(f, extra);
    fputs("</text>\n", f);
    *y += 15;
}

static void write_svg(FILE *f, struct tl *t, const char *title, bool xml_decl)
{
    struct mt_view *v = t->v;
    unsigned ngpu = v->ngpu;
    unsigned height = TOP + HOST_H + GAP + ngpu * (GPU_H + GAP) + 40;
    unsigned W = t->width;
    double x1 = W - RIGHT;
    t->span_ns = v->end_ns ? v->end_ns : 1;
    t->xscale = (x1 - LEFT) / (double)t->span_ns;
    if (xml_decl)
        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n", f);
    fprintf(f, "<svg version=\"1.1\" width=\"%u\" height=\"%u\" viewBox=\"0 0 %u %u\" xmlns=\"http://www.w3.org/2000/svg\">\n",
            W, height, W, height);
    fputs("<style>text{font-family:sans-serif;font-size:11px;fill:#222}.ax{font-size:10px;fill:#555}"
          ".pt{font-size:12px;font-weight:bold}#title{font-size:16px;font-weight:bold}"
          ".hv{fill:#000;fill-opacity:0}.hv:hover{fill-opacity:0.08}</style>\n", f);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%u\" height=\"%u\" fill=\"#fbfbf7\"/>\n", W, height);
    fprintf(f, "<text id=\"title\" x=\"%u\" y=\"22\" text-anchor=\"middle\">", W / 2);
    mt_xml_escape(f, title);
    fputs("</text>\n", f);
    unsigned bottom = height - 40;
    /* phase bands */
    for (unsigned i = 0; i < v->nbuckets;) {
        unsigned j = i;
        while (j < v->nbuckets && v->band[j] == v->band[i])
            j++;
        if (v->band[i]) {
            uint64_t a = mt_view_bucket_ns(v, i), b = mt_view_bucket_ns(v, j);
            if (b > t->span_ns)
                b = t->span_ns;
            fprintf(f, "<rect x=\"%.1f\" y=\"%u\" width=\"%.2f\" height=\"%u\" fill=\"#%06x\" fill-opacity=\"0.16\">"
                       "<title>", xpos(t, a), TOP, xpos(t, b) - xpos(t, a), bottom - TOP, mt_view_phase_rgb(v->band[i]));
            mt_xml_escape(f, v->phases.phase[v->band[i]].name);
            fputs("</title></rect>\n", f);
        }
        i = j;
    }
    /* host panel */
    uint64_t hmax = 0;
    for (unsigned i = 0; i < v->nbuckets; i++) {
        if (v->b[i].v[MT_SER_HEAP] > hmax)
            hmax = v->b[i].v[MT_SER_HEAP];
        if (v->b[i].v[MT_SER_RSS] > hmax)
            hmax = v->b[i].v[MT_SER_RSS];
    }
    hmax = nice_max(hmax);
    unsigned y0 = TOP + 14;
    axis(f, t, y0, HOST_H, hmax, "Host heap by category (and RSS)");
    uint64_t *below = calloc(MT_VIEW_BUCKETS, sizeof *below);
    uint64_t *sum = calloc(MT_VIEW_BUCKETS, sizeof *sum);
    double ly = y0 + 10;
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"pt\">Categories</text>\n", x1 + 10, ly);
    ly += 16;
    for (size_t c = 0; below && sum && c < v->phases.ncat; c++) {
        const uint64_t *cl = v->cat_live + c * MT_VIEW_BUCKETS;
        bool any = false;
        for (unsigned i = 0; i < v->nbuckets; i++)
            any |= cl[i] != 0;
        if (!any)
            continue;
        area(f, t, cl, below, 1, y0, HOST_H, hmax, mt_view_category_rgb((unsigned)c), v->phases.cat_name[c]);
        for (unsigned i = 0; i < v->nbuckets; i++)
            below[i] += cl[i];
        legend_item(f, x1 + 10, &ly, mt_view_category_rgb((unsigned)c), v->phases.cat_name[c], NULL);
    }
    line(f, t, MT_SER_HEAP, y0, HOST_H, hmax, "#222", NULL, "heap (most live in each interval)");
    legend_item(f, x1 + 10, &ly, 0x222222, "heap total", NULL);
    bool has_rss = false;
    for (unsigned i = 0; i < v->nbuckets; i++)
        has_rss |= v->b[i].v[MT_SER_RSS] != 0;
    if (has_rss) {
        line(f, t, MT_SER_RSS, y0, HOST_H, hmax, "#b03060", "5,3", "RSS");
        legend_item(f, x1 + 10, &ly, 0xb03060, "RSS (dashed)", NULL);
    }
    double pl = ly + 8;
    /* per-bucket tooltips */
    for (unsigned i = 0; i < v->nbuckets; i++) {
        uint64_t a = mt_view_bucket_ns(v, i), b = mt_view_bucket_ns(v, i + 1);
        if (b > t->span_ns)
            b = t->span_ns;
        if (xpos(t, b) - xpos(t, a) < 0.5 && v->nbuckets > 256 && i % 4)
            continue;
        char ta[32], hb[32];
        human_time(a, ta, sizeof ta);
        mt_human_size(v->b[i].v[MT_SER_HEAP], hb, sizeof hb);
        fprintf(f, "<rect class=\"hv\" x=\"%.1f\" y=\"%u\" width=\"%.2f\" height=\"%u\"><title>%s: heap %s",
                xpos(t, a), y0, xpos(t, b) - xpos(t, a), HOST_H, ta, hb);
        for (size_t c = 0; c < v->phases.ncat; c++) {
            uint64_t x = v->cat_live[c * MT_VIEW_BUCKETS + i];
            if (!x)
                continue;
            mt_human_size(x, hb, sizeof hb);
            fputs("&#10;", f);
            mt_xml_escape(f, v->phases.cat_name[c]);
            fprintf(f, ": %s", hb);
        }
        if (v->band[i])
            fputs("&#10;phase: ", f), mt_xml_escape(f, v->phases.phase[v->band[i]].name);
        fputs("</title></rect>\n", f);
    }
    /* the peak */
    if (v->peak_bytes) {
        double px = xpos(t, v->peak_time_ns);
        char pb[32], pt[32], sb[32];
        mt_human_size(v->peak_bytes, pb, sizeof pb);
        human_time(v->peak_time_ns, pt, sizeof pt);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%u\" x2=\"%.1f\" y2=\"%u\" stroke=\"#d00\" stroke-width=\"1.2\"/>\n", px, y0,
                px, y0 + HOST_H);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d00\"/>\n", px,
                y0 + HOST_H - (double)v->peak_bytes * HOST_H / (double)hmax);
        bool right = px > LEFT + (x1 - LEFT) * 0.6;
        fprintf(f, "<text id=\"peak\" x=\"%.1f\" y=\"%u\" text-anchor=\"%s\" fill=\"#b00\" style=\"fill:#b00\">peak %s at %s",
                right ? px - 5 : px + 5, y0 + 14, right ? "end" : "start", pb, pt);
        if (t->peak_site) {
            mt_human_size(t->peak_site_bytes, sb, sizeof sb);
            fputs(": ", f);
            mt_xml_escape(f, t->peak_site);
            fprintf(f, " (%s)", sb);
        }
        fputs("</text>\n", f);
    }
    /* GPU panels */
    unsigned gy = y0 + HOST_H + GAP;
    for (unsigned g = 0; g < ngpu; g++, gy += GPU_H + GAP) {
        unsigned sr = MT_SER_GPU0 + g * MT_SER_PER_GPU;
        unsigned sa = v->gpu[g].has_tensor ? sr + 1 : sr + 2;
        bool has_alloc = v->gpu[g].has_tensor || v->gpu[g].has_async;
        uint64_t gmax = 0;
        for (unsigned i = 0; i < v->nbuckets; i++) {
            if (v->b[i].v[sr] > gmax)
                gmax = v->b[i].v[sr];
            if (has_alloc && v->b[i].v[sa] > gmax)
                gmax = v->b[i].v[sa];
        }
        gmax = nice_max(gmax);
        char label[64];
        snprintf(label, sizeof label, "GPU %u: reserved and allocated", v->gpu[g].device);
        axis(f, t, gy, GPU_H, gmax, label);
        if (v->gpu[g].has_reserved)
            line(f, t, sr, gy, GPU_H, gmax, "#3182bd", NULL, "reserved");
        if (has_alloc)
            line(f, t, sa, gy, GPU_H, gmax, "#e6550d", NULL, "allocated");
        double gl = gy + 10;
        legend_item(f, x1 + 10, &gl, 0x3182bd, "reserved", NULL);
        legend_item(f, x1 + 10, &gl, 0xe6550d, "allocated", v->gpu[g].has_tensor ? " (tensors)" : " (async)");
    }
    /* time axis and step ticks */
    for (int k = 0; k <= 5; k++) {
        uint64_t ns = (uint64_t)((double)t->span_ns * k / 5);
        char b[32];
        human_time(ns, b, sizeof b);
        fprintf(f, "<text x=\"%.1f\" y=\"%u\" text-anchor=\"middle\" class=\"ax\">%s</text>\n", xpos(t, ns), bottom + 26, b);
    }
    double last_label = -1e9;
    for (unsigned i = 0; i < v->nbuckets; i++) {
        if (!v->step_at[i])
            continue;
        double x = xpos(t, mt_view_bucket_ns(v, i));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%u\" x2=\"%.1f\" y2=\"%u\" stroke=\"#444\"/>", x, bottom, x, bottom + 6);
        if (x - last_label > 40) {
            fprintf(f, "<text x=\"%.1f\" y=\"%u\" class=\"ax\">step %llu</text>", x + 2, bottom + 14,
                    (unsigned long long)(v->step_at[i] - 1));
            last_label = x;
        }
        fputc('\n', f);
    }
    /* phase legend, under the categories' */
    ly = pl;
    bool any_band = false;
    for (unsigned i = 0; i < v->nbuckets; i++)
        any_band |= v->band[i] != 0;
    if (any_band) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"pt\">Phases</text>\n", x1 + 10, ly);
        ly += 16;
        for (size_t p = 1; p < v->phases.nphase && p < 64; p++)
            legend_item(f, x1 + 10, &ly, mt_view_phase_rgb((unsigned)p), v->phases.phase[p].name, NULL);
    }
    free(below);
    free(sum);
    fputs("</svg>\n", f);
}

static void write_html(FILE *f, struct tl *t, const char *title)
{
    fputs("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><meta charset=\"utf-8\"/><title>", f);
    mt_xml_escape(f, title);
    fputs("</title><style>body{margin:16px;background:#fff}</style></head><body>\n", f);
    write_svg(f, t, title, false);
    fputs("</body></html>\n", f);
}

/* ---- Chrome trace ---------------------------------------------------------- */

static void ts(FILE *f, uint64_t ns)
{
    fprintf(f, "%llu.%03llu", (unsigned long long)(ns / 1000), (unsigned long long)(ns % 1000));
}

static void write_chrome(FILE *f, struct tl *t)
{
    struct mt_view *v = t->v;
    unsigned pid = v->pid;
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    fprintf(f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%u,\"tid\":0,\"args\":{\"name\":\"", pid);
    mt_json_escape(f, v->comm);
    fprintf(f, "\"}},\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%u,\"tid\":1,\"args\":{\"name\":\"phases\"}},\n", pid);
    fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%u,\"tid\":2,\"args\":{\"name\":\"steps\"}}", pid);
    bool has_rss = false;
    for (unsigned i = 0; i < v->nbuckets; i++)
        has_rss |= v->b[i].v[MT_SER_RSS] != 0;
    for (unsigned i = 0; i < v->nbuckets; i++) {
        uint64_t at = mt_view_bucket_ns(v, i);
        fprintf(f, ",\n{\"name\":\"heap\",\"ph\":\"C\",\"pid\":%u,\"tid\":0,\"ts\":", pid);
        ts(f, at);
        fputs(",\"args\":{", f);
        bool first = true;
        for (size_t c = 0; c < v->phases.ncat; c++) {
            bool any = false;
            for (unsigned k = 0; k < v->nbuckets && !any; k++)
                any = v->cat_live[c * MT_VIEW_BUCKETS + k] != 0;
            if (!any)
                continue;
            fprintf(f, "%s\"", first ? "" : ",");
            mt_json_escape(f, v->phases.cat_name[c]);
            fprintf(f, "\":%llu", (unsigned long long)v->cat_live[c * MT_VIEW_BUCKETS + i]);
            first = false;
        }
        if (first)
            fprintf(f, "\"bytes\":%llu", (unsigned long long)v->b[i].v[MT_SER_HEAP]);
        fputs("}}", f);
        if (has_rss) {
            fprintf(f, ",\n{\"name\":\"rss\",\"ph\":\"C\",\"pid\":%u,\"tid\":0,\"ts\":", pid);
            ts(f, at);
            fprintf(f, ",\"args\":{\"bytes\":%llu}}", (unsigned long long)v->b[i].v[MT_SER_RSS]);
        }
        for (unsigned g = 0; g < v->ngpu; g++) {
            unsigned sr = MT_SER_GPU0 + g * MT_SER_PER_GPU;
            unsigned sa = v->gpu[g].has_tensor ? sr + 1 : sr + 2;
            fprintf(f, ",\n{\"name\":\"gpu%u\",\"ph\":\"C\",\"pid\":%u,\"tid\":0,\"ts\":", v->gpu[g].device, pid);
            ts(f, at);
            fprintf(f, ",\"args\":{\"reserved\":%llu,\"allocated\":%llu}}", (unsigned long long)v->b[i].v[sr],
                    (unsigned long long)v->b[i].v[sa]);
        }
    }
    if (!v->slices_cut) {
        for (size_t i = 0; i < v->nslice; i++) {
            const struct mt_view_slice *s = &v->slice[i];
            fprintf(f, ",\n{\"name\":\"");
            if (s->step)
                fprintf(f, "step %llu", (unsigned long long)s->value);
            else
                mt_json_escape(f, v->phases.phase[s->value].name);
            fprintf(f, "\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%u,\"tid\":%d,\"ts\":", s->step ? "step" : "phase", pid,
                    s->step ? 2 : 1);
            ts(f, s->start_ns);
            fputs(",\"dur\":", f);
            ts(f, s->end_ns - s->start_ns);
            fputc('}', f);
        }
    } else {
        for (unsigned i = 0; i < v->nbuckets;) {
            unsigned j = i;
            while (j < v->nbuckets && v->band[j] == v->band[i])
                j++;
            if (v->band[i]) {
                fprintf(f, ",\n{\"name\":\"");
                mt_json_escape(f, v->phases.phase[v->band[i]].name);
                fprintf(f, "\",\"cat\":\"phase\",\"ph\":\"X\",\"pid\":%u,\"tid\":1,\"ts\":", pid);
                ts(f, mt_view_bucket_ns(v, i));
                fputs(",\"dur\":", f);
                ts(f, mt_view_bucket_ns(v, j) - mt_view_bucket_ns(v, i));
                fputc('}', f);
            }
            i = j;
        }
        for (unsigned i = 0; i < v->nbuckets; i++)
            if (v->step_at[i]) {
                fprintf(f, ",\n{\"name\":\"step %llu\",\"cat\":\"step\",\"ph\":\"i\",\"s\":\"t\",\"pid\":%u,\"tid\":2,\"ts\":",
                        (unsigned long long)(v->step_at[i] - 1), pid);
                ts(f, mt_view_bucket_ns(v, i));
                fputc('}', f);
            }
    }
    if (v->peak_bytes) {
        fprintf(f, ",\n{\"name\":\"heap peak\",\"ph\":\"i\",\"s\":\"p\",\"pid\":%u,\"tid\":0,\"ts\":", pid);
        ts(f, v->peak_time_ns);
        fprintf(f, ",\"args\":{\"bytes\":%llu", (unsigned long long)v->peak_bytes);
        if (t->peak_site) {
            fputs(",\"top_site\":\"", f);
            mt_json_escape(f, t->peak_site);
            fprintf(f, "\",\"top_site_bytes\":%llu", (unsigned long long)t->peak_site_bytes);
        }
        fputs("}}", f);
    }
    fputs("\n]}\n", f);
}

/* ---- the command ----------------------------------------------------------- */

static void tl_usage(FILE *f)
{
    fprintf(f, "Usage: memtrace timeline FILE [-o OUT.svg|OUT.html] [--chrome OUT.json]\n"
               "                         [--title TEXT] [--width PX] [--no-symbols]\n\n"
               "Memory over time: the host heap stacked by category, RSS, per GPU reserved and\n"
               "allocated bytes, phase bands, step ticks and the heap peak with its top site.\n"
               "See docs/FLAMEGRAPH.md.\n\n"
               "  -o, --output OUT  the picture: SVG, or HTML when OUT ends in .html/.htm\n"
               "                    (default: SVG on stdout unless --chrome is given)\n"
               "  --chrome OUT      Chrome trace / Perfetto JSON (counters and phase slices)\n"
               "  --title TEXT      the picture's title\n"
               "  --width PX        the picture's width (default 1200)\n"
               "  --no-symbols      do not symbolize the peak's top site\n");
}

static int tl_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memtrace timeline: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see memtrace timeline --help)\n");
    return 2;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcasecmp(s + a - b, suffix);
}

int mt_timeline_main(int argc, char **argv)
{
    const char *file = NULL, *outp = NULL, *chrome = NULL, *title = NULL;
    bool no_symbols = false;
    unsigned width = 1200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--chrome") ||
                       !strcmp(a, "--title") || !strcmp(a, "--width");
        if (has_val && i + 1 == argc)
            return tl_usage_error("%s needs a value", a);
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tl_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            outp = argv[++i];
        } else if (!strcmp(a, "--chrome")) {
            chrome = argv[++i];
        } else if (!strcmp(a, "--title")) {
            title = argv[++i];
        } else if (!strcmp(a, "--width")) {
            if (!mt_parse_count(argv[++i], &width) || width < 400 || width > 100000)
                return tl_usage_error("bad width '%s' (400 to 100000)", argv[i]);
        } else if (!strcmp(a, "--no-symbols")) {
            no_symbols = true;
        } else if (a[0] == '-' && a[1]) {
            return tl_usage_error("unknown option %s", a);
        } else if (file) {
            return tl_usage_error("one trace at a time (extra argument %s)", a);
        } else {
            file = a;
        }
    }
    if (!file)
        return tl_usage_error("%s", "no trace given");
    if (!outp && !chrome)
        outp = "-";
    struct mt_error err = { "" };
    struct tl t = { .width = width };
    struct mt_out *out = NULL, *cout = NULL;
    struct mt_view_opts vo = { .no_symbols = no_symbols };
    int rc = mt_view_compute(file, &vo, &t.v, &err);
    if (rc < 0) {
        fprintf(stderr, "memtrace timeline: %s\n", err.msg);
        return 1;
    }
    if ((rc = find_peak_site(&t)) < 0) {
        mti_error_set(&err, "out of memory");
        goto fail;
    }
    char tbuf[512];
    if (!title) {
        snprintf(tbuf, sizeof tbuf, "Memory over time: %s", t.v->comm);
        title = tbuf;
    }
    if (outp && (rc = mt_out_open(outp, &out, &err)) < 0)
        goto fail;
    if (chrome && (rc = mt_out_open(chrome, &cout, &err)) < 0)
        goto fail;
    if (out) {
        if (ends_with(outp, ".html") || ends_with(outp, ".htm"))
            write_html(out->f, &t, title);
        else
            write_svg(out->f, &t, title, true);
    }
    if (cout)
        write_chrome(cout->f, &t);
    if (out) {
        rc = mt_out_commit(out, &err);
        out = NULL;
        if (rc < 0)
            goto fail;
    }
    if (cout) {
        rc = mt_out_commit(cout, &err);
        cout = NULL;
        if (rc < 0)
            goto fail;
    }
    mt_view_destroy(t.v);
    return 0;
fail:
    fprintf(stderr, "memtrace timeline: %s\n", err.msg[0] ? err.msg : strerror(-rc));
    mt_out_abort(out);
    mt_out_abort(cout);
    mt_view_destroy(t.v);
    return 1;
}
