/* range-set: disjoint [start, end) ranges in a treap (randomised BST keyed by
 * start, heap-ordered by a random priority), built from split and merge.
 *
 * Invariants: ranges are non-empty and pairwise disjoint, so ordering by
 * start also orders by end; total == sum of lengths; count == number of
 * nodes in the tree. Nodes live in one growable array and are addressed by
 * 32-bit index (0 = none); freed nodes go on a free list through `left`.
 * Recursion depth is the tree height, O(log n) expected. Not thread-safe.
 */
#include "range-set.h"

#include <errno.h>
#include <stdlib.h>

struct mti_rs_node {
    uint64_t start, end;
    uint32_t left, right;
    uint32_t prio;
};

struct mt_range_set {
    struct mti_rs_node *n; /* n[0] unused: index 0 means "no node" */
    uint32_t cap;          /* allocated nodes, n[0] included */
    uint32_t used;         /* high-water mark of indices handed out */
    uint32_t free_head;    /* free list through .left */
    uint32_t root;
    size_t count;
    uint64_t total;
    uint64_t rng;
};

int mt_range_set_new(struct mt_range_set **out)
{
    struct mt_range_set *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->used = 1;
    s->rng = 0x2545F4914F6CDD1Dull;
    *out = s;
    return 0;
}

void mt_range_set_free(struct mt_range_set *s)
{
    if (!s)
        return;
    free(s->n);
    free(s);
}

/* Makes sure `k` more nodes can be allocated without failing. */
static int rs_reserve(struct mt_range_set *s, uint32_t k)
{
    uint32_t avail = s->cap > s->used ? s->cap - s->used : 0;
    for (uint32_t f = s->free_head; f && avail < k; f = s->n[f].left)
        avail++;
    if (avail >= k)
        return 0;
    uint64_t want = (uint64_t)s->cap * 2;
    if (want < 64)
        want = 64;
    if (want < (uint64_t)s->used + k)
        want = (uint64_t)s->used + k;
    if (want > UINT32_MAX)
        return -ENOMEM;
    struct mti_rs_node *n = realloc(s->n, (size_t)want * sizeof *n);
    if (!n)
        return -ENOMEM;
    s->n = n;
    s->cap = (uint32_t)want;
    return 0;
}

static uint32_t rs_alloc(struct mt_range_set *s, uint64_t start, uint64_t end)
{
    uint32_t i;
    if (s->free_head) {
        i = s->free_head;
        s->free_head = s->n[i].left;
    } else {
        i = s->used++;
    }
    /* xorshift64 */
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    s->n[i] = (struct mti_rs_node){ start, end, 0, 0, (uint32_t)(s->rng >> 32) };
    return i;
}

static void rs_release(struct mt_range_set *s, uint32_t i)
{
    s->n[i].left = s->free_head;
    s->free_head = i;
}

/* Splits t into l (starts < key) and r (starts >= key). */
static void rs_split(struct mt_range_set *s, uint32_t t, uint64_t key, uint32_t *l, uint32_t *r)
{
    if (!t) {
        *l = *r = 0;
        return;
    }
    if (s->n[t].start < key) {
        rs_split(s, s->n[t].right, key, &s->n[t].right, r);
        *l = t;
    } else {
        rs_split(s, s->n[t].left, key, l, &s->n[t].left);
        *r = t;
    }
}

/* Merges l and r, every start in l below every start in r. */
static uint32_t rs_merge(struct mt_range_set *s, uint32_t l, uint32_t r)
{
    if (!l)
        return r;
    if (!r)
        return l;
    if (s->n[l].prio > s->n[r].prio) {
        s->n[l].right = rs_merge(s, s->n[l].right, r);
        return l;
    }
    s->n[r].left = rs_merge(s, l, s->n[r].left);
    return r;
}

/* Frees every node of t, except `keep`; returns the live bytes they held
 * (keep excluded) and their number through *nodes. */
static uint64_t rs_drop(struct mt_range_set *s, uint32_t t, uint32_t keep, size_t *nodes)
{
    if (!t)
        return 0;
    uint64_t b = rs_drop(s, s->n[t].left, keep, nodes);
    b += rs_drop(s, s->n[t].right, keep, nodes);
    if (t != keep) {
        b += s->n[t].end - s->n[t].start;
        (*nodes)++;
        rs_release(s, t);
    }
    return b;
}

int mt_range_set_remove(struct mt_range_set *s, uint64_t start, uint64_t end, uint64_t *removed)
{
    uint64_t gone = 0;
    if (end <= start || !s->root) {
        if (removed)
            *removed = 0;
        return 0;
    }
    /* One new node at most: when the hole is strictly inside one range. */
    int rc = rs_reserve(s, 1);
    if (rc < 0)
        return rc;

    uint32_t a, bc, b, c;
    rs_split(s, s->root, start, &a, &bc);
    rs_split(s, bc, end, &b, &c);

    /* The last range of `a` (start < start) may reach into the hole. */
    uint32_t m = a;
    while (m && s->n[m].right)
        m = s->n[m].right;
    uint32_t tail = 0; /* piece of a range that continues past `end` */
    if (m && s->n[m].end > start) {
        uint64_t old_end = s->n[m].end;
        if (old_end > end) {
            tail = rs_alloc(s, end, old_end);
            s->count++;
            gone += end - start;
        } else {
            gone += old_end - start;
        }
        s->n[m].end = start;
    }

    /* Ranges starting inside the hole go, except the part of the last one
     * past `end`, which is kept in place (its node is reused). */
    uint32_t last = b;
    while (last && s->n[last].right)
        last = s->n[last].right;
    uint32_t keep = 0;
    if (last && s->n[last].end > end) {
        keep = last;
        gone += end - s->n[last].start;
    }
    size_t dropped = 0;
    gone += rs_drop(s, b, keep, &dropped);
    s->count -= dropped;
    if (keep) {
        s->n[keep].start = end;
        s->n[keep].left = s->n[keep].right = 0;
        tail = keep; /* cannot coexist with a split tail: ranges are disjoint */
    }

    if (tail)
        c = rs_merge(s, tail, c);
    s->root = rs_merge(s, a, c);
    s->total -= gone;
    if (removed)
        *removed = gone;
    return 0;
}

int mt_range_set_insert(struct mt_range_set *s, uint64_t start, uint64_t end)
{
    if (end <= start)
        return 0;
    int rc = rs_reserve(s, 2); /* one for a possible split, one for the range */
    if (rc < 0)
        return rc;
    rc = mt_range_set_remove(s, start, end, NULL);
    if (rc < 0)
        return rc;
    uint32_t node = rs_alloc(s, start, end);
    uint32_t l, r;
    rs_split(s, s->root, start, &l, &r);
    s->root = rs_merge(s, rs_merge(s, l, node), r);
    s->count++;
    s->total += end - start;
    return 0;
}

uint64_t mt_range_set_total(const struct mt_range_set *s)
{
    return s->total;
}

size_t mt_range_set_count(const struct mt_range_set *s)
{
    return s->count;
}

bool mt_range_set_contains(const struct mt_range_set *s, uint64_t addr)
{
    uint32_t t = s->root;
    while (t) {
        const struct mti_rs_node *n = &s->n[t];
        if (addr < n->start)
            t = n->left;
        else if (addr >= n->end)
            t = n->right;
        else
            return true;
    }
    return false;
}

static int rs_walk(const struct mt_range_set *s, uint32_t t,
                   int (*fn)(uint64_t, uint64_t, void *), void *arg)
{
    if (!t)
        return 0;
    int rc = rs_walk(s, s->n[t].left, fn, arg);
    if (rc)
        return rc;
    rc = fn(s->n[t].start, s->n[t].end, arg);
    if (rc)
        return rc;
    return rs_walk(s, s->n[t].right, fn, arg);
}

int mt_range_set_foreach(const struct mt_range_set *s,
                         int (*fn)(uint64_t start, uint64_t end, void *arg), void *arg)
{
    return rs_walk(s, s->root, fn, arg);
}
