/* flamegraph: the frame tree and its two outputs (see flamegraph.h).
 *
 * Nodes live in one array, a node's parent before it; children are found
 * through an open-addressing map keyed by (parent, interned name, inlined),
 * so building costs one probe per frame. The perf samples build a second
 * tree of the same kind, walked beside the first. Memory: a node per
 * distinct frame path (bounded by the call tree), nothing per event.
 */
#include "flamegraph.h"

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
#include "script.h"

#define NONE UINT32_MAX
#define MAX_DRAWN_FRAMES 1024

enum metric { M_PEAK, M_ALLOCATED, M_COUNT, M_LEAKED };
static const char *const metric_names[] = { "peak", "allocated", "count", "leaked" };
static const char *const metric_titles[] = {
    "Heap bytes live at the peak", "Heap bytes allocated", "Heap allocations", "Heap bytes leaked (live at the end)",
};

struct fnode {
    const char *name;
    const char *file;
    unsigned line;
    uint32_t parent, child, next; /* first child, next sibling */
    uint32_t depth;
    uint64_t value, bytes, count;
    uint64_t cpu;
    uint64_t best;                /* value of the dominant phase */
    uint8_t phase;                /* the dominant phase */
    bool inlined;
};

struct cslot {
    const char *name; /* NULL: empty */
    uint32_t parent, node;
    bool inlined;
};

struct tree {
    struct fnode *n;
    size_t len, cap;
    struct cslot *map;
    size_t mask, used;
};

static size_t slot_hash(uint32_t parent, const char *name, bool inl)
{
    uint64_t h = ((uint64_t)(uintptr_t)name * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)parent << 1 | inl);
    h *= 0xff51afd7ed558ccdull;
    return (size_t)(h ^ (h >> 29));
}

static int tree_init(struct tree *t, const char *root)
{
    memset(t, 0, sizeof *t);
    t->cap = 1024;
    t->mask = 4095;
    t->n = calloc(t->cap, sizeof *t->n);
    t->map = calloc(t->mask + 1, sizeof *t->map);
    if (!t->n || !t->map)
        return -ENOMEM;
    t->n[0] = (struct fnode){ .name = root, .parent = NONE, .child = NONE, .next = NONE };
    t->len = 1;
    return 0;
}

static void tree_free(struct tree *t)
{
    free(t->n);
    free(t->map);
}

static uint32_t tree_find(const struct tree *t, uint32_t parent, const char *name, bool inl)
{
    for (size_t j = slot_hash(parent, name, inl) & t->mask;; j = (j + 1) & t->mask) {
        const struct cslot *s = &t->map[j];
        if (!s->name)
            return NONE;
        if (s->name == name && s->parent == parent && s->inlined == inl)
            return s->node;
    }
}

/* The child of parent for (name, inl), made if new; NONE when out of memory. */
static uint32_t tree_child(struct tree *t, uint32_t parent, const char *name, bool inl)
{
    uint32_t c = tree_find(t, parent, name, inl);
    if (c != NONE)
        return c;
    if ((t->used + 1) * 10 > (t->mask + 1) * 7) {
        size_t nm = (t->mask + 1) * 2 - 1;
        struct cslot *m = calloc(nm + 1, sizeof *m);
        if (!m)
            return NONE;
        for (size_t i = 0; i <= t->mask; i++) {
            if (!t->map[i].name)
                continue;
            size_t j = slot_hash(t->map[i].parent, t->map[i].name, t->map[i].inlined) & nm;
            while (m[j].name)
                j = (j + 1) & nm;
            m[j] = t->map[i];
        }
        free(t->map);
        t->map = m;
        t->mask = nm;
    }
    if (t->len == t->cap || t->len >= NONE - 1) {
        if (t->len >= NONE - 1)
            return NONE;
        struct fnode *nn = realloc(t->n, t->cap * 2 * sizeof *nn);
        if (!nn)
            return NONE;
        t->n = nn;
        t->cap *= 2;
    }
    c = (uint32_t)t->len++;
    struct fnode *p = &t->n[parent];
    t->n[c] = (struct fnode){ .name = name, .parent = parent, .child = NONE, .next = p->child,
                              .depth = p->depth + 1, .inlined = inl };
    p->child = c;
    size_t j = slot_hash(parent, name, inl) & t->mask;
    while (t->map[j].name)
        j = (j + 1) & t->mask;
    t->map[j] = (struct cslot){ name, parent, c, inl };
    t->used++;
    return c;
}

/* ---- building -------------------------------------------------------------- */

struct fg {
    struct mt_view *v;
    enum metric metric;
    int phase;             /* -1: all */
    struct tree t;
    uint32_t *leaf;        /* per view site */
    uint64_t *phase_total; /* per phase: value at the root */
    bool have_perf;
    uint64_t perf_samples;
    struct tree perf;
};

static void site_metric(const struct fg *g, const struct mt_view_site *s, uint64_t *value, uint64_t *bytes,
                        uint64_t *count)
{
    *value = *bytes = *count = 0;
    switch (g->metric) {
    case M_PEAK: *value = s->peak_bytes; *bytes = s->peak_bytes; *count = s->peak_count; break;
    case M_ALLOCATED: *value = s->alloc_bytes; *bytes = s->alloc_bytes; *count = s->alloc_count; break;
    case M_COUNT: *value = s->alloc_count; *bytes = s->alloc_bytes; *count = s->alloc_count; break;
    case M_LEAKED: *value = s->leak_bytes; *bytes = s->leak_bytes; *count = s->leak_count; break;
    }
}

static int build(struct fg *g)
{
    struct mt_view *v = g->v;
    static struct mt_view_frame fr[MAX_DRAWN_FRAMES];
    if (!(g->leaf = malloc((v->nsite ? v->nsite : 1) * sizeof *g->leaf)))
        return -ENOMEM;
    if (!(g->phase_total = calloc(64, sizeof *g->phase_total)))
        return -ENOMEM;
    for (size_t i = 0; i < v->nsite; i++) {
        const struct mt_view_site *s = &v->site[i];
        uint64_t value, bytes, count;
        site_metric(g, s, &value, &bytes, &count);
        g->leaf[i] = NONE;
        if (!value || (g->phase >= 0 && s->phase != (unsigned)g->phase))
            continue;
        int n = mt_view_frames(v, s->stack_id, fr, MAX_DRAWN_FRAMES);
        if (n < 0)
            return n;
        uint32_t node = 0;
        g->t.n[0].value += value;
        g->t.n[0].bytes += bytes;
        g->t.n[0].count += count;
        for (int k = 0; k < n; k++) {
            if ((node = tree_child(&g->t, node, fr[k].name, fr[k].inlined)) == NONE)
                return -ENOMEM;
            struct fnode *x = &g->t.n[node];
            x->file = fr[k].file;
            x->line = fr[k].line;
            x->value += value;
            x->bytes += bytes;
            x->count += count;
        }
        g->leaf[i] = node;
    }
    /* the dominant phase of each node */
    uint64_t *tmp = calloc(g->t.len, sizeof *tmp);
    if (!tmp)
        return -ENOMEM;
    for (unsigned p = 0; p < v->phases.nphase && p < 64; p++) {
        bool any = false;
        for (size_t i = 0; i < v->nsite; i++) {
            if (g->leaf[i] == NONE || v->site[i].phase != p)
                continue;
            uint64_t value, bytes, count;
            site_metric(g, &v->site[i], &value, &bytes, &count);
            for (uint32_t x = g->leaf[i]; x != NONE; x = g->t.n[x].parent)
                tmp[x] += value;
            any = true;
        }
        if (!any)
            continue;
        g->phase_total[p] = tmp[0];
        for (size_t x = 0; x < g->t.len; x++) {
            if (tmp[x] > g->t.n[x].best) {
                g->t.n[x].best = tmp[x];
                g->t.n[x].phase = (uint8_t)p;
            }
            tmp[x] = 0;
        }
    }
    free(tmp);
    return 0;
}

/* The C library's program entry (_start, __libc_start_main and what it
 * calls main through): perf often starts its stacks inside it, memtrace's
 * stacks start at _start; both sides leave it out when they are matched. */
static bool entry_glue(const char *name)
{
    return name && (!strncmp(name, "_start", 6) || !strncmp(name, "__libc_start", 12));
}

static int perf_sample(const char *const *frames, unsigned n, void *arg)
{
    struct fg *g = arg;
    uint32_t node = 0;
    g->perf.n[0].value++;
    for (unsigned i = 0; i < n; i++) {
        if (node == 0 && entry_glue(frames[i]))
            continue;
        const char *name = mt_view_intern(g->v, frames[i]);
        if (!name || (node = tree_child(&g->perf, node, name, false)) == NONE)
            return -ENOMEM;
        g->perf.n[node].value++;
    }
    return 0;
}

/* Each memory frame's CPU samples: the perf node at its path of
 * non-inlined names. */
static int annotate(struct fg *g)
{
    uint32_t *pn = malloc(g->t.len * sizeof *pn);
    if (!pn)
        return -ENOMEM;
    pn[0] = 0;
    g->t.n[0].cpu = g->perf.n[0].value;
    for (size_t x = 1; x < g->t.len; x++) {
        struct fnode *m = &g->t.n[x];
        uint32_t pp = pn[m->parent];
        pn[x] = pp == NONE                     ? NONE
                : m->inlined || (pp == 0 && entry_glue(m->name)) ? pp
                                                        : tree_find(&g->perf, pp, m->name, false);
        m->cpu = pn[x] == NONE ? 0 : g->perf.n[pn[x]].value;
    }
    free(pn);
    return 0;
}

/* ---- folded ---------------------------------------------------------------- */

static void folded_name(FILE *f, const struct fnode *x)
{
    for (const char *s = x->name; *s; s++)
        fputc(*s == ';' ? ':' : (*s == '\n' || *s == '\r') ? ' ' : *s, f);
    if (x->inlined)
        fputs("_[i]", f);
}

static void write_folded(FILE *f, const struct fg *g)
{
    const struct tree *t = &g->t;
    uint32_t path[MAX_DRAWN_FRAMES + 1];
    for (size_t x = 1; x < t->len; x++) {
        uint64_t self = t->n[x].value;
        for (uint32_t c = t->n[x].child; c != NONE; c = t->n[c].next)
            self -= t->n[c].value;
        if (!self)
            continue;
        unsigned d = 0;
        for (uint32_t y = (uint32_t)x; y != 0 && d <= MAX_DRAWN_FRAMES; y = t->n[y].parent)
            path[d++] = y;
        while (d--) {
            folded_name(f, &t->n[path[d]]);
            fputc(d ? ';' : ' ', f);
        }
        fprintf(f, "%llu\n", (unsigned long long)self);
    }
}

/* ---- SVG ------------------------------------------------------------------- */

#define FRAME_H 16
#define PAD 10
#define TOP 64
#define MIN_PX 0.5

struct svg {
    FILE *f;
    const struct fg *g;
    double scale;     /* px per value unit */
    unsigned width;
    unsigned maxdepth;
    uint64_t total;
};

static uint32_t shade(uint32_t rgb, const char *name)
{
    /* a little lighter or darker per name, so neighbours stand apart */
    unsigned h = 0;
    for (const char *s = name; *s; s++)
        h = h * 31 + (unsigned char)*s;
    double k = 0.82 + 0.30 * (double)(h % 100) / 100.0;
    unsigned r = (rgb >> 16) & 255, gr = (rgb >> 8) & 255, b = rgb & 255;
    r = (unsigned)fmin(255.0, r * k);
    gr = (unsigned)fmin(255.0, gr * k);
    b = (unsigned)fmin(255.0, b * k);
    return r << 16 | gr << 8 | b;
}

static uint32_t heat(uint64_t cpu, uint64_t total)
{
    if (!cpu || !total)
        return 0xeeeeee;
    double r = sqrt((double)cpu / (double)total);
    return 255u << 16 | (unsigned)(235 - 200 * r) << 8 | (unsigned)(225 - 215 * r);
}

static void value_text(FILE *f, const struct fg *g, const struct fnode *x, uint64_t total)
{
    char b1[32];
    double share = total ? 100.0 * (double)x->value / (double)total : 0;
    mt_human_size(x->bytes, b1, sizeof b1);
    if (g->metric == M_COUNT)
        fprintf(f, "allocations: %llu (%.2f%%)&#10;bytes: %s (%llu)", (unsigned long long)x->count, share, b1,
                (unsigned long long)x->bytes);
    else
        fprintf(f, "bytes: %s (%llu, %.2f%%)&#10;%s: %llu", b1, (unsigned long long)x->bytes, share,
                g->metric == M_ALLOCATED ? "allocations" : "blocks", (unsigned long long)x->count);
}

static void draw_depth(struct svg *s, uint32_t x, unsigned depth)
{
    const struct tree *t = &s->g->t;
    if (t->n[x].value * s->scale < MIN_PX)
        return;
    if (depth > s->maxdepth)
        s->maxdepth = depth;
    for (uint32_t c = t->n[x].child; c != NONE; c = t->n[c].next)
        draw_depth(s, c, depth + 1);
}

static int child_cmp(const void *a, const void *b, void *arg)
{
    const struct tree *t = arg;
    const struct fnode *x = &t->n[*(const uint32_t *)a], *y = &t->n[*(const uint32_t *)b];
    if (x->value != y->value)
        return x->value > y->value ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int draw(struct svg *s, uint32_t xi, uint64_t xval, unsigned depth)
{
    const struct fg *g = s->g;
    const struct tree *t = &g->t;
    const struct fnode *x = &t->n[xi];
    double w = (double)x->value * s->scale;
    if (w < MIN_PX && xi != 0)
        return 0;
    FILE *f = s->f;
    double px = PAD + (double)xval * s->scale;
    unsigned y = TOP + (s->maxdepth - depth) * FRAME_H;
    uint32_t fill = xi == 0 ? 0xd0d0d0 : shade(mt_view_phase_rgb(x->phase), x->name);
    uint32_t hfill = heat(x->cpu, g->perf_samples);
    fprintf(f, "<g class=\"f\" data-x=\"%llu\" data-w=\"%llu\" data-d=\"%u\" data-f=\"#%06x\" data-h=\"#%06x\" data-n=\"",
            (unsigned long long)xval, (unsigned long long)x->value, depth, fill, hfill);
    mt_xml_escape(f, x->name);
    if (x->inlined)
        fputs(" (inlined)", f);
    fputs("\"><title>", f);
    mt_xml_escape(f, x->name);
    if (x->inlined)
        fputs(" (inlined)", f);
    if (x->file)
        fprintf(f, "&#10;"), mt_xml_escape(f, x->file), fprintf(f, ":%u", x->line);
    fputs("&#10;", f);
    value_text(f, g, x, s->total);
    if (x->value && g->v->phases.nphase > 1)
        fprintf(f, "&#10;phase: "), mt_xml_escape(f, g->v->phases.phase[x->phase].name),
            fprintf(f, " (%.0f%% of it)", 100.0 * (double)x->best / (double)x->value);
    if (g->have_perf)
        fprintf(f, "&#10;CPU: %llu samples (%.2f%%)", (unsigned long long)x->cpu,
                g->perf_samples ? 100.0 * (double)x->cpu / (double)g->perf_samples : 0.0);
    fprintf(f, "</title><rect x=\"%.2f\" y=\"%u\" width=\"%.2f\" height=\"%u\" fill=\"#%06x\" rx=\"2\"/>", px, y,
            w, FRAME_H - 1, fill);
    fprintf(f, "<text x=\"%.2f\" y=\"%u\">", px + 3, y + 11);
    size_t fit = w > 6 ? (size_t)((w - 6) / 7.3) : 0;
    size_t len = strlen(x->name) + (x->inlined ? 10 : 0);
    if (fit >= 3) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s%s", x->name, x->inlined ? " (inlined)" : "");
        if (len > fit && fit < sizeof buf) {
            size_t cut = fit - 2;
            while (cut > 0 && ((unsigned char)buf[cut] & 0xC0) == 0x80)
                cut--; /* do not cut a UTF-8 sequence */
            buf[cut] = 0;
            strcat(buf, "..");
        }
        mt_xml_escape(f, buf);
    }
    fputs("</text></g>\n", f);
    size_t nc = 0;
    for (uint32_t c = x->child; c != NONE; c = t->n[c].next)
        nc++;
    if (!nc)
        return 0;
    uint32_t *kids = malloc(nc * sizeof *kids);
    if (!kids)
        return -ENOMEM;
    nc = 0;
    for (uint32_t c = x->child; c != NONE; c = t->n[c].next)
        kids[nc++] = c;
    qsort_r(kids, nc, sizeof *kids, child_cmp, (void *)t);
    uint64_t at = xval;
    int rc = 0;
    for (size_t i = 0; i < nc && rc == 0; i++) {
        rc = draw(s, kids[i], at, depth + 1);
        at += t->n[kids[i]].value;
    }
    free(kids);
    return rc;
}

static const char svg_script[] =
    "var frames,details,matched,cpu=false;\n"
    "function init(evt){details=document.getElementById('details');matched=document.getElementById('matched');\n"
    " frames=Array.prototype.slice.call(document.getElementsByClassName('f'));\n"
    " frames.forEach(function(g){\n"
    "  g.addEventListener('mouseover',function(){details.textContent=g.getElementsByTagName('title')[0].textContent.split('\\n').join('  |  ');});\n"
    "  g.addEventListener('mouseout',function(){details.textContent=' ';});\n"
    "  g.addEventListener('click',function(){zoom(g);});});}\n"
    "function num(g,a){return parseFloat(g.getAttribute(a));}\n"
    "function label(g,w){var t=g.getElementsByTagName('text')[0],n=g.getAttribute('data-n'),m=Math.floor((w-6)/7.3);\n"
    " t.textContent=m<3?'':(n.length<=m?n:n.substring(0,m-2)+'..');}\n"
    "function place(g,x,w){var r=g.getElementsByTagName('rect')[0],t=g.getElementsByTagName('text')[0];\n"
    " r.setAttribute('x',x.toFixed(2));r.setAttribute('width',w.toFixed(2));t.setAttribute('x',(x+3).toFixed(2));label(g,w);g.style.display='';}\n"
    "function zoom(z){var zx=num(z,'data-x'),zw=num(z,'data-w'),zd=num(z,'data-d');if(!(zw>0))return;var s=(W-2*PAD)/zw;\n"
    " frames.forEach(function(g){var x=num(g,'data-x'),w=num(g,'data-w'),d=num(g,'data-d');\n"
    "  if(d<zd){if(x<=zx&&x+w>=zx+zw)place(g,PAD,W-2*PAD);else g.style.display='none';}\n"
    "  else if(x>=zx&&x+w<=zx+zw&&w*s>=0.1)place(g,PAD+(x-zx)*s,w*s);else g.style.display='none';});\n"
    " document.getElementById('unzoom').style.opacity=zd>0?'1':'0.3';}\n"
    "function unzoom(){zoom(frames[0]);}\n"
    "function search(){var re=prompt('Search frames (regular expression)','');if(re===null)return;resetsearch();if(!re)return;\n"
    " var rx;try{rx=new RegExp(re);}catch(e){alert(e);return;}\n"
    " var m=[],tot=0,end=-1;frames.forEach(function(g){if(rx.test(g.getAttribute('data-n'))){\n"
    "  g.getElementsByTagName('rect')[0].setAttribute('fill','#e600e6');m.push(g);}});\n"
    " m.sort(function(a,b){return num(a,'data-x')-num(b,'data-x')||num(a,'data-d')-num(b,'data-d');});\n"
    " m.forEach(function(g){var x=num(g,'data-x'),w=num(g,'data-w');if(x>=end){tot+=w;end=x+w;}});\n"
    " matched.textContent='Matched: '+(TOTAL>0?(100*tot/TOTAL).toFixed(2):'0')+'% ('+m.length+' frames)';}\n"
    "function resetsearch(){matched.textContent='';recolor();}\n"
    "function recolor(){frames.forEach(function(g){g.getElementsByTagName('rect')[0].setAttribute('fill',\n"
    " g.getAttribute(cpu?'data-h':'data-f'));});}\n"
    "function togglecpu(){cpu=!cpu;document.getElementById('cpumode').textContent=cpu?'[Colour: CPU samples]':'[Colour: phase]';recolor();}\n";

static int write_svg(FILE *f, struct fg *g, const char *title, unsigned width)
{
    struct mt_view *v = g->v;
    struct svg s = { .f = f, .g = g, .width = width, .total = g->t.n[0].value };
    s.scale = (double)(width - 2 * PAD) / (double)(s.total ? s.total : 1);
    draw_depth(&s, 0, 0);
    unsigned height = TOP + (s.maxdepth + 1) * FRAME_H + 34;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n"
               "<svg version=\"1.1\" width=\"%u\" height=\"%u\" viewBox=\"0 0 %u %u\" onload=\"init(evt)\" "
               "xmlns=\"http://www.w3.org/2000/svg\">\n",
            width, height, width, height);
    fprintf(f, "<style>text{font-family:monospace;font-size:12px;fill:#000}g.f:hover rect{stroke:#000;stroke-width:0.6}"
               "g.f{cursor:pointer}#title{font-size:16px;font-weight:bold}.btn{cursor:pointer;fill:#2040a0}</style>\n");
    fprintf(f, "<script type=\"text/ecmascript\"><![CDATA[\nvar W=%u,PAD=%u,TOTAL=%llu;\n%s]]></script>\n", width, PAD,
            (unsigned long long)s.total, svg_script);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%u\" height=\"%u\" fill=\"#fbfbf7\"/>\n", width, height);
    fprintf(f, "<text id=\"title\" x=\"%u\" y=\"22\" text-anchor=\"middle\">", width / 2);
    mt_xml_escape(f, title);
    fputs("</text>\n", f);
    char tot[32];
    mt_human_size(g->t.n[0].bytes, tot, sizeof tot);
    fprintf(f, "<text x=\"%u\" y=\"40\">%s: %s", PAD, metric_names[g->metric],
            g->metric == M_COUNT ? "" : tot);
    if (g->metric == M_COUNT)
        fprintf(f, "%llu allocations", (unsigned long long)g->t.n[0].count);
    if (g->phase >= 0)
        fputs(" (phase ", f), mt_xml_escape(f, v->phases.phase[g->phase].name), fputc(')', f);
    if (g->have_perf)
        fprintf(f, ", %llu CPU samples", (unsigned long long)g->perf_samples);
    fputs("</text>\n", f);
    fprintf(f, "<text id=\"unzoom\" class=\"btn\" x=\"%u\" y=\"40\" text-anchor=\"end\" style=\"opacity:0.3\" "
               "onclick=\"unzoom()\">[Reset zoom]</text>\n",
            width - PAD - 90);
    fprintf(f, "<text id=\"search\" class=\"btn\" x=\"%u\" y=\"40\" text-anchor=\"end\" onclick=\"search()\">[Search]</text>\n",
            width - PAD);
    fprintf(f, "<text id=\"matched\" x=\"%u\" y=\"%u\" text-anchor=\"end\"></text>\n", width - PAD, height - 8);
    if (g->have_perf)
        fprintf(f, "<text id=\"cpumode\" class=\"btn\" x=\"%u\" y=\"22\" text-anchor=\"end\" onclick=\"togglecpu()\">"
                   "[Colour: phase]</text>\n",
                width - PAD);
    /* legend: the phases holding any of the value */
    double lx = PAD;
    for (unsigned p = 0; p < v->phases.nphase && p < 64; p++) {
        if (!g->phase_total[p])
            continue;
        fprintf(f, "<g class=\"legend\"><rect x=\"%.1f\" y=\"47\" width=\"10\" height=\"10\" fill=\"#%06x\"/>"
                   "<text x=\"%.1f\" y=\"56\">",
                lx, mt_view_phase_rgb(p), lx + 14);
        mt_xml_escape(f, v->phases.phase[p].name);
        double share = s.total ? 100.0 * (double)g->phase_total[p] / (double)s.total : 0;
        fprintf(f, " %.1f%%</text></g>\n", share);
        lx += 14 + 7.3 * (double)(strlen(v->phases.phase[p].name) + 7) + 12;
        if (lx > width - 200)
            break;
    }
    fprintf(f, "<text id=\"details\" x=\"%u\" y=\"%u\"> </text>\n", PAD, height - 8);
    fputs("<g id=\"frames\">\n", f);
    int rc = draw(&s, 0, 0, 0);
    fputs("</g>\n</svg>\n", f);
    return rc;
}

/* ---- the command ----------------------------------------------------------- */

static void fg_usage(FILE *f)
{
    fprintf(f, "Usage: memtrace flamegraph FILE [-o OUT] [--metric M] [--phase NAME] [--folded]\n"
               "                           [--perf PERF_SCRIPT_OUTPUT] [--title TEXT] [--width PX]\n\n"
               "Where the heap's bytes come from: an interactive SVG flamegraph (hover for\n"
               "bytes, count and share, click to zoom, Search), frames coloured by the phase\n"
               "their bytes were allocated in. See docs/FLAMEGRAPH.md.\n\n"
               "  -o, --output OUT  write to OUT (default: stdout)\n"
               "  --metric M        peak (bytes live at the heap peak, default), allocated,\n"
               "                    count (allocations) or leaked (live at the end)\n"
               "  --phase NAME      only allocations made in phase NAME\n"
               "  --folded          folded stacks (frame;frame;frame VALUE) instead of SVG\n"
               "  --perf FILE       `perf script` output of a `perf record -g` of the same run:\n"
               "                    CPU samples per frame in tooltips and a CPU colouring\n"
               "  --title TEXT      the picture's title\n"
               "  --width PX        the picture's width (default 1200)\n"
               "  --no-symbols      addresses only\n");
}

static int fg_fail(const char *msg)
{
    fprintf(stderr, "memtrace flamegraph: %s\n", msg);
    return 1;
}

static int fg_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memtrace flamegraph: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see memtrace flamegraph --help)\n");
    return 2;
}

int mt_flamegraph_main(int argc, char **argv)
{
    const char *file = NULL, *outp = "-", *phase = NULL, *perf = NULL, *title = NULL;
    enum metric metric = M_PEAK;
    bool folded = false, no_symbols = false;
    unsigned width = 1200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--metric") ||
                       !strcmp(a, "--phase") || !strcmp(a, "--perf") || !strcmp(a, "--title") ||
                       !strcmp(a, "--width");
        if (has_val && i + 1 == argc)
            return fg_usage_error("%s needs a value", a);
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fg_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            outp = argv[++i];
        } else if (!strcmp(a, "--metric")) {
            const char *m = argv[++i];
            unsigned k = 0;
            while (k < 4 && strcmp(m, metric_names[k]))
                k++;
            if (k == 4)
                return fg_usage_error("unknown metric '%s' (peak, allocated, count or leaked)", m);
            metric = (enum metric)k;
        } else if (!strcmp(a, "--phase")) {
            phase = argv[++i];
        } else if (!strcmp(a, "--perf")) {
            perf = argv[++i];
        } else if (!strcmp(a, "--title")) {
            title = argv[++i];
        } else if (!strcmp(a, "--width")) {
            if (!mt_parse_count(argv[++i], &width) || width < 200 || width > 100000)
                return fg_usage_error("bad width '%s' (200 to 100000)", argv[i]);
        } else if (!strcmp(a, "--folded")) {
            folded = true;
        } else if (!strcmp(a, "--no-symbols")) {
            no_symbols = true;
        } else if (a[0] == '-' && a[1]) {
            return fg_usage_error("unknown option %s", a);
        } else if (file) {
            return fg_usage_error("one trace at a time (extra argument %s)", a);
        } else {
            file = a;
        }
    }
    if (!file)
        return fg_usage_error("%s", "no trace given");

    struct mt_error err = { "" };
    struct fg g = { .metric = metric, .phase = -1 };
    struct mt_out *out = NULL;
    int rc;
    struct mt_view_opts vo = { .no_symbols = no_symbols };
    if ((rc = mt_view_compute(file, &vo, &g.v, &err)) < 0)
        return fg_fail(err.msg);
    if (phase) {
        for (size_t p = 0; p < g.v->phases.nphase; p++)
            if (!strcmp(g.v->phases.phase[p].name, phase))
                g.phase = (int)p;
        if (g.phase < 0) {
            char msg[512];
            int n = snprintf(msg, sizeof msg, "unknown phase '%s' (the trace has:", phase);
            for (size_t p = 0; p < g.v->phases.nphase && n > 0 && (size_t)n < sizeof msg; p++)
                n += snprintf(msg + n, sizeof msg - (size_t)n, " %s", g.v->phases.phase[p].name);
            if (n > 0 && (size_t)n < sizeof msg - 1)
                strcat(msg, ")");
            mt_view_destroy(g.v);
            return fg_fail(msg);
        }
    }
    if ((rc = tree_init(&g.t, mt_view_intern(g.v, "all"))) < 0 || (rc = build(&g)) < 0) {
        mti_error_set(&err, "out of memory");
        goto fail;
    }
    if (perf) {
        if ((rc = tree_init(&g.perf, mt_view_intern(g.v, "all"))) < 0) {
            mti_error_set(&err, "out of memory");
            goto fail;
        }
        if ((rc = mt_perf_parse(perf, perf_sample, &g, &g.perf_samples, &err)) < 0)
            goto fail;
        g.have_perf = true;
        if ((rc = annotate(&g)) < 0) {
            mti_error_set(&err, "out of memory");
            goto fail;
        }
    }
    if ((rc = mt_out_open(outp, &out, &err)) < 0)
        goto fail;
    if (folded) {
        write_folded(out->f, &g);
    } else {
        char tbuf[512];
        if (!title) {
            snprintf(tbuf, sizeof tbuf, "%s: %s", metric_titles[metric], g.v->comm);
            title = tbuf;
        }
        if ((rc = write_svg(out->f, &g, title, width)) < 0) {
            mti_error_set(&err, "out of memory");
            goto fail;
        }
    }
    rc = mt_out_commit(out, &err);
    out = NULL;
    if (rc < 0)
        goto fail;
    rc = 0;
    goto done;
fail:
    fg_fail(err.msg[0] ? err.msg : strerror(-rc));
    mt_out_abort(out);
done:
    tree_free(&g.t);
    tree_free(&g.perf);
    free(g.leaf);
    free(g.phase_total);
    mt_view_destroy(g.v);
    return rc < 0 ? 1 : 0;
}
