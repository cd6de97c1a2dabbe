/* Cross-ISA self-test of the kernels without Python: every ISA this CPU runs against the scalar
 * kernels, on random data.  Built and run by run_selftest.sh, natively or under qemu for AArch64.
 * The Python tests (tests/test_native_kernels.py) hold the scalar kernels to the NumPy reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../edgelm_ops.h"
#include "../fp16.h"
#include "../repack.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t next_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float next_normal(void) { /* sum of uniforms: shape does not matter here */
    float s = 0.0f;
    for (int i = 0; i < 4; i++) s += (float)(next_u32() & 0xFFFF) / 65536.0f - 0.5f;
    return s;
}

/* Random packed rows with modest f16 scales in every scale field. */
static void fill_weights(int type, uint8_t *data, int64_t n_rows, int64_t k) {
    const size_t ts = ggml_type_size(type);
    const int64_t n_blocks = n_rows * k / ggml_block_size(type);
    for (int64_t i = 0; i < n_blocks; i++) {
        uint8_t *b = data + i * ts;
        for (size_t j = 0; j < ts; j++) b[j] = (uint8_t)next_u32();
        uint16_t h;
        switch (type) {
        case GGML_TYPE_F32: {
            const float f = next_normal();
            memcpy(b, &f, 4);
            continue;
        }
        case GGML_TYPE_F16: h = f32_to_f16(next_normal()); memcpy(b, &h, 2); continue;
        case GGML_TYPE_BF16: h = (uint16_t)(f32_bits(next_normal()) >> 16); memcpy(b, &h, 2); continue;
        default: break;
        }
        size_t offsets[2] = {0, 2};
        int n_off = 1;
        if (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1 || type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q5_K) n_off = 2;
        if (type == GGML_TYPE_Q6_K || type == GGML_TYPE_Q3_K) offsets[0] = ts - 2;
        if (type == GGML_TYPE_Q2_K) offsets[0] = ts - 4, offsets[1] = ts - 2, n_off = 2;
        for (int o = 0; o < n_off; o++) {
            h = f32_to_f16(0.05f * next_normal());
            memcpy(b + offsets[o], &h, 2);
        }
    }
}

static int failures = 0;

static void check_close(const char *what, const char *isa, const float *got, const float *want, int64_t n, float tol) {
    float scale = 0.0f, worst = 0.0f;
    for (int64_t i = 0; i < n; i++) scale = fmaxf(scale, fabsf(want[i]));
    for (int64_t i = 0; i < n; i++) worst = fmaxf(worst, fabsf(got[i] - want[i]));
    const int ok = worst <= tol * (scale > 0 ? scale : 1.0f);
    if (!ok) failures++;
    printf("%-7s %-28s max err %.3g of %.3g %s\n", isa, what, worst, scale, ok ? "ok" : "FAIL");
}

/* A product with weights repacked into the R16 layout by ctx, against the scalar product of the file's rows. */
static void check_r16(const struct edgelm_ctx *scalar, const struct edgelm_ctx *ctx, const char *isa, int type,
                      const char *type_name, int64_t k) {
    const int64_t rows16 = 48;
    const size_t row_bytes = (size_t)(k / ggml_block_size(type)) * ggml_type_size(type);
    const size_t packed_row = r16_row_bytes(type, k);
    uint8_t *src = malloc(row_bytes * rows16), *packed = malloc(packed_row * rows16);
    fill_weights(type, src, rows16, k);
    const struct qmatrix wf = {src, type, rows16, k, row_bytes, LAYOUT_ROWS};
    const struct qmatrix wp = {packed, type, rows16, k, packed_row, LAYOUT_R16};
    edgelm_repack_r16(ctx, type, src, packed, rows16, k, 0, rows16 / R16_ROWS);
    for (int64_t n_tok = 1; n_tok <= 21; n_tok += 10) {
        float *x = malloc(sizeof(float) * n_tok * k), *y = malloc(sizeof(float) * n_tok * rows16),
              *ref = malloc(sizeof(float) * n_tok * rows16);
        for (int64_t i = 0; i < n_tok * k; i++) x[i] = next_normal();
        edgelm_matmul(scalar, &wf, x, n_tok, ref);
        edgelm_matmul(ctx, &wp, x, n_tok, y);
        char what[64];
        snprintf(what, sizeof what, "matmul R16 %s T=%lld", type_name, (long long)n_tok);
        check_close(what, isa, y, ref, n_tok * rows16, 2e-5f);
        free(x), free(y), free(ref);
    }
    free(src), free(packed);
}

int main(void) {
    static const int types[] = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
                                GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K,
                                GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
    static const char *type_names[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0",
                                       "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
    const int64_t n_rows = 37, k = 512;
    struct edgelm_ctx scalar = {&kernels_scalar, pool_create(2)};
    for (int isa = ISA_SCALAR + 1; isa < ISA_COUNT; isa++) {
        const struct kernel_table *kt = kernels_for_isa((enum isa)isa);
        if (!kt) continue;
        struct edgelm_ctx ctx = {kt, pool_create(2)};
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const int type = types[ti];
            const size_t row_bytes = (size_t)(k / ggml_block_size(type)) * ggml_type_size(type);
            uint8_t *data = malloc(row_bytes * n_rows);
            fill_weights(type, data, n_rows, k);
            const struct qmatrix w = {data, type, n_rows, k, row_bytes};
            for (int64_t n_tok = 1; n_tok <= 21; n_tok += 10) {
                float *x = malloc(sizeof(float) * n_tok * k), *y = malloc(sizeof(float) * n_tok * n_rows),
                      *ref = malloc(sizeof(float) * n_tok * n_rows);
                for (int64_t i = 0; i < n_tok * k; i++) x[i] = next_normal();
                edgelm_matmul(&scalar, &w, x, n_tok, ref);
                edgelm_matmul(&ctx, &w, x, n_tok, y);
                char what[64];
                snprintf(what, sizeof what, "matmul %s T=%lld", type_names[ti], (long long)n_tok);
                check_close(what, isa_names[isa], y, ref, n_tok * n_rows, 2e-5f);
                free(x), free(y), free(ref);
            }
            free(data);
            /* the same product with the weights repacked, where this ISA reads the R16 layout */
            if (kt->r16[type]) check_r16(&scalar, &ctx, isa_names[isa], type, type_names[ti], k);
        }
        /* unary ops and RMSNorm */
        enum { N = 1003 };
        float x[N], u[N], want[N], got[N], w[N];
        for (int i = 0; i < N; i++) x[i] = 8.0f * next_normal(), u[i] = next_normal(), w[i] = next_normal();
        for (int op = UNARY_SILU; op <= UNARY_GELU_TANH; op++) {
            edgelm_unary(&scalar, op, x, u, want, N);
            edgelm_unary(&ctx, op, x, u, got, N);
            check_close(op == UNARY_SILU ? "silu_mul" : "gelu_tanh_mul", isa_names[isa], got, want, N, 1e-6f);
        }
        edgelm_rms_norm(&scalar, x, w, want, 1, N, 1e-6f);
        edgelm_rms_norm(&ctx, x, w, got, 1, N, 1e-6f);
        check_close("rms_norm", isa_names[isa], got, want, N, 1e-6f);
        /* attention: 3 queries, 40 keys, 4 heads over 2 kv heads of width 64 */
        enum { T = 3, S = 40, H = 4, KVH = 2, D = 64 };
        static float q[T * H * D], out[T * H * D], out_ref[T * H * D];
        static uint16_t kc[S * KVH * D], vc[S * KVH * D];
        int64_t q_pos[T], k_pos[S];
        for (int i = 0; i < T * H * D; i++) q[i] = next_normal();
        for (int i = 0; i < S * KVH * D; i++) kc[i] = f32_to_f16(next_normal()), vc[i] = f32_to_f16(next_normal());
        for (int i = 0; i < S; i++) k_pos[i] = i;
        for (int i = 0; i < T; i++) q_pos[i] = S - T + i;
        struct attention_args aa = {q, kc, vc, q_pos, k_pos, out_ref, T, S, H, KVH, D, D, 0.125f, 0};
        edgelm_attention(&scalar, &aa);
        aa.out = out;
        edgelm_attention(&ctx, &aa);
        check_close("attention", isa_names[isa], out, out_ref, T * H * D, 2e-3f);
        /* decode: one query over enough keys that they split into blocks across the threads */
        enum { SD = 1000, HD = 6 };
        static float qd[HD * D], outd[HD * D], outd_ref[HD * D];
        static uint16_t kd[SD * KVH * D], vd[SD * KVH * D];
        static int64_t kd_pos[SD];
        const int64_t qd_pos = SD - 1;
        for (int i = 0; i < HD * D; i++) qd[i] = next_normal();
        for (int i = 0; i < SD * KVH * D; i++) kd[i] = f32_to_f16(next_normal()), vd[i] = f32_to_f16(next_normal());
        for (int i = 0; i < SD; i++) kd_pos[i] = i;
        struct attention_args ad = {qd, kd, vd, &qd_pos, kd_pos, outd_ref, 1, SD, HD, KVH, D, D, 0.125f, 0};
        edgelm_attention(&scalar, &ad);
        ad.out = outd;
        edgelm_attention(&ctx, &ad);
        check_close("attention decode", isa_names[isa], outd, outd_ref, HD * D, 2e-3f);
        pool_destroy(ctx.pool);
    }
#if defined(__x86_64__) || defined(__i386__)
    /* the products without GFNI, which a CPU with GFNI passes over for their GFNI builds */
    const struct {
        const struct kernel_table *kt;
        const char *name;
        int runs;
    } plain[] = {{&kernels_avx512, "no-gfni", isa_supported(ISA_AVX512)},
                 {&kernels_avx2_vnni, "vnni256", isa_supported(ISA_AVX2) && isa_has_avx_vnni()}};
    for (size_t p = 0; p < sizeof plain / sizeof plain[0]; p++) {
        if (!plain[p].runs || !isa_has_gfni()) continue;
        struct edgelm_ctx ctx = {plain[p].kt, pool_create(2)};
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            if (plain[p].kt->r16[types[ti]]) check_r16(&scalar, &ctx, plain[p].name, types[ti], type_names[ti], 512);
        pool_destroy(ctx.pool);
    }
#endif
    pool_destroy(scalar.pool);
    printf(failures ? "%d FAILED\n" : "all passed\n", failures);
    return failures != 0;
}
