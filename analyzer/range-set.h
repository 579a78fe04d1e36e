/* range-set: a set of disjoint half-open address ranges [start, end), for
 * tracking live mappings.
 *
 * Insert has union semantics (a range overlapping live ones replaces the
 * overlapped parts, as mmap MAP_FIXED does); remove takes away whatever part
 * of any live range it covers, splitting a range when the hole is in its
 * middle (partial munmap) and spanning several ranges at once. The total
 * of live bytes is kept up to date. A treap keyed by start: O(log n)
 * expected per operation plus the number of ranges removed, fine for
 * millions of ranges.
 *
 * Not thread-safe. mt_range_set_free accepts NULL.
 */
#ifndef MT_RANGE_SET_H
#define MT_RANGE_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mt_range_set;

int mt_range_set_new(struct mt_range_set **out);
void mt_range_set_free(struct mt_range_set *s);

/* Adds [start, end) (nothing if end <= start). 0 or -ENOMEM (then the set
 * may have lost the overlapped parts, but its total matches its ranges). */
int mt_range_set_insert(struct mt_range_set *s, uint64_t start, uint64_t end);

/* Removes [start, end) from every live range; *removed (if non-NULL) gets the
 * number of live bytes taken away. 0 or -ENOMEM (set unchanged). */
int mt_range_set_remove(struct mt_range_set *s, uint64_t start, uint64_t end, uint64_t *removed);

uint64_t mt_range_set_total(const struct mt_range_set *s); /* live bytes */
size_t mt_range_set_count(const struct mt_range_set *s);   /* live ranges */
bool mt_range_set_contains(const struct mt_range_set *s, uint64_t addr);

/* Calls fn for each range in ascending order; stops early if fn returns
 * non-zero and returns that value, else 0. */
int mt_range_set_foreach(const struct mt_range_set *s,
                         int (*fn)(uint64_t start, uint64_t end, void *arg), void *arg);

#endif /* MT_RANGE_SET_H */
