/* numpy's default_rng(seed).random(), bit for bit: SeedSequence -> PCG64 (XSL-RR) -> 53-bit doubles.
 *
 * Written from the published definitions (M. E. O'Neill's PCG paper and numpy's SeedSequence
 * documentation), so that a seed gives the same text here as in the Python runtime. */
#ifndef ESTELLA_RNG_H
#define ESTELLA_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    unsigned __int128 state;
    unsigned __int128 inc;
} estella_rng;

/* Seed from an integer given as little-endian 32-bit words (numpy splits a Python int the same way);
 * n_words >= 1 (the seed 0 is one word 0). */
void estella_rng_seed_words(estella_rng *rng, const uint32_t *words, size_t n_words);

/* Seed from a decimal string of digits (any length numpy takes). Returns 0, or -1 if it is not one. */
int estella_rng_seed_decimal(estella_rng *rng, const char *digits);

/* Seed from 128 bits of the operating system's entropy (numpy's default_rng(None)). Returns 0 or -1. */
int estella_rng_seed_random(estella_rng *rng);

uint64_t estella_rng_next64(estella_rng *rng);

/* A double in [0, 1): Generator.random(). */
double estella_rng_random(estella_rng *rng);

#endif
