/* Token text -> id (see text_index.h).  Open addressing with linear probing at a load of at most
 * 2/3; each slot keeps 32 bits of the hash beside the id, which spares most probes a read of the
 * string itself, scattered over the mapped file. */
#include "text_index.h"

#include <stdlib.h>
#include <string.h>

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

static uint64_t fnv_more(uint64_t h, const uint8_t *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

static uint64_t mix64(uint64_t h) { /* FNV's low bits alone spread short strings poorly */
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 33);
}

static uint64_t hash2(const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb) {
    return mix64(fnv_more(fnv_more(FNV_OFFSET, a, na), b, nb));
}

/* The slot of text a + b: where its id is, or the empty slot it would take. */
static uint64_t probe(const struct text_index *x, uint64_t h, const uint8_t *a, int64_t na, const uint8_t *b,
                      int64_t nb) {
    const uint64_t tag = h >> 32;
    for (uint64_t i = h & x->mask;; i = (i + 1) & x->mask) {
        const uint64_t e = x->slots[i];
        if (e == 0) return i;
        if (e >> 32 != tag) continue;
        const int64_t id = (int64_t)(e & 0xFFFFFFFFu) - 1;
        if (x->s->lengths[id] != na + nb) continue;
        const uint8_t *p = x->s->data + x->s->starts[id];
        if ((na == 0 || memcmp(p, a, (size_t)na) == 0) && (nb == 0 || memcmp(p + na, b, (size_t)nb) == 0)) return i;
    }
}

int text_index_build(struct text_index *x, const struct packed_strings *s, int last_wins) {
    uint64_t cap = 16;
    while (cap < (uint64_t)s->n + (uint64_t)s->n / 2 + 1) cap <<= 1;
    x->s = s;
    x->mask = cap - 1;
    x->first_duplicate = -1;
    x->slots = calloc(cap, sizeof *x->slots);
    if (!x->slots) return -1;
    for (int64_t t = 0; t < s->n; t++) {
        const uint8_t *p = s->data + s->starts[t];
        const uint64_t h = hash2(p, s->lengths[t], NULL, 0);
        const uint64_t i = probe(x, h, p, s->lengths[t], NULL, 0);
        if (x->slots[i] != 0) {
            if (x->first_duplicate < 0) x->first_duplicate = t;
            if (!last_wins) continue;
        }
        x->slots[i] = (h >> 32) << 32 | (uint64_t)(t + 1);
    }
    return 0;
}

void text_index_free(struct text_index *x) {
    free(x->slots);
    x->slots = NULL;
}

int32_t text_index_find(const struct text_index *x, const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb) {
    const uint64_t e = x->slots[probe(x, hash2(a, na, b, nb), a, na, b, nb)];
    return e ? (int32_t)(e & 0xFFFFFFFFu) - 1 : -1;
}

int packed_strings_valid(const struct packed_strings *s, int64_t size) {
    for (int64_t i = 0; i < s->n; i++) {
        const int64_t start = s->starts[i], len = s->lengths[i];
        if (start < 0 || len < 0 || start > size || len > size - start) return 0;
    }
    return 1;
}
