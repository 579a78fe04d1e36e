/* live-table: hash map from a 64-bit key to a 64-bit value, for what is
 * live at a point of a trace: heap blocks by block id (the report), by
 * address (the reader's address -> block map of RAW traces), threads by tid.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), power-of-two capacity, grown at 70% load: insert, find and
 * remove are O(1) on average. Key 0 is a legal key (kept outside the slot
 * array, where 0 marks an empty slot). An entry is 16 bytes, so a table of
 * n entries takes between 23n and 46n bytes.
 *
 * The struct is public so it can live inside other structs; initialise with
 * mt_live_table_init (no allocation) and release with
 * mt_live_table_destroy (accepts NULL). Not thread-safe: one owner at a time.
 * Pointers returned by mt_live_table_find are valid until the next insert or
 * remove.
 */
#ifndef MT_LIVE_TABLE_H
#define MT_LIVE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mt_live_entry {
    uint64_t key;
    uint64_t value;
};

struct mt_live_table {
    struct mt_live_entry *slots; /* capacity = mask + 1 slots, or NULL */
    size_t mask;
    size_t count;    /* entries, the zero key included */
    unsigned shift;  /* 64 - log2(capacity), for the hash */
    bool has_zero;
    struct mt_live_entry zero;
};

void mt_live_table_init(struct mt_live_table *t);
void mt_live_table_destroy(struct mt_live_table *t);

/* Inserts e. Returns 0 if e->key was not present, 1 if it was (then its old
 * entry is copied to *old when old is non-NULL, and replaced), or -ENOMEM
 * (table unchanged). */
int mt_live_table_insert(struct mt_live_table *t, const struct mt_live_entry *e,
                         struct mt_live_entry *old);

/* Removes key. Returns 1 and copies the entry to *out (if non-NULL) when it
 * was present, 0 when it was not. */
int mt_live_table_remove(struct mt_live_table *t, uint64_t key, struct mt_live_entry *out);

/* The entry for key, or NULL. */
struct mt_live_entry *mt_live_table_find(struct mt_live_table *t, uint64_t key);

static inline size_t mt_live_table_count(const struct mt_live_table *t)
{
    return t->count;
}

/* Iteration in no particular order: start with *cursor = 0; returns false at
 * the end. The table must not change during the iteration. */
bool mt_live_table_next(const struct mt_live_table *t, size_t *cursor, struct mt_live_entry *out);

#endif /* MT_LIVE_TABLE_H */
