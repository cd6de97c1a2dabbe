/* The string arrays of GGUF metadata (see gguf_strings.h). */
#include "gguf_strings.h"

static uint64_t load_u64le(const uint8_t *p) { /* the format is little-endian whatever the host */
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

struct gguf_scan gguf_scan_strings(const uint8_t *buf, int64_t size, int64_t pos, int64_t count,
                                   int64_t *starts, int64_t *lengths) {
    struct gguf_scan s = {0, pos, 0, 0};
    for (int64_t i = 0; i < count; i++) {
        if (size - pos < 8) return s;
        const uint64_t n = load_u64le(buf + pos);
        if (n > (uint64_t)(size - pos - 8)) {
            s.has_bad_length = 1;
            s.bad_length = n;
            return s;
        }
        pos += 8;
        if (starts) {
            starts[i] = pos;
            lengths[i] = (int64_t)n;
        }
        pos += (int64_t)n;
        s.n_fit = i + 1;
        s.end = pos;
    }
    return s;
}
