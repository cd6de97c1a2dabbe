/* The R16 weight layout: the rows of a matrix in groups of 16, interleaved block by block.
 *
 * A kernel that keeps one output row per 32-bit vector lane reads a block of all 16 rows with a few
 * whole-vector loads: no per-row horizontal sums, no gathering of scales.  Repacking happens once, at
 * load, and keeps the bits: a group takes exactly the bytes of its 16 rows in the file.
 *
 * Group g holds rows 16g .. 16g+15; inside it, block b (32 weights of each row) takes 16 * type_size
 * bytes at b * 16 * type_size:
 *   Q8_0  d[16] (f16) | 8 chunk vectors: lane r = weights 4c .. 4c+3 of row r, as q + 128 (unsigned)
 *   Q4_0  d[16] | 4 nibble vectors: lane r = packed bytes 4p .. 4p+3 of row r (low nibbles: weights
 *         4p .. 4p+3, high nibbles: weights 16+4p .. 16+4p+3)
 *   Q4_1  d[16] | m[16] | 4 nibble vectors
 *   Q5_0  d[16] | high-bit vector: lane r byte i bit c = high bit of weight 4c+i of row r | 4 nibble vectors
 *   Q5_1  d[16] | m[16] | high-bit vector | 4 nibble vectors
 * and super-block b (256 weights of each row) of the K-quants takes R16_Q4_K_BYTES / R16_Q6_K_BYTES:
 *   Q4_K  d[16] | dmin[16] | scale[j][r] (u8, j = 32-weight sub-block) | min[p][r][2] (u8, the mins of
 *         sub-blocks 2p, 2p+1: a pair per lane) | for each 64 weights p: 8 nibble vectors, vector v
 *         lane r = packed bytes 32p+4v .. 32p+4v+3 of row r (low nibbles: weights 64p+4v+i, high:
 *         64p+32+4v+i)
 *   Q6_K  d[16] | scale[p][r][2] (i8, the scales of 16-weight sub-blocks 2p, 2p+1) | for each 32
 *         weights p: 4 nibble vectors (vector v lane r byte i: low nibble = low 4 bits of weight
 *         32p+4v+i, high nibble = of weight 32p+16+4v+i) and 2 high-bit vectors (vector h lane r byte i
 *         bits 2s, 2s+1 = the top 2 bits of weight 32p+16h+4s+i)
 * (a vector is 64 bytes: 16 lanes of 4 bytes).  Q4_K's unpacked scales and mins make its groups 2.8%
 * larger than the file's rows; every other layout keeps the size. */
#ifndef EDGELM_REPACK_H
#define EDGELM_REPACK_H

#include <stdint.h>

#include "ggml_types.h"

#define R16_ROWS 16
#define R16_VECTOR_BYTES 64
#define R16_CHUNKS 8 /* chunks of 4 weights in a block of 32 */
#define R16_NIBBLE_VECTORS 4
#define R16_HIGH_BYTES R16_VECTOR_BYTES /* Q5_x: the high bits of a block's 16 rows */

/* GF(2) affine byte maps (GFNI's gf2p8affine, one 64-bit matrix per byte lane) that the products use to
 * move bits into place: bit i of a result byte is the parity of (matrix byte 7-i & the source byte).
 *   R16_GF2_NIBBLE_DOWN       the high nibble down to bits 0-3 (result bit i <- bit i+4)
 *   R16_GF2_BIT_TO_4(c)       bit c alone, at bit 4 (a Q5 high bit next to its nibble)
 *   R16_GF2_BITS_TO_45(s)     bits 2s, 2s+1 alone, at bits 4, 5 (Q6_K's top bits next to their nibble) */
#define R16_GF2_NIBBLE_DOWN 0x1020408000000000LL
#define R16_GF2_BIT_TO_4(c) ((1LL << (c)) << 24)
#define R16_GF2_BITS_TO_45(s) (((1LL << (2 * (s))) << 24) | ((1LL << (2 * (s) + 1)) << 16))

#define R16_Q4_K_BYTES (2 * 32 + 8 * 16 + 4 * 32 + 4 * 8 * R16_VECTOR_BYTES)
#define R16_Q6_K_BYTES (32 + 8 * 32 + 8 * 6 * R16_VECTOR_BYTES)

/* Weight layouts a struct qmatrix may have. */
enum weight_layout { LAYOUT_ROWS = 0, LAYOUT_R16 = 1 };

/* Whether `type` has an R16 layout. */
int r16_has_layout(int type);

/* Bytes per row of a matrix of rows of k weights in the R16 layout (groups take 16 rows' worth). */
size_t r16_row_bytes(int type, int64_t k);

/* Repack groups [g0, g1) of a matrix (n_rows rows of k weights, file layout, at src) into the R16
 * layout at dst (the same number of bytes as src); 0, or -1 when the type has no R16 layout or
 * the shape does not fit it (n_rows a multiple of 16). */
int r16_repack(int type, const uint8_t *src, uint8_t *dst, int64_t n_rows, int64_t k, int64_t g0, int64_t g1);

#endif
