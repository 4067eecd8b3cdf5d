/* The Python runtime's sampling rule (runtime/sampling.py), float for float, for one stream:
 * temperature 0 (or so small that 1/T overflows float32) is greedy; otherwise softmax(logits / T),
 * cut to the top_k likeliest characters, then to the smallest set whose mass reaches top_p of
 * theirs, drawn with one uniform number in [0, 1). */
#ifndef ESTELLA_SAMPLING_H
#define ESTELLA_SAMPLING_H

typedef struct {
    float inv_temperature; /* float32 1/T (at least FLT_MIN); 0: greedy */
    long long top_k;       /* 0 (or >= V): no cut */
    float top_p;           /* float32, as numpy compares it; >= 1: no cut */
    int vocab_size;
    float *x;              /* [V] scratch: scaled logits, then their exp and cumulative sums */
    int *order;            /* [V] scratch: ids likeliest first */
    float *cdf;            /* [V] scratch: the cumulative sums in that order */
} estella_sampler;

/* temperature (finite, >= 0), top_k (0: none), top_p (1: none) as the CLI checked them.
 * Returns 0, or -1 when out of memory. */
int estella_sampler_init(estella_sampler *s, double temperature, long long top_k, double top_p, int vocab_size);
void estella_sampler_free(estella_sampler *s);

/* Whether a character draws a uniform number (only greedy sampling draws none). */
int estella_sampler_draws(const estella_sampler *s);

/* The id for one row of logits [V]; uniform is ignored where the sampler is greedy. */
int estella_sample(estella_sampler *s, const float *logits, double uniform);

/* numpy's float32 exp on this machine: its AVX2/AVX-512 kernel where numpy would run it (x86-64 with
 * AVX2 and FMA), the C library's expf elsewhere. Exposed for the tests. */
float estella_numpy_expf(float x);

#endif
