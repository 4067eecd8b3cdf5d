#include "sampling.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

/* --- numpy's float32 exp ------------------------------------------------------------------------
 * numpy computes float32 exp with its own vector kernel on x86-64 CPUs with AVX2 and FMA (the
 * X86_V3 and X86_V4 builds of numpy/_core/src/umath/loops_exponent_log.dispatch.c.src), and with
 * the C library's expf elsewhere (aarch64 included). The kernel rounds differently from expf in
 * about half the cases, so the same choice is made here, and the kernel is redone one lane at a
 * time with numpy's constants: Cody-Waite reduction by ln 2, a Remez P5/Q2 rational, a scale by 2^k.
 * Every step is one float32 operation (FMAs as fmaf), so a lane's result is the kernel's exactly. */
#if defined(__x86_64__)
#define NPY_LN2_HIGH (-6.93145752e-1f)
#define NPY_LN2_LOW (-1.42860677e-6f)
#define NPY_RINT_MAGIC (0x1.800000p+23f)
#define NPY_LOG2E 1.442695040888963407359924681001892137F
static const float EXP_P[6] = {9.999999999980870924916e-01f, 7.257664613233124478488e-01f,
                               2.473615434895520810817e-01f, 5.114512081637298353406e-02f,
                               6.757896990527504603057e-03f, 5.082762527590693718096e-04f};
static const float EXP_Q[3] = {1.000000000000000000000e+00f, -2.742335390411667452936e-01f,
                               2.159509375685829852307e-02f};

__attribute__((target("fma"))) static float numpy_simd_expf(float x) {
    if (isnan(x))
        return x;
    if (x >= 88.72283935546875f)
        return INFINITY;
    if (x <= -103.97208404541015625f)
        return 0.0f;
    float k = x * NPY_LOG2E;
    k = (k + NPY_RINT_MAGIC) - NPY_RINT_MAGIC; /* round to nearest, in float32 */
    float y = fmaf(k, NPY_LN2_HIGH, x);
    y = fmaf(k, NPY_LN2_LOW, y);
    y = fmaf(k, 0.0f, y);
    float num = fmaf(EXP_P[5], y, EXP_P[4]);
    num = fmaf(num, y, EXP_P[3]);
    num = fmaf(num, y, EXP_P[2]);
    num = fmaf(num, y, EXP_P[1]);
    num = fmaf(num, y, EXP_P[0]);
    float den = fmaf(EXP_Q[2], y, EXP_Q[1]);
    den = fmaf(den, y, EXP_Q[0]);
    /* _mm512_scalef_ps, and the AVX2 kernel's exponent add or exact divide: one rounding, as ldexpf */
    return ldexpf(num / den, (int)k);
}

static int numpy_uses_simd_exp(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known;
}

float estella_numpy_expf(float x) { return numpy_uses_simd_exp() ? numpy_simd_expf(x) : expf(x); }
#else
float estella_numpy_expf(float x) { return expf(x); }
#endif

/* --- the sampler ---------------------------------------------------------------------------------- */

int estella_sampler_init(estella_sampler *s, double temperature, long long top_k, double top_p, int vocab_size) {
    /* runtime/sampling.py inverse_temperature: 1/T in float64, greedy if it does not fit a float32,
     * float32's smallest normal number if it rounds to 0 (an all but uniform draw, not greedy) */
    s->inv_temperature = (temperature == 0 || 1 / temperature > FLT_MAX) ? 0.0f : (float)(1 / temperature);
    if (temperature != 0 && 1 / temperature <= FLT_MAX && s->inv_temperature == 0.0f)
        s->inv_temperature = FLT_MIN;
    s->top_k = top_k;
    s->top_p = (float)top_p;
    s->vocab_size = vocab_size;
    s->x = malloc((size_t)vocab_size * sizeof *s->x);
    s->order = malloc((size_t)vocab_size * sizeof *s->order);
    s->cdf = malloc((size_t)vocab_size * sizeof *s->cdf);
    return s->x && s->order && s->cdf ? 0 : -1;
}

void estella_sampler_free(estella_sampler *s) {
    free(s->x);
    free(s->order);
    free(s->cdf);
    s->x = s->cdf = NULL;
    s->order = NULL;
}

int estella_sampler_draws(const estella_sampler *s) { return s->inv_temperature != 0.0f; }

/* numpy's argmax: the first maximum, or the first NaN where there is one. */
static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(v[i]))
            return i;
        if (v[i] > v[best])
            best = i;
    }
    return best;
}

/* _draw: how many cdf values are <= target (searchsorted side="right"), kept in range. */
static int draw(const float *cdf, int n, float target) {
    int count = 0;
    for (int i = 0; i < n; i++)
        count += cdf[i] <= target;
    return count < n - 1 ? count : n - 1;
}

/* argsort(kind="stable")[::-1]: likeliest first, and of equal ones the higher index first. */
static const float *sort_values;
static int likeliest_first(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_values[i] != sort_values[j])
        return sort_values[i] > sort_values[j] ? -1 : 1;
    return j - i;
}

int estella_sample(estella_sampler *s, const float *logits, double uniform) {
    int n = s->vocab_size;
    if (s->inv_temperature == 0.0f)
        return argmax(logits, n);
    float *x = s->x, top = -INFINITY;
    int nan = 0;
    for (int i = 0; i < n; i++) {
        x[i] = logits[i] * s->inv_temperature;
        nan |= isnan(x[i]);
        if (x[i] > top)
            top = x[i];
    }
    if (nan || !isfinite(top)) /* scaled logits that overflow: a one-hot softmax at the argmax */
        return argmax(logits, n);
    for (int i = 0; i < n; i++)
        x[i] -= top; /* an overflow to -inf is a probability of 0 */
    float u = (float)uniform; /* float32, as the cdf is float32 */
    if ((s->top_k == 0 || s->top_k >= n) && s->top_p >= 1) { /* a top_k past the vocabulary cuts nothing */
        float sum = 0;
        for (int i = 0; i < n; i++)
            x[i] = sum += estella_numpy_expf(x[i]); /* the cdf, summed in order in float32 (cumsum) */
        return draw(x, n, u * x[n - 1]);
    }
    int *order = s->order;
    for (int i = 0; i < n; i++)
        order[i] = i;
    sort_values = x;
    qsort(order, (size_t)n, sizeof *order, likeliest_first);
    int keep = s->top_k > 0 && s->top_k < n ? (int)s->top_k : n;
    float *sorted_cdf = s->cdf, sum = 0;
    for (int i = 0; i < n; i++) {
        float e = estella_numpy_expf(x[order[i]]);
        sorted_cdf[i] = sum += i < keep ? e : 0.0f;
    }
    int cut = keep;
    if (s->top_p < 1) {
        float reach = s->top_p * sorted_cdf[n - 1];
        cut = 1;
        for (int i = 0; i < n; i++)
            cut += sorted_cdf[i] < reach;
        if (cut > keep)
            cut = keep;
    }
    int picked = draw(sorted_cdf, n, u * sorted_cdf[cut - 1]);
    return order[picked < cut - 1 ? picked : cut - 1];
}
