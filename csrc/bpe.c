/* Byte-level BPE merges over token ids (see bpe.h). */
#include "bpe.h"

#include <stdlib.h>
#include <string.h>

#define EMPTY_KEY UINT64_MAX
#define NO_TOKEN (-1)
#define HASH_MUL 0x9E3779B97F4A7C15ull

struct bpe {
    /* (left << 32 | right) -> rank, result: open addressing, linear probing */
    uint64_t *pair_keys;
    uint32_t *pair_rank;
    int32_t *pair_result;
    uint64_t pair_mask;
    int pair_shift;
    int32_t byte_ids[256];
    /* raw token bytes -> id, for whole words (ignore_merges only) */
    int ignore_merges;
    const uint8_t *tokens;
    const int64_t *offsets;
    int32_t *word_slots; /* id + 1, 0 = empty */
    uint64_t word_mask;
    /* per-call scratch, grown as needed */
    struct symbol *sym;
    struct pair_entry *heap;
    int64_t cap_sym, cap_heap;
};

struct symbol {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
};

struct pair_entry {
    uint32_t rank;
    int32_t left, right;       /* symbol positions */
    int32_t left_id, right_id; /* the ids when queued: a merge since then makes the entry stale */
    int32_t result;
};

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

static int log2_u64(uint64_t p) {
    int s = 0;
    while ((1ull << s) < p) s++;
    return s;
}

static uint64_t pair_key(int32_t l, int32_t r) { return ((uint64_t)(uint32_t)l << 32) | (uint32_t)r; }

static uint64_t pair_slot(const struct bpe *b, uint64_t key) { return (key * HASH_MUL) >> (64 - b->pair_shift); }

static int pair_find(const struct bpe *b, int32_t l, int32_t r, uint32_t *rank, int32_t *result) {
    const uint64_t key = pair_key(l, r);
    for (uint64_t i = pair_slot(b, key);; i = (i + 1) & b->pair_mask) {
        if (b->pair_keys[i] == EMPTY_KEY) return 0;
        if (b->pair_keys[i] == key) {
            *rank = b->pair_rank[i];
            *result = b->pair_result[i];
            return 1;
        }
    }
}

static uint64_t hash_bytes(const uint8_t *p, int64_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int64_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h * HASH_MUL;
}

static int32_t word_find(const struct bpe *b, const uint8_t *word, int64_t n) {
    for (uint64_t i = hash_bytes(word, n) & b->word_mask;; i = (i + 1) & b->word_mask) {
        const int32_t slot = b->word_slots[i];
        if (slot == 0) return NO_TOKEN;
        const int32_t id = slot - 1;
        const int64_t len = b->offsets[id + 1] - b->offsets[id];
        if (len == n && memcmp(b->tokens + b->offsets[id], word, (size_t)n) == 0) return id;
    }
}

struct bpe *bpe_create(const int32_t *left, const int32_t *right, const int32_t *result, int64_t n_merges,
                       const int32_t byte_ids[256], const uint8_t *tokens, const int64_t *offsets,
                       int64_t n_tokens, int ignore_merges) {
    struct bpe *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    const uint64_t cap = pow2_at_least((uint64_t)n_merges * 3 / 2 + 1); /* load factor <= 2/3 */
    b->pair_mask = cap - 1;
    b->pair_shift = log2_u64(cap);
    b->pair_keys = malloc(cap * sizeof *b->pair_keys);
    b->pair_rank = malloc(cap * sizeof *b->pair_rank);
    b->pair_result = malloc(cap * sizeof *b->pair_result);
    if (!b->pair_keys || !b->pair_rank || !b->pair_result) goto fail;
    memset(b->pair_keys, 0xFF, cap * sizeof *b->pair_keys);
    for (int64_t m = 0; m < n_merges; m++) {
        const uint64_t key = pair_key(left[m], right[m]);
        uint64_t i = pair_slot(b, key);
        while (b->pair_keys[i] != EMPTY_KEY && b->pair_keys[i] != key) i = (i + 1) & b->pair_mask;
        if (b->pair_keys[i] == key) continue; /* a repeated pair keeps its first (best) rank */
        b->pair_keys[i] = key;
        b->pair_rank[i] = (uint32_t)m;
        b->pair_result[i] = result[m];
    }
    memcpy(b->byte_ids, byte_ids, sizeof b->byte_ids);
    b->ignore_merges = ignore_merges && tokens && offsets;
    if (b->ignore_merges) {
        b->tokens = tokens;
        b->offsets = offsets;
        const uint64_t wcap = pow2_at_least((uint64_t)n_tokens * 2 + 1);
        b->word_mask = wcap - 1;
        b->word_slots = calloc(wcap, sizeof *b->word_slots);
        if (!b->word_slots) goto fail;
        for (int64_t t = 0; t < n_tokens; t++) {
            const int64_t len = offsets[t + 1] - offsets[t];
            if (len <= 0) continue;
            const uint8_t *p = tokens + offsets[t];
            if (word_find(b, p, len) != NO_TOKEN) continue; /* the first id of a repeated text wins */
            uint64_t i = hash_bytes(p, len) & b->word_mask;
            while (b->word_slots[i] != 0) i = (i + 1) & b->word_mask;
            b->word_slots[i] = (int32_t)t + 1;
        }
    }
    return b;
fail:
    bpe_destroy(b);
    return NULL;
}

void bpe_destroy(struct bpe *b) {
    if (!b) return;
    free(b->pair_keys);
    free(b->pair_rank);
    free(b->pair_result);
    free(b->word_slots);
    free(b->sym);
    free(b->heap);
    free(b);
}

/* ---- the merge loop: a binary heap of candidate pairs, by (rank, left position) ---------------- */

static int entry_less(const struct pair_entry *a, const struct pair_entry *c) {
    return a->rank < c->rank || (a->rank == c->rank && a->left < c->left);
}

static void heap_push(struct pair_entry *h, int64_t *n, struct pair_entry e) {
    int64_t i = (*n)++;
    while (i > 0) {
        const int64_t parent = (i - 1) / 2;
        if (!entry_less(&e, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static struct pair_entry heap_pop(struct pair_entry *h, int64_t *n) {
    const struct pair_entry top = h[0];
    const struct pair_entry last = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && entry_less(&h[child + 1], &h[child])) child++;
        if (!entry_less(&h[child], &last)) break;
        h[i] = h[child];
        i = child;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void queue_pair(const struct bpe *b, const struct symbol *sym, int32_t l, struct pair_entry *heap,
                       int64_t *n_heap) {
    if (l < 0) return;
    const int32_t r = sym[l].next;
    if (r < 0 || sym[l].id == NO_TOKEN || sym[r].id == NO_TOKEN) return;
    uint32_t rank;
    int32_t result;
    if (!pair_find(b, sym[l].id, sym[r].id, &rank, &result)) return;
    heap_push(heap, n_heap, (struct pair_entry){rank, l, r, sym[l].id, sym[r].id, result});
}

static int grow(void **p, int64_t *cap, int64_t want, size_t item) {
    if (*cap >= want) return 0;
    int64_t n = *cap ? *cap : 64;
    while (n < want) n *= 2;
    void *q = realloc(*p, (size_t)n * item);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

int64_t bpe_encode_word(struct bpe *b, const uint8_t *word, int64_t n, int32_t *out) {
    if (n <= 0) return 0;
    if (b->ignore_merges) {
        const int32_t id = word_find(b, word, n);
        if (id != NO_TOKEN) {
            out[0] = id;
            return 1;
        }
    }
    /* Each merge removes a symbol and queues at most two pairs: n + 2n entries at most. */
    if (grow((void **)&b->sym, &b->cap_sym, n, sizeof *b->sym) ||
        grow((void **)&b->heap, &b->cap_heap, 3 * n, sizeof *b->heap))
        return -1;
    struct symbol *sym = b->sym;
    struct pair_entry *heap = b->heap;
    for (int64_t i = 0; i < n; i++) {
        sym[i].id = b->byte_ids[word[i]];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    int64_t n_heap = 0;
    for (int64_t i = 0; i + 1 < n; i++) queue_pair(b, sym, (int32_t)i, heap, &n_heap);
    while (n_heap > 0) {
        const struct pair_entry e = heap_pop(heap, &n_heap);
        /* stale: a neighbour merged since this pair was queued */
        if (sym[e.left].next != e.right || sym[e.left].id != e.left_id || sym[e.right].id != e.right_id) continue;
        sym[e.left].id = e.result;
        const int32_t after = sym[e.right].next;
        sym[e.left].next = after;
        if (after >= 0) sym[after].prev = e.left;
        sym[e.right].id = NO_TOKEN;
        sym[e.right].next = sym[e.right].prev = -2; /* gone */
        queue_pair(b, sym, sym[e.left].prev, heap, &n_heap);
        queue_pair(b, sym, e.left, heap, &n_heap);
    }
    int64_t n_out = 0;
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        if (sym[i].id != NO_TOKEN) out[n_out++] = sym[i].id;
    return n_out;
}

/* ---- tables from the vocab's strings ------------------------------------------------------------ */

/* Length of the well-formed UTF-8 character at p (n bytes there), 0 if there is none: the rules of
 * Python's decoder, which turns every byte of an ill-formed sequence into a character of its own. */
static int utf8_char_len(const uint8_t *p, int64_t n) {
    const uint8_t c = p[0];
    if (c < 0x80) return 1;
    const int len = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (len == 0 || n < len) return 0;
    const uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    const uint8_t hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* Whether a character starts in the last bytes of a and ends in b: decoded apart, the two halves
 * would be one character a byte, so no token's text equals the parts' texts joined. */
static int splits_a_char(const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb) {
    uint8_t joint[7];
    for (int k = 1; k <= 3 && k <= na; k++) {
        if (a[na - k] < 0xC2) continue; /* not a lead byte */
        const int64_t from_b = nb < 3 ? nb : 3;
        memcpy(joint, a + na - k, (size_t)k);
        memcpy(joint + k, b, (size_t)from_b);
        if (utf8_char_len(joint, k + from_b) > k) return 1;
    }
    return 0;
}

/* GPT-2's byte alphabet: the character of each byte, and the byte of each character below
 * ALPHABET_END (-1 for the others). */
#define ALPHABET_END 0x144

static void byte_alphabet(uint16_t chars[256], int16_t bytes[ALPHABET_END]) {
    int n = 0;
    for (int c = 0; c < ALPHABET_END; c++) bytes[c] = -1;
    for (int b = 0; b < 256; b++) {
        const int printable = (b >= 0x21 && b < 0x7F) || (b >= 0xA1 && b < 0xAD) || b >= 0xAE;
        chars[b] = (uint16_t)(printable ? b : 256 + n++);
        bytes[chars[b]] = (int16_t)b;
    }
}

/* The bytes a token's characters stand for, into out; -1 if a character is outside the alphabet
 * (anything from U+0144 on takes three or more bytes; ill-formed bytes decode to surrogates). */
static int64_t unalphabet(const uint8_t *p, int64_t n, const int16_t bytes[ALPHABET_END], uint8_t *out) {
    int64_t k = 0;
    for (int64_t i = 0; i < n;) {
        int cp;
        if (p[i] < 0x80) {
            cp = p[i++];
        } else if (p[i] >= 0xC2 && p[i] < 0xC6 && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
            cp = (p[i] & 0x1F) << 6 | (p[i + 1] & 0x3F);
            i += 2;
        } else {
            return -1;
        }
        if (cp >= ALPHABET_END || bytes[cp] < 0) return -1;
        out[k++] = (uint8_t)bytes[cp];
    }
    return k;
}

void bpe_tables_free(struct bpe_tables *t) {
    free(t->left);
    free(t->right);
    free(t->result);
    free(t->raw);
    free(t->offsets);
    memset(t, 0, sizeof *t);
}

int bpe_tables_build(const struct packed_strings *tokens, const struct packed_strings *merges, int want_raw,
                     struct bpe_tables *t) {
    memset(t, 0, sizeof *t);
    struct text_index x = {0};
    const size_t n_m = merges->n > 0 ? (size_t)merges->n : 1;
    t->left = malloc(n_m * sizeof *t->left);
    t->right = malloc(n_m * sizeof *t->right);
    t->result = malloc(n_m * sizeof *t->result);
    if (!t->left || !t->right || !t->result || text_index_build(&x, tokens, 1)) goto fail;

    for (int64_t m = 0; m < merges->n; m++) {
        const uint8_t *p = merges->data + merges->starts[m];
        const int64_t n = merges->lengths[m];
        const uint8_t *space = n > 1 ? memchr(p + 1, ' ', (size_t)(n - 1)) : NULL;
        if (!space) {
            t->n_dropped++;
            continue;
        }
        const int64_t na = space - p, nb = n - na - 1;
        const int32_t l = text_index_find(&x, p, na, NULL, 0), r = text_index_find(&x, space + 1, nb, NULL, 0);
        const int32_t res = l == NO_TOKEN || r == NO_TOKEN || splits_a_char(p, na, space + 1, nb)
                                ? NO_TOKEN
                                : text_index_find(&x, p, na, space + 1, nb);
        if (res == NO_TOKEN) {
            t->n_dropped++;
            continue;
        }
        t->left[t->n_merges] = l;
        t->right[t->n_merges] = r;
        t->result[t->n_merges] = res;
        t->n_merges++;
    }

    uint16_t chars[256];
    int16_t bytes[ALPHABET_END];
    byte_alphabet(chars, bytes);
    for (int b = 0; b < 256; b++) {
        const uint16_t c = chars[b];
        const uint8_t utf8[2] = {c < 0x80 ? (uint8_t)c : (uint8_t)(0xC0 | c >> 6), (uint8_t)(0x80 | (c & 0x3F))};
        t->byte_ids[b] = text_index_find(&x, utf8, c < 0x80 ? 1 : 2, NULL, 0);
    }
    text_index_free(&x);

    if (want_raw) {
        int64_t total = 0;
        for (int64_t i = 0; i < tokens->n; i++) total += tokens->lengths[i];
        t->raw = malloc(total > 0 ? (size_t)total : 1); /* never more bytes than characters */
        t->offsets = malloc((size_t)(tokens->n + 1) * sizeof *t->offsets);
        if (!t->raw || !t->offsets) goto fail;
        t->offsets[0] = 0;
        for (int64_t i = 0; i < tokens->n; i++) {
            const int64_t k = unalphabet(tokens->data + tokens->starts[i], tokens->lengths[i], bytes,
                                         t->raw + t->offsets[i]);
            t->offsets[i + 1] = t->offsets[i] + (k > 0 ? k : 0);
        }
    }
    return 0;
fail:
    text_index_free(&x);
    bpe_tables_free(t);
    return -1;
}
