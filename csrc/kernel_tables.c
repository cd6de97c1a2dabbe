/* One kernel table per ISA, gathered from the ISA files. */
#include "isa_kernels.h"

#define COMMON_ENTRIES(S)                                                                              \
    .quantize_q8_0 = quantize_q8_0_##S, .quantize_q8_K = quantize_q8_K_##S,                           \
    .dot_rows =                                                                                        \
        {                                                                                              \
            [GGML_TYPE_F32] = rows_f32_##S,   [GGML_TYPE_F16] = rows_f16_##S,                         \
            [GGML_TYPE_BF16] = rows_bf16_##S, [GGML_TYPE_Q8_0] = rows_q8_0_##S,                       \
            [GGML_TYPE_Q4_0] = rows_q4_0_##S, [GGML_TYPE_Q4_1] = rows_q4_1_##S,                       \
            [GGML_TYPE_Q5_0] = rows_q5_0_##S, [GGML_TYPE_Q5_1] = rows_q5_1_##S,                       \
            [GGML_TYPE_Q4_K] = rows_q4_K_##S, [GGML_TYPE_Q5_K] = rows_q5_K_##S,                       \
            [GGML_TYPE_Q6_K] = rows_q6_K_##S,                                                          \
        },                                                                                             \
    .silu = silu_##S, .gelu_tanh = gelu_tanh_##S, .silu_mul = silu_mul_##S,                           \
    .gelu_tanh_mul = gelu_tanh_mul_##S, .rms_norm = rms_norm_##S, .scores_f16 = scores_f16_##S,       \
    .weighted_sum_f16 = weighted_sum_f16_##S, .softmax_round_f16 = softmax_round_f16_##S,             \
    .scores_group_f16 = scores_group_f16_##S, .weighted_sum_group_f16 = weighted_sum_group_f16_##S,   \
    .softmax_stats = softmax_stats_##S, .softmax_apply_f16 = softmax_apply_f16_##S,                   \
    .round_f16 = round_f16_##S

const struct kernel_table kernels_scalar = {.isa = ISA_SCALAR, COMMON_ENTRIES(scalar)};

#if defined(__x86_64__) || defined(__i386__)
const struct kernel_table kernels_avx2 = {.isa = ISA_AVX2, COMMON_ENTRIES(avx2)};

#define R16_TYPES(fn)                                                                                  \
    [GGML_TYPE_Q8_0] = fn, [GGML_TYPE_Q4_0] = fn, [GGML_TYPE_Q4_1] = fn, [GGML_TYPE_Q5_0] = fn,         \
    [GGML_TYPE_Q5_1] = fn, [GGML_TYPE_Q4_K] = fn, [GGML_TYPE_Q6_K] = fn

/* AVX2 where the CPU has AVX-VNNI too: the same kernels, and the R16 products in 256-bit VNNI
 * (built with GFNI too, for the CPUs that have it: all AVX-VNNI ones so far). */
#define AVX2_VNNI_TABLE(r16_fn) {.isa = ISA_AVX2, COMMON_ENTRIES(avx2), .r16 = {R16_TYPES(r16_fn)}}
const struct kernel_table kernels_avx2_vnni = AVX2_VNNI_TABLE(r16_groups_avxvnni);
static const struct kernel_table kernels_avx2_vnni_gfni = AVX2_VNNI_TABLE(r16_groups_avxvnni_gfni);

/* Below this many tokens the streaming kernels beat unpacking a weight panel first (measured on
 * Zen 5 with 4864 x 896 matrices: even at 8 tokens, better from 12). */
#define AVX512_GEMM_MIN_TOKENS 12

/* The K-quants stay on their streaming kernels at any token count: those fold the sub-block scales
 * into integer multiply-adds, which beats the panel's float scaling. */
#define AVX512_TABLE(r16_fn)                                                                            \
    {                                                                                                   \
        .isa = ISA_AVX512, COMMON_ENTRIES(avx512),                                                      \
        .gemm = {[GGML_TYPE_Q8_0] = gemm_avx512, [GGML_TYPE_Q4_0] = gemm_avx512,                        \
                 [GGML_TYPE_Q4_1] = gemm_avx512, [GGML_TYPE_Q5_0] = gemm_avx512,                        \
                 [GGML_TYPE_Q5_1] = gemm_avx512},                                                       \
        .gemm_min_tokens = AVX512_GEMM_MIN_TOKENS, .r16 = {R16_TYPES(r16_fn)},                          \
    }

const struct kernel_table kernels_avx512 = AVX512_TABLE(r16_groups_avx512);
/* AVX-512 where the CPU has GFNI too: the R16 products unpack nibbles with one op fewer (Q5_0 of a
 * Qwen2.5-0.5B decode step ~7% faster, measured on Sapphire Rapids). */
static const struct kernel_table kernels_avx512_gfni = AVX512_TABLE(r16_groups_avx512_gfni);
#endif

#if defined(__aarch64__)
const struct kernel_table kernels_neon = {.isa = ISA_NEON, COMMON_ENTRIES(neon)};
#endif

const struct kernel_table *kernels_for_isa(enum isa isa) {
    if (!isa_supported(isa)) return NULL;
    switch (isa) {
    case ISA_SCALAR: return &kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
    case ISA_AVX2:
        if (!isa_has_avx_vnni()) return &kernels_avx2;
        return isa_has_gfni() ? &kernels_avx2_vnni_gfni : &kernels_avx2_vnni;
    case ISA_AVX512: return isa_has_gfni() ? &kernels_avx512_gfni : &kernels_avx512;
#endif
#if defined(__aarch64__)
    case ISA_NEON: return &kernels_neon;
#endif
    default: return NULL;
    }
}
