/* The R16 AVX-VNNI products for CPUs with GFNI too (Alder Lake, Gracemont and later). */
#define R16_GFNI 1
#include "r16_avxvnni.c"
