/* Token text -> id over strings left where they are stored (a mapped file): a hash table of ids. */
#ifndef EDGELM_TEXT_INDEX_H
#define EDGELM_TEXT_INDEX_H

#include <stdint.h>

/* n strings in one buffer: string i is data[starts[i] .. starts[i] + lengths[i]). */
struct packed_strings {
    const uint8_t *data;
    const int64_t *starts, *lengths;
    int64_t n;
};

struct text_index {
    const struct packed_strings *s; /* read by lookups: must outlive the index */
    uint64_t *slots;                /* hash tag << 32 | id + 1; 0 when empty */
    uint64_t mask;
    int64_t first_duplicate; /* the first id whose text an earlier id has, or -1 */
};

/* Index the n strings of s (n < INT32_MAX): where a text repeats, the first id is found, or with
 * last_wins the last.  Returns 0, or -1 when out of memory. */
int text_index_build(struct text_index *x, const struct packed_strings *s, int last_wins);
void text_index_free(struct text_index *x);

/* The id of text a + b (nb may be 0), or -1. */
int32_t text_index_find(const struct text_index *x, const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb);

/* Whether s's spans all lie in a buffer of `size` bytes. */
int packed_strings_valid(const struct packed_strings *s, int64_t size);

#endif
