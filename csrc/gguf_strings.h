/* The string arrays of GGUF metadata, located without a Python loop over the strings. */
#ifndef EDGELM_GGUF_STRINGS_H
#define EDGELM_GGUF_STRINGS_H

#include <stdint.h>

struct gguf_scan {
    int64_t n_fit; /* strings that lie inside the buffer, from the first */
    int64_t end;   /* the offset after the last of them */
    /* when n_fit < count, string n_fit does not: its length, if its length field was there */
    int has_bad_length;
    uint64_t bad_length;
};

/* Walk `count` strings (each a little-endian u64 length, then its bytes) from buf[pos], where
 * 0 <= pos <= size, stopping at the first that runs past the end.  Writes each string's start and
 * length when starts and lengths are not NULL (room for count each). */
struct gguf_scan gguf_scan_strings(const uint8_t *buf, int64_t size, int64_t pos, int64_t count,
                                   int64_t *starts, int64_t *lengths);

#endif
