/* CPU feature detection and core counting. */
#define _GNU_SOURCE
#include "isa.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *const isa_names[ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

#if defined(__x86_64__) || defined(__i386__)
static bool x86_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

static bool x86_has_avx512(void) {
    __builtin_cpu_init();
    return x86_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
}
#endif

#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
static bool arm_has_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    return true; /* Apple silicon and other current AArch64 cores have it */
#endif
}
#endif

bool isa_has_avx_vnni(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return x86_has_avx2() && __builtin_cpu_supports("avxvnni");
#else
    return false;
#endif
}

bool isa_has_gfni(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("gfni");
#else
    return false;
#endif
}

bool isa_supported(enum isa isa) {
    switch (isa) {
    case ISA_SCALAR:
        return true;
#if defined(__x86_64__) || defined(__i386__)
    case ISA_AVX2:
        return x86_has_avx2();
    case ISA_AVX512:
        return x86_has_avx512();
#endif
#if defined(__aarch64__)
    case ISA_NEON:
        return arm_has_dotprod();
#endif
    default:
        return false;
    }
}

enum isa isa_best(void) {
    for (int i = ISA_COUNT - 1; i > ISA_SCALAR; i--)
        if (isa_supported((enum isa)i)) return (enum isa)i;
    return ISA_SCALAR;
}

int isa_from_name(const char *name) {
    for (int i = 0; i < ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

/* Reads one integer from a sysfs file; -1 when absent. */
static int read_int_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1) v = -1;
    fclose(f);
    return v;
}

int cpu_physical_cores(void) {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    const int n_logical = CPU_COUNT(&set);
    /* Count distinct (package, core) pairs among the CPUs we may run on: SMT siblings share a core,
     * and a second thread on a sibling only competes for the same SIMD units. */
    enum { MAX_CORES = 1024 };
    int seen[MAX_CORES][2];
    int n_cores = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && cpu < 4096; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        const int core = read_int_file(path);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        const int pkg = read_int_file(path);
        if (core < 0 || pkg < 0) return n_logical > 0 ? n_logical : 1;
        int known = 0;
        for (int i = 0; i < n_cores; i++)
            if (seen[i][0] == pkg && seen[i][1] == core) known = 1;
        if (!known && n_cores < MAX_CORES) {
            seen[n_cores][0] = pkg;
            seen[n_cores][1] = core;
            n_cores++;
        }
    }
    return n_cores > 0 ? n_cores : (n_logical > 0 ? n_logical : 1);
#else
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}
