/* sample-check V TEMPERATURE TOP_K TOP_P: rows of V float32 logits then one float64 uniform (raw,
 * native byte order) on stdin -> one int32 id per row on stdout, by estella-c's sampler, for the
 * tests to compare with the Python runtime's Sampler on the same rows and uniforms. */
#include <stdio.h>
#include <stdlib.h>

#include "sampling.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: sample-check V TEMPERATURE TOP_K TOP_P\n");
        return 2;
    }
    int v = atoi(argv[1]);
    estella_sampler sampler;
    if (v < 1 || estella_sampler_init(&sampler, strtod(argv[2], NULL), atoll(argv[3]), strtod(argv[4], NULL), v) != 0)
        return 2;
    float *logits = malloc((size_t)v * sizeof *logits);
    double uniform;
    while (fread(logits, sizeof *logits, (size_t)v, stdin) == (size_t)v && fread(&uniform, sizeof uniform, 1, stdin) == 1) {
        int id = estella_sample(&sampler, logits, uniform);
        fwrite(&id, sizeof id, 1, stdout);
    }
    free(logits);
    estella_sampler_free(&sampler);
    return 0;
}
