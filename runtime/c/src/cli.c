/* estella-c EXPORT [--prime P] [--chars N] [--temperature T] [--top-k K] [--top-p P] [--seed S] ...
 *
 * `estella generate EXPORT ... --backend tflite` without Python: the same flags, checks, messages
 * (exit 2 on bad input) and, for a seed, the same text. The flags are read as argparse reads them
 * (--flag VALUE or --flag=VALUE, unique prefixes, Python's int() and float() syntax). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "manifest.h"
#include "rng.h"
#include "sampling.h"
#include "step.h"
#include "text.h"

#define PROG "estella-c"

enum { PRIME, CHARS, TEMPERATURE, TOP_K, TOP_P, SEED, BACKEND, PRECISION, STREAM, NUM_SAMPLES, STOP, STATS,
       VERBOSE, NO_ECHO, SKIP_UNKNOWN, THREADS, HELP, N_OPTIONS };

/* Every flag of `estella generate`, so that prefixes resolve as there; `supported` 0: refused here. */
static const struct {
    const char *name;
    int takes_value, supported;
} OPTIONS[N_OPTIONS] = {
    {"--prime", 1, 1}, {"--chars", 1, 1}, {"--temperature", 1, 1}, {"--top-k", 1, 1}, {"--top-p", 1, 1},
    {"--seed", 1, 1}, {"--backend", 1, 1}, {"--precision", 1, 1}, {"--stream", 0, 1}, {"--num-samples", 1, 0},
    {"--stop", 1, 0}, {"--stats", 0, 1}, {"--verbose", 0, 0}, {"--no-echo", 0, 1}, {"--skip-unknown", 0, 1},
    {"--threads", 1, 0}, {"--help", 0, 1},
};
static const char *const BACKENDS[] = {"auto", "tflite", "onnx", "numpy", "savedmodel", "tflm"};
static const char *const PRECISIONS[] = {"float32", "float", "int8", "int8-full"};

static const char *USAGE =
    "usage: " PROG " EXPORT [--prime P] [--chars N] [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "                 [--precision {float32,float,int8,int8-full}] [--no-echo] [--skip-unknown] [--stream] [--stats]\n";

static const char *HELP_TEXT =
    "\nWrite text with an exported model's TFLite step graph, through the LiteRT C library: the same\n"
    "text as `estella generate EXPORT ... --backend tflite` for the same flags and seed.\n\n"
    "  EXPORT               an export directory (estella export RUN --out DIR)\n"
    "  --prime P            the text to start from (default: none, which starts as at a new paragraph)\n"
    "  --chars N            characters to generate after the prime (default 500)\n"
    "  --temperature T      0 picks the likeliest character (default 1.0)\n"
    "  --top-k K            sample among the K likeliest characters\n"
    "  --top-p P            sample among the likeliest characters whose probability adds up to P\n"
    "  --seed S             seed for the sampler: the same seed gives the same text\n"
    "  --precision P        float32 (or float), int8, int8-full\n"
    "  --no-echo            do not print the prime\n"
    "  --skip-unknown       drop prime characters outside the vocabulary\n"
    "  --stream             print characters as they are produced\n"
    "  --stats              print chars/s and microseconds per character to stderr\n";

/* A refusal on stderr, exit code 2; its text may hold what an export or the user gave, so it is
 * written with control characters escaped (the Python CLI does the same). */
static int fail(const char *message) {
    estella_str shown = {0};
    estella_str_add(&shown, "");
    estella_printable(&shown, message);
    fprintf(stderr, PROG ": error: %s\n", shown.data);
    estella_str_free(&shown);
    return 2;
}

static int failf(estella_str *message) {
    int rc = fail(message->data);
    estella_str_free(message);
    return rc;
}

/* argparse's test for a negative number, which is a value and not a flag. */
static int negative_number(const char *s) {
    if (s[0] != '-')
        return 0;
    const char *p = s + 1;
    int before = 0, after = 0;
    while (isdigit((unsigned char)*p)) p++, before++;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) p++, after++;
        return *p == 0 && after > 0;
    }
    return *p == 0 && before > 0;
}

static int looks_like_flag(const char *s) {
    return s[0] == '-' && s[1] != 0 && !negative_number(s) && !strchr(s, ' ');
}

/* Python's str.strip() of ASCII whitespace, then digits with single underscores between them. */
static char *strip(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return strndup(s, n);
}

static int digits_with_underscores(const char **p, estella_str *out) {
    int n = 0;
    while (isdigit((unsigned char)**p) || (**p == '_' && n && isdigit((unsigned char)(*p)[1]))) {
        if (**p != '_') {
            estella_str_addf(out, "%c", **p);
            n++;
        }
        (*p)++;
    }
    return n;
}

/* int(text): the canonical decimal ("-12", "0"), or NULL if Python's int() refuses it. */
static char *python_int(const char *text) {
    char *s = strip(text);
    const char *p = s;
    int negative = *p == '-';
    if (*p == '+' || *p == '-') p++;
    estella_str digits = {0};
    estella_str_add(&digits, "");
    int n = digits_with_underscores(&p, &digits);
    char *result = NULL;
    if (n && *p == 0) {
        const char *d = digits.data;
        while (d[0] == '0' && d[1]) d++;
        estella_str canon = {0};
        estella_str_addf(&canon, "%s%s", negative && strcmp(d, "0") ? "-" : "", d);
        result = canon.data;
    }
    estella_str_free(&digits);
    free(s);
    return result;
}

/* float(text): 0 and the value, or -1 if Python's float() refuses it. */
static int python_float(const char *text, double *value) {
    char *s = strip(text);
    const char *p = s;
    estella_str clean = {0};
    estella_str_add(&clean, "");
    if (*p == '+' || *p == '-')
        estella_str_addf(&clean, "%c", *p++);
    int ok;
    if (strcasecmp(p, "inf") == 0 || strcasecmp(p, "infinity") == 0 || strcasecmp(p, "nan") == 0) {
        estella_str_add(&clean, p);
        ok = 1;
    } else {
        int whole = digits_with_underscores(&p, &clean), fraction = 0;
        if (*p == '.') {
            estella_str_add(&clean, ".");
            p++;
            fraction = digits_with_underscores(&p, &clean);
        }
        ok = whole + fraction > 0;
        if (ok && (*p == 'e' || *p == 'E')) {
            estella_str_add(&clean, "e");
            p++;
            if (*p == '+' || *p == '-')
                estella_str_addf(&clean, "%c", *p++);
            ok = digits_with_underscores(&p, &clean) > 0;
        }
        ok = ok && *p == 0;
    }
    if (ok)
        *value = strtod(clean.data, NULL);
    estella_str_free(&clean);
    free(s);
    return ok ? 0 : -1;
}

/* Whether a canonical decimal lies in [low, INT64_MAX] (low is 0 or 1): the Python runtime's
 * check_integer for chars, top_k and seed. */
static int in_int64(const char *canonical, int low) {
    if (canonical[0] == '-' || (low == 1 && strcmp(canonical, "0") == 0))
        return 0;
    size_t n = strlen(canonical);
    return n < 19 || (n == 19 && strcmp(canonical, "9223372036854775807") <= 0);
}

/* errors.py short_repr: a value's repr cut in the middle past 80 characters. */
static void add_short_repr(estella_str *m, const char *repr) {
    size_t n = strlen(repr);
    if (n <= 80)
        estella_str_add(m, repr);
    else
        estella_str_addf(m, "%.40s...%s (%zu characters)", repr, repr + n - 40, n);
}

/* "FLAG RULE, got VALUE", as SettingError words a setting for the CLI. */
static int refuse_int(const char *flag, const char *rule, const char *value) {
    estella_str m = {0};
    estella_str_addf(&m, "%s %s, got ", flag, rule);
    add_short_repr(&m, value);
    return failf(&m);
}

typedef struct {
    const char *export_dir, *prime, *precision;
    char *chars, *top_k, *seed; /* canonical decimals, NULL where not given */
    double temperature, top_p;
    int has_top_p, stream, stats, echo, skip_unknown;
} arguments;

static int bad_value(const char *flag, const char *type, const char *value) {
    estella_str m = {0};
    estella_str_addf(&m, "argument %s: invalid %s value: ", flag, type);
    estella_repr_utf8(&m, value);
    return failf(&m);
}

static int bad_choice(const char *flag, const char *value, const char *const *choices, int n) {
    estella_str m = {0};
    estella_str_addf(&m, "argument %s: invalid choice: ", flag);
    estella_repr_utf8(&m, value);
    estella_str_add(&m, " (choose from ");
    for (int i = 0; i < n; i++)
        estella_str_addf(&m, "%s'%s'", i ? ", " : "", choices[i]);
    estella_str_add(&m, ")");
    return failf(&m);
}

static int in(const char *value, const char *const *choices, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(value, choices[i]) == 0)
            return 1;
    return 0;
}

/* Returns -1 when parsed, else the exit code (0 for --help). */
static int parse(int argc, char **argv, arguments *a) {
    estella_str unrecognized = {0};
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (only_positional || !looks_like_flag(arg)) {
            if (!a->export_dir)
                a->export_dir = arg;
            else
                estella_str_addf(&unrecognized, "%s%s", unrecognized.len ? " " : "", arg);
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq && strncmp(arg, "--", 2) == 0 ? (size_t)(eq - arg) : strlen(arg);
        int found = -1, matches = 0;
        if (strcmp(arg, "-h") == 0)
            found = HELP, matches = 1;
        for (int o = 0; o < N_OPTIONS && found < 0; o++)
            if (strlen(OPTIONS[o].name) == len && strncmp(arg, OPTIONS[o].name, len) == 0)
                found = o, matches = 1;
        if (found < 0 && strncmp(arg, "--", 2) == 0) {
            estella_str could = {0};
            for (int o = 0; o < N_OPTIONS; o++)
                if (strncmp(arg, OPTIONS[o].name, len) == 0) {
                    estella_str_addf(&could, "%s%s", matches ? ", " : "", OPTIONS[o].name);
                    found = o;
                    matches++;
                }
            if (matches > 1) {
                estella_str m = {0};
                estella_str_addf(&m, "ambiguous option: %.*s could match %s", (int)len, arg, could.data);
                estella_str_free(&could);
                return failf(&m);
            }
            estella_str_free(&could);
        }
        if (found < 0) {
            estella_str_addf(&unrecognized, "%s%s", unrecognized.len ? " " : "", arg);
            continue;
        }
        const char *flag = found == HELP ? "-h/--help" : OPTIONS[found].name;
        const char *value = NULL;
        if (OPTIONS[found].takes_value) {
            if (eq && len < strlen(arg))
                value = eq + 1;
            else if (i + 1 < argc && !looks_like_flag(argv[i + 1]) && strcmp(argv[i + 1], "--") != 0)
                value = argv[++i];
            else {
                estella_str m = {0};
                estella_str_addf(&m, "argument %s: expected one argument", flag);
                return failf(&m);
            }
        } else if (eq && len < strlen(arg)) {
            estella_str m = {0};
            estella_str_addf(&m, "argument %s: ignored explicit argument ", flag);
            estella_repr_utf8(&m, eq + 1);
            return failf(&m);
        }
        switch (found) {
        case PRIME: a->prime = value; break;
        case CHARS:
            free(a->chars);
            if (!(a->chars = python_int(value))) return bad_value(flag, "int", value);
            break;
        case TOP_K:
            free(a->top_k);
            if (!(a->top_k = python_int(value))) return bad_value(flag, "int", value);
            break;
        case SEED:
            free(a->seed);
            if (!(a->seed = python_int(value))) return bad_value(flag, "int", value);
            break;
        case TEMPERATURE:
            if (python_float(value, &a->temperature) != 0) return bad_value(flag, "float", value);
            break;
        case TOP_P:
            if (python_float(value, &a->top_p) != 0) return bad_value(flag, "float", value);
            a->has_top_p = 1;
            break;
        case BACKEND:
            if (!in(value, BACKENDS, 6)) return bad_choice(flag, value, BACKENDS, 6);
            if (strcmp(value, "auto") != 0 && strcmp(value, "tflite") != 0) {
                estella_str m = {0};
                estella_str_addf(&m, PROG " runs the tflite backend only, got --backend %s "
                                 "(use `estella generate` for the others)", value);
                return failf(&m);
            }
            break;
        case PRECISION:
            if (!in(value, PRECISIONS, 4)) return bad_choice(flag, value, PRECISIONS, 4);
            a->precision = strcmp(value, "float") == 0 ? "float32" : value;
            break;
        case STREAM: a->stream = 1; break;
        case STATS: a->stats = 1; break;
        case NO_ECHO: a->echo = 0; break;
        case SKIP_UNKNOWN: a->skip_unknown = 1; break;
        case HELP:
            printf("%s%s", USAGE, HELP_TEXT);
            return 0;
        default: {
            estella_str m = {0};
            estella_str_addf(&m, "%s is not supported by " PROG " (use `estella generate`)", OPTIONS[found].name);
            return failf(&m);
        }
        }
    }
    if (!a->export_dir) {
        estella_str_free(&unrecognized);
        return fail("the following arguments are required: DIR");
    }
    if (unrecognized.len) {
        estella_str m = {0};
        estella_str_addf(&m, "unrecognized arguments: %s", unrecognized.data);
        estella_str_free(&unrecognized);
        return failf(&m);
    }
    return -1;
}

/* runtime/sampling.py check_settings, then the generator's checks, in the Python runtime's order. */
static int check_settings(const arguments *a) {
    estella_str m = {0};
    if (isnan(a->temperature) || a->temperature < 0 || isinf(a->temperature)) {
        estella_str_add(&m, "--temperature must be a finite number >= 0 (0 picks the likeliest character), got ");
        estella_repr_float(&m, a->temperature);
        return failf(&m);
    }
    if (a->top_k && !in_int64(a->top_k, 1))
        return refuse_int("--top-k", "must be an integer >= 1", a->top_k);
    if (a->has_top_p && !(a->top_p > 0 && a->top_p <= 1)) {
        estella_str_add(&m, "--top-p must be in (0, 1], got ");
        estella_repr_float(&m, a->top_p);
        return failf(&m);
    }
    if (!in_int64(a->chars, 0))
        return refuse_int("--chars", "must be an integer >= 0", a->chars);
    return -1;
}

/* The process's peak resident memory (VmHWM), in KiB, or -1 where /proc does not say. */
static long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kib;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void put(uint32_t cp, int flush) {
    char buf[4];
    fwrite(buf, 1, (size_t)estella_utf8_encode(cp, buf), stdout);
    if (flush)
        fflush(stdout);
}

/* runtime/generator.py encode: the prime's kept characters (cps, kept) and the ids to feed (ids,
 * n_ids: a newline for an empty prime); a refusal goes to m. Every unknown character is named,
 * sorted and once, unless --skip-unknown drops them. Returns the prime's length in characters. */
static size_t encode_prime(const estella_export *e, const char *prime, int skip_unknown, uint32_t *cps, size_t *kept,
                           int *ids, size_t *n_ids, estella_str *m) {
    uint32_t *unknown = malloc((strlen(prime) + 1) * sizeof *unknown);
    size_t n = estella_utf8_decode(prime, cps), n_unknown = 0;
    *kept = 0;
    for (size_t i = 0; i < n; i++) {
        int id = -1;
        for (int v = 0; v < e->vocab_size && id < 0; v++)
            if (e->vocab[v] == cps[i])
                id = v;
        if (id >= 0) {
            cps[*kept] = cps[i];
            ids[(*kept)++] = id;
            continue;
        }
        size_t at = 0; /* sorted(set(prime) - vocab) */
        while (at < n_unknown && unknown[at] < cps[i]) at++;
        if (at < n_unknown && unknown[at] == cps[i])
            continue;
        memmove(unknown + at + 1, unknown + at, (n_unknown - at) * sizeof *unknown);
        unknown[at] = cps[i];
        n_unknown++;
    }
    if (n_unknown && !skip_unknown) {
        estella_str_add(m, "--prime has characters that are not in the vocabulary: [");
        for (size_t i = 0; i < n_unknown; i++) {
            if (i)
                estella_str_add(m, ", ");
            estella_repr_str(m, &unknown[i], 1);
        }
        estella_str_add(m, "] (remove them, or skip them with --skip-unknown)");
    }
    free(unknown);
    *n_ids = *kept;
    if (!m->len && *kept == 0) { /* an empty prime starts from a newline, as at a new paragraph */
        for (int v = 0; v < e->vocab_size; v++)
            if (e->vocab[v] == '\n')
                ids[(*n_ids)++] = v;
        if (*n_ids == 0)
            estella_str_add(m, "--prime is empty (after skipping unknown characters) and the vocabulary has no "
                            "newline to start from; give a prime");
    }
    return n;
}

static int generate(const arguments *a) {
    estella_export e;
    char *error = NULL;
    if (estella_export_open(&e, a->export_dir, "tflite", a->precision, &error) != 0) {
        int rc = fail(error);
        free(error);
        return rc;
    }
    int rc = check_settings(a);
    if (rc >= 0) {
        estella_export_close(&e);
        return rc;
    }
    const char *prime = a->prime ? a->prime : "";
    uint32_t *cps = malloc((strlen(prime) + 1) * sizeof *cps);
    int *ids = malloc((strlen(prime) + 1) * sizeof *ids);
    size_t kept, n_ids;
    estella_str m = {0};
    size_t n = encode_prime(&e, prime, a->skip_unknown, cps, &kept, ids, &n_ids, &m); /* n: for --stats */
    if (!m.len && a->seed && !in_int64(a->seed, 0)) {
        estella_str_add(&m, "--seed must be an integer from 0 to 9223372036854775807, got ");
        add_short_repr(&m, a->seed);
    }
    estella_rng rng;
    estella_sampler sampler = {0};
    estella_step step = {0};
    char err[1024];
    if (!m.len && (a->seed ? estella_rng_seed_decimal(&rng, a->seed) : estella_rng_seed_random(&rng)) != 0)
        estella_str_add(&m, "cannot seed the random numbers");
    long long top_k = a->top_k ? strtoll(a->top_k, NULL, 10) : 0;
    if (!m.len && estella_sampler_init(&sampler, a->temperature, top_k,
                                       a->has_top_p ? a->top_p : 1.0, e.vocab_size) != 0)
        estella_str_add(&m, "out of memory");
    if (!m.len && estella_step_open(&step, e.model, e.model_size, e.vocab_size, e.state_size, e.artifact_name,
                                    e.artifact_path, err, sizeof err) != 0)
        estella_str_add(&m, err);
    if (m.len) {
        rc = failf(&m);
        goto done;
    }
    long long chars = strtoll(a->chars, NULL, 10), produced = 0;
    double start = now();
    if (a->echo)
        for (size_t i = 0; i < kept; i++)
            put(cps[i], a->stream);
    if (chars > 0) {
        for (size_t i = 0; i < n_ids && rc < 0; i++)
            if (estella_step_run(&step, ids[i], err, sizeof err) != 0)
                rc = fail(err);
        for (long long c = 0; c < chars && rc < 0; c++) {
            double u = estella_sampler_draws(&sampler) ? estella_rng_random(&rng) : 0.0;
            int id = estella_sample(&sampler, step.logits, u);
            put(e.vocab[id], a->stream);
            produced++;
            if (c + 1 < chars && estella_step_run(&step, id, err, sizeof err) != 0)
                rc = fail(err);
        }
    }
    if (rc >= 0)
        goto done;
    putchar('\n');
    if (fflush(stdout) != 0 || ferror(stdout)) {
        estella_str_addf(&m, "cannot write the text to standard output: %s", strerror(errno));
        rc = failf(&m);
        goto done;
    }
    double elapsed = now() - start;
    if (a->stats)
        fprintf(stderr, PROG " tflite %s: %lld chars in %.3f s, %.1f chars/s, %.1f µs/char "
                "(batch 1, prime %zu chars included in the time), peak RSS %.1f MiB\n", a->precision, produced,
                elapsed, elapsed > 0 ? produced / elapsed : 0.0, elapsed / (produced > 0 ? produced : 1) * 1e6, n,
                peak_rss_kib() / 1024.0);
    rc = 0;
done:
    estella_step_close(&step);
    estella_sampler_free(&sampler);
    estella_export_close(&e);
    free(cps);
    free(ids);
    return rc;
}

int main(int argc, char **argv) {
    arguments a = {.precision = "float32", .temperature = 1.0, .echo = 1};
    int rc = parse(argc, argv, &a);
    if (rc < 0) {
        if (!a.chars)
            a.chars = strdup("500");
        rc = generate(&a);
    }
    free(a.chars);
    free(a.top_k);
    free(a.seed);
    return rc;
}
