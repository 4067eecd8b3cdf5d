/* rng-check SEED N: the first N doubles of numpy's default_rng(SEED).random(), one per line as
 * hexadecimal floats (exact), for the tests to compare with numpy itself. */
#include <stdio.h>
#include <stdlib.h>

#include "rng.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: rng-check SEED N\n");
        return 2;
    }
    estella_rng rng;
    if (estella_rng_seed_decimal(&rng, argv[1]) != 0) {
        fprintf(stderr, "rng-check: SEED must be a decimal integer >= 0\n");
        return 2;
    }
    long n = strtol(argv[2], NULL, 10);
    for (long i = 0; i < n; i++)
        printf("%a\n", estella_rng_random(&rng));
    return 0;
}
