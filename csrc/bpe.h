/* Byte-level BPE merges over token ids, as llama.cpp's BPE tokenizer applies them.
 *
 * A word (the UTF-8 bytes one pre-tokenizer piece) starts as one symbol per byte; the adjacent pair
 * with the lowest merge rank is merged (leftmost first on ties) until no pair has a rank.  The tables
 * hold ids only: ~16 bytes a merge instead of the strings a general tokenizer keeps. */
#ifndef EDGELM_BPE_H
#define EDGELM_BPE_H

#include <stdint.h>

#include "text_index.h"

struct bpe;

/* merges[i] = (left, right, result) of rank i; byte_ids[b]: the token of byte b alone, or -1.
 * tokens/offsets: the raw bytes of every token (token i is tokens[offsets[i] .. offsets[i+1])),
 * used for whole-word lookups when `ignore_merges`; may be NULL otherwise.  Returns NULL when out
 * of memory. A pair that appears twice keeps its first rank. */
struct bpe *bpe_create(const int32_t *left, const int32_t *right, const int32_t *result, int64_t n_merges,
                       const int32_t byte_ids[256], const uint8_t *tokens, const int64_t *offsets,
                       int64_t n_tokens, int ignore_merges);
void bpe_destroy(struct bpe *b);

/* Append the ids of `word` (n bytes) to out (room for at least n ids); returns how many, or -1 when
 * out of memory.  Bytes that have no token are dropped. */
int64_t bpe_encode_word(struct bpe *b, const uint8_t *word, int64_t n, int32_t *out);

/* The id tables of a byte-level BPE vocab, read from its token and merge strings as stored. */
struct bpe_tables {
    int32_t *left, *right, *result; /* the merges kept, best first */
    int64_t n_merges, n_dropped;    /* merges kept; merges whose parts or result are not tokens */
    int32_t byte_ids[256];          /* the token of each byte alone (its GPT-2 character), or -1 */
    uint8_t *raw;                   /* with want_raw: the bytes each token stands for, packed */
    int64_t *offsets;               /* with want_raw: n_tokens + 1 offsets into raw */
};

/* Token ids by text (the last id wins where a text repeats); each merge split at its first space
 * after the first byte, kept when both parts and their concatenation are tokens.  With want_raw,
 * each token's bytes with GPT-2's byte alphabet undone (none for a token with any other character).
 * Bytes compare as the strings they decode to, invalid UTF-8 included (one character per byte):
 * parts whose concatenation decodes differently from the parts (a character split by the space)
 * have no result.  The spans must lie in their buffers and the token count be below INT32_MAX.
 * Returns 0, or -1 when out of memory (t is then empty). */
int bpe_tables_build(const struct packed_strings *tokens, const struct packed_strings *merges, int want_raw,
                     struct bpe_tables *t);
void bpe_tables_free(struct bpe_tables *t);

#endif
