/* hash-table.h: the one open-addressing hash table of the analyzer, as a
 * template for entries of any width that start with a 64-bit key.
 *
 * Before including, define:
 *   HT_PREFIX    name prefix of the generated functions (e.g. lt)
 *   HT_TABLE     the table struct: fields slots, mask, count, shift,
 *                has_zero, zero (see struct mt_live_table)
 *   HT_ENTRY     the entry struct; its first field is uint64_t key
 *   HT_MIN_BITS  log2 of the first capacity
 * and get, as static inline functions, PREFIX_init, _destroy, _find,
 * _insert, _remove (and PREFIX_home, PREFIX_grow). The macros are undefined
 * again at the end, so a file may instantiate several tables.
 *
 * Linear probing, backward-shift deletion (no tombstones), power-of-two
 * capacity grown at 70% load, Fibonacci hashing (spreads low-entropy keys:
 * aligned addresses, consecutive seqs). Key 0 is legal and kept outside the
 * slot array, where 0 marks an empty slot. Invariant: every stored key sits
 * in the probe run that starts at its home with no empty slot in between.
 * Not thread-safe.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define HT_CAT2(a, b) a##_##b
#define HT_CAT(a, b) HT_CAT2(a, b)
#define HT_FN(name) HT_CAT(HT_PREFIX, name)
#define HT_UNUSED __attribute__((unused))

static inline HT_UNUSED size_t HT_FN(home)(const HT_TABLE *t, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> t->shift);
}

static inline HT_UNUSED void HT_FN(init)(HT_TABLE *t)
{
    memset(t, 0, sizeof *t);
}

static inline HT_UNUSED void HT_FN(destroy)(HT_TABLE *t)
{
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static HT_UNUSED int HT_FN(grow)(HT_TABLE *t)
{
    unsigned bits = t->slots ? 64 - t->shift + 1 : HT_MIN_BITS;
    if (bits >= 8 * sizeof(size_t) - 6)
        return -ENOMEM;
    size_t cap = (size_t)1 << bits;
    HT_ENTRY *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    HT_ENTRY *old = t->slots;
    size_t old_cap = old ? t->mask + 1 : 0;
    t->slots = slots;
    t->mask = cap - 1;
    t->shift = 64 - bits;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].key)
            continue;
        size_t j = HT_FN(home)(t, old[i].key);
        while (slots[j].key)
            j = (j + 1) & t->mask;
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

/* The entry for key, or NULL; valid until the next insert or remove. */
static inline HT_UNUSED HT_ENTRY *HT_FN(find)(const HT_TABLE *t, uint64_t key)
{
    if (__builtin_expect(key == 0, 0))
        return t->has_zero ? (HT_ENTRY *)&t->zero : NULL;
    if (!t->slots)
        return NULL;
    size_t i = HT_FN(home)(t, key);
    for (;;) {
        HT_ENTRY *s = &t->slots[i];
        if (s->key == key)
            return s;
        if (!s->key)
            return NULL;
        i = (i + 1) & t->mask;
    }
}

/* Inserts e: 0 if its key was new, 1 if it was there (the old entry is
 * copied to *old when old is non-NULL, then replaced), -ENOMEM (table
 * unchanged). */
static inline HT_UNUSED int HT_FN(insert)(HT_TABLE *t, const HT_ENTRY *e, HT_ENTRY *old)
{
    if (__builtin_expect(e->key == 0, 0)) {
        int had = t->has_zero;
        if (had && old)
            *old = t->zero;
        if (!had)
            t->count++;
        t->has_zero = true;
        t->zero = *e;
        return had;
    }
    if (__builtin_expect(!t->slots || (t->count + 1) * 10 > (t->mask + 1) * 7, 0)) {
        int rc = HT_FN(grow)(t);
        if (rc < 0)
            return rc;
    }
    size_t i = HT_FN(home)(t, e->key);
    for (;;) {
        HT_ENTRY *s = &t->slots[i];
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

/* Removes key: 1 (the entry copied to *out when out is non-NULL) or 0 if it
 * was absent. */
static inline HT_UNUSED int HT_FN(remove)(HT_TABLE *t, uint64_t key, HT_ENTRY *out)
{
    if (__builtin_expect(key == 0, 0)) {
        if (!t->has_zero)
            return 0;
        if (out)
            *out = t->zero;
        t->has_zero = false;
        t->count--;
        return 1;
    }
    HT_ENTRY *s = HT_FN(find)(t, key);
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
        size_t h = HT_FN(home)(t, t->slots[j].key);
        /* The entry at j may move back to the hole at i unless its home
         * lies cyclically in (i, j]. */
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

#undef HT_FN
#undef HT_CAT
#undef HT_CAT2
#undef HT_UNUSED
#undef HT_PREFIX
#undef HT_TABLE
#undef HT_ENTRY
#undef HT_MIN_BITS
