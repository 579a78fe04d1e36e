/* live-table: open-addressing hash map key -> value (see live-table.h).
 *
 * Invariants: slots[i].key == 0 means slot i is empty; every stored key k
 * sits in the probe run that starts at home(k) with no empty slot between
 * home(k) and its slot (kept by backward-shift deletion); count <= 70% of
 * capacity. Fibonacci hashing spreads low-entropy keys (aligned
 * addresses, consecutive seqs).
 * Not thread-safe.
 */
#include "live-table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MTI_LT_MIN_BITS 10

static inline size_t lt_home(const struct mt_live_table *t, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> t->shift);
}

void mt_live_table_init(struct mt_live_table *t)
{
    memset(t, 0, sizeof *t);
}

void mt_live_table_destroy(struct mt_live_table *t)
{
    if (!t)
        return;
    free(t->slots);
    mt_live_table_init(t);
}

static int lt_grow(struct mt_live_table *t)
{
    unsigned bits = t->slots ? 64 - t->shift + 1 : MTI_LT_MIN_BITS;
    if (bits >= 8 * sizeof(size_t) - 6)
        return -ENOMEM;
    size_t cap = (size_t)1 << bits;
    struct mt_live_entry *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    struct mt_live_entry *old = t->slots;
    size_t old_cap = old ? t->mask + 1 : 0;
    t->slots = slots;
    t->mask = cap - 1;
    t->shift = 64 - bits;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key)
            continue;
        size_t j = lt_home(t, old[i].key);
        while (slots[j].key)
            j = (j + 1) & t->mask;
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

int mt_live_table_insert(struct mt_live_table *t, const struct mt_live_entry *e,
                         struct mt_live_entry *old)
{
    if (e->key == 0) {
        if (t->has_zero) {
            if (old)
                *old = t->zero;
            t->zero = *e;
            return 1;
        }
        t->has_zero = true;
        t->zero = *e;
        t->count++;
        return 0;
    }
    if (!t->slots || (t->count + 1) * 10 > (t->mask + 1) * 7) {
        int rc = lt_grow(t);
        if (rc < 0)
            return rc;
    }
    size_t i = lt_home(t, e->key);
    for (;;) {
        struct mt_live_entry *s = &t->slots[i];
        if (s->key == e->key) {
            if (old)
                *old = *s;
            *s = *e;
            return 1;
        }
        if (!s->key) {
            *s = *e;
            t->count++;
            return 0;
        }
        i = (i + 1) & t->mask;
    }
}

struct mt_live_entry *mt_live_table_find(struct mt_live_table *t, uint64_t key)
{
    if (key == 0)
        return t->has_zero ? &t->zero : NULL;
    if (!t->slots)
        return NULL;
    size_t i = lt_home(t, key);
    for (;;) {
        struct mt_live_entry *s = &t->slots[i];
        if (s->key == key)
            return s;
        if (!s->key)
            return NULL;
        i = (i + 1) & t->mask;
    }
}

int mt_live_table_remove(struct mt_live_table *t, uint64_t key, struct mt_live_entry *out)
{
    if (key == 0) {
        if (!t->has_zero)
            return 0;
        if (out)
            *out = t->zero;
        t->has_zero = false;
        t->count--;
        return 1;
    }
    struct mt_live_entry *s = mt_live_table_find(t, key);
    if (!s)
        return 0;
    if (out)
        *out = *s;
    size_t i = (size_t)(s - t->slots);
    size_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (!t->slots[j].key)
            break;
        size_t h = lt_home(t, t->slots[j].key);
        /* The entry at j may move back to the hole at i unless its home lies
         * cyclically in (i, j]. */
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (!stays) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].key = 0;
    t->count--;
    return 1;
}

bool mt_live_table_next(const struct mt_live_table *t, size_t *cursor, struct mt_live_entry *out)
{
    size_t cap = t->slots ? t->mask + 1 : 0;
    size_t c = *cursor;
    if (c == 0) {
        *cursor = 1;
        if (t->has_zero) {
            *out = t->zero;
            return true;
        }
        c = 1;
    }
    for (size_t i = c - 1; i < cap; i++) {
        if (t->slots[i].key) {
            *out = t->slots[i];
            *cursor = i + 2;
            return true;
        }
    }
    *cursor = cap + 1;
    return false;
}
