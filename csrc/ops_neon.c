/* Elementwise ops, RMSNorm and attention pieces with AArch64 NEON (4 floats per vector). */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

#include "isa_kernels.h"

#define SUFFIX(name) name##_neon
typedef float32x4_t VF;
#define VLEN 4
#define VLOAD(p) vld1q_f32(p)
#define VSTORE(p, v) vst1q_f32(p, v)
#define VSET1(f) vdupq_n_f32(f)
#define VADD vaddq_f32
#define VSUB vsubq_f32
#define VMUL vmulq_f32
#define VDIV vdivq_f32
#define VMIN vminq_f32
#define VMAX vmaxq_f32
#define VFMA(a, b, c) vfmaq_f32(c, a, b)
#define VREDUCE_ADD(v) vaddvq_f32(v)
#define VREDUCE_MAX(v) vmaxvq_f32(v)
#define VLOAD_F16(p) vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)))
#define VROUND_F16(v) vcvt_f32_f16(vcvt_f16_f32(v))

/* exp as in ops_avx2.c: degree-6 polynomial on [-ln2/2, ln2/2], 0 below the smallest normal result. */
#define EXP_LOWEST -87.33654f
#define EXP_HIGHEST 88.7f
static inline float32x4_t vexp(float32x4_t x) {
    const uint32x4_t too_small = vcltq_f32(x, vdupq_n_f32(EXP_LOWEST));
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EXP_LOWEST)), vdupq_n_f32(EXP_HIGHEST));
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
    y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, r);
    y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, r);
    y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, r);
    y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, r);
    y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, r);
    y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), y, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    const float32x4_t result = vmulq_f32(y, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(result), too_small));
}

static double sum_squares_f64(const float *x, int64_t n) {
    float64x2_t acc0 = vdupq_n_f64(0.0), acc1 = vdupq_n_f64(0.0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float32x4_t sq = vmulq_f32(v, v);
        acc0 = vaddq_f64(acc0, vcvt_f64_f32(vget_low_f32(sq)));
        acc1 = vaddq_f64(acc1, vcvt_high_f64_f32(sq));
    }
    double sum = vaddvq_f64(vaddq_f64(acc0, acc1));
    for (; i < n; i++) sum += (double)(x[i] * x[i]);
    return sum;
}

#define WSUM_GROUP_HEADS 8 /* 32 vector registers */
#include "ops_simd.inc"

#endif
