/* Elementwise ops, RMSNorm and attention pieces for any CPU: the template over plain floats. */
#include <math.h>

#include "isa_kernels.h"

#define SUFFIX(name) name##_scalar
typedef float VF;
#define VLEN 1
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSET1(f) (f)
#define VADD(a, b) ((a) + (b))
#define VSUB(a, b) ((a) - (b))
#define VMUL(a, b) ((a) * (b))
#define VDIV(a, b) ((a) / (b))
#define VMIN(a, b) fminf(a, b)
#define VMAX(a, b) fmaxf(a, b)
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VREDUCE_ADD(v) (v)
#define VREDUCE_MAX(v) (v)
#define VLOAD_F16(p) f16_to_f32(*(p))
#define VROUND_F16(v) round_f16(v)
#define vexp(v) expf(v)

static double sum_squares_f64(const float *x, int64_t n) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    return sum;
}

#include "ops_simd.inc"
