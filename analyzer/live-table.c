/* live-table: hash map key -> value (see live-table.h), an instance of the
 * analyzer's one hash table (hash-table.h). Not thread-safe. */
#include "live-table.h"

#define HT_PREFIX lt
#define HT_TABLE struct mt_live_table
#define HT_ENTRY struct mt_live_entry
#define HT_MIN_BITS 10
#include "hash-table.h"

void mt_live_table_init(struct mt_live_table *t)
{
    lt_init(t);
}

void mt_live_table_destroy(struct mt_live_table *t)
{
    if (t)
        lt_destroy(t);
}

int mt_live_table_insert(struct mt_live_table *t, const struct mt_live_entry *e, struct mt_live_entry *old)
{
    return lt_insert(t, e, old);
}

struct mt_live_entry *mt_live_table_find(struct mt_live_table *t, uint64_t key)
{
    return lt_find(t, key);
}

int mt_live_table_remove(struct mt_live_table *t, uint64_t key, struct mt_live_entry *out)
{
    return lt_remove(t, key, out);
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
