/* Prototypes of the functions each ISA file defines, named with the ISA as suffix; kernel_tables.c
 * gathers them into one kernel_table per ISA. */
#ifndef EDGELM_ISA_KERNELS_H
#define EDGELM_ISA_KERNELS_H

#include "kernels.h"

#define ROWS_PROTO(type, S) \
    void rows_##type##_##S(const struct matmul_args *m, int64_t r0, int64_t r1, int64_t t0, int64_t t1);

#define DECLARE_ISA_KERNELS(S)                                                                      \
    ROWS_PROTO(q8_0, S) ROWS_PROTO(q4_0, S) ROWS_PROTO(q4_1, S) ROWS_PROTO(q5_0, S)               \
    ROWS_PROTO(q5_1, S) ROWS_PROTO(q4_K, S) ROWS_PROTO(q5_K, S) ROWS_PROTO(q6_K, S)               \
    ROWS_PROTO(f32, S) ROWS_PROTO(f16, S) ROWS_PROTO(bf16, S)                                     \
    void quantize_q8_0_##S(const float *x, int64_t k, int8_t *q, float *d, float *s);            \
    void quantize_q8_K_##S(const float *x, int64_t k, int8_t *q, float *d, int16_t *bsums);      \
    void silu_##S(const float *x, float *y, int64_t n);                                          \
    void gelu_tanh_##S(const float *x, float *y, int64_t n);                                     \
    void silu_mul_##S(const float *g, const float *u, float *y, int64_t n);                      \
    void gelu_tanh_mul_##S(const float *g, const float *u, float *y, int64_t n);                 \
    void rms_norm_##S(const float *x, const float *w, float *y, int64_t n, float eps);           \
    void scores_f16_##S(const float *q, const uint16_t *k, int64_t stride, int64_t n, int64_t d, \
                        float scale, float *out);                                                \
    void weighted_sum_f16_##S(const float *p, const uint16_t *v, int64_t stride, int64_t n,      \
                              int64_t d, float *y);                                              \
    void weighted_sum_group_f16_##S(const float *p, int64_t p_stride, int64_t n_q, const uint16_t *v, \
                                    int64_t stride, int64_t n, int64_t d, float *y, int64_t y_stride); \
    void softmax_round_f16_##S(float *x, int64_t n);                                             \
    void scores_group_f16_##S(const float *q, int64_t n_q, const uint16_t *k, int64_t stride,    \
                              int64_t n, int64_t d, float scale, float *out, int64_t out_stride); \
    void softmax_stats_##S(const float *x, int64_t n, float *max_out, float *sum_out);           \
    void softmax_apply_f16_##S(float *x, int64_t n, float max, float sum);                       \
    void round_f16_##S(const float *x, float *y, int64_t n);

DECLARE_ISA_KERNELS(scalar)
#if defined(__x86_64__) || defined(__i386__)
DECLARE_ISA_KERNELS(avx2)
DECLARE_ISA_KERNELS(avx512)
int gemm_avx512(struct exec *ex, const struct matmul_args *m);
void r16_groups_avx512(const struct matmul_args *m, int64_t g0, int64_t g1);
void r16_groups_avx512_gfni(const struct matmul_args *m, int64_t g0, int64_t g1);
void r16_groups_avxvnni(const struct matmul_args *m, int64_t g0, int64_t g1);
void r16_groups_avxvnni_gfni(const struct matmul_args *m, int64_t g0, int64_t g1);
#endif
#if defined(__aarch64__)
DECLARE_ISA_KERNELS(neon)
#endif

#endif
