/* Instruction sets the kernels are compiled for, and which of them this CPU runs.
 *
 * One build carries every ISA: the SIMD code sits in functions compiled with a target attribute (or a
 * target pragma per file), and a kernel table is picked once, when a Kernels object is made. */
#ifndef EDGELM_ISA_H
#define EDGELM_ISA_H

#include <stdbool.h>

enum isa {
    ISA_SCALAR = 0,
    ISA_AVX2,   /* AVX2 + FMA + F16C (Haswell, Zen 1 and later) */
    ISA_AVX512, /* AVX-512 F/BW/VL/DQ + VNNI (Ice Lake, Zen 4 and later) */
    ISA_NEON,   /* AArch64 Advanced SIMD with the dot-product extension */
    ISA_COUNT,
};

extern const char *const isa_names[ISA_COUNT];

/* Whether the running CPU can execute code built for `isa` (and the build contains it). */
bool isa_supported(enum isa isa);

/* x86: whether the CPU has AVX-VNNI (VEX-encoded VNNI: Alder Lake, Gracemont and later). */
bool isa_has_avx_vnni(void);
/* x86: whether the CPU has GFNI (Galois-field byte maps), which the R16 products use where present. */
bool isa_has_gfni(void);

/* The fastest supported ISA. */
enum isa isa_best(void);

/* Look an ISA up by name; -1 when unknown. */
int isa_from_name(const char *name);

/* Physical cores this process may run on (logical CPUs when the topology is unknown). */
int cpu_physical_cores(void);

#endif
