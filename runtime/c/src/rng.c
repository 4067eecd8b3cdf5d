#include "rng.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* numpy.random.SeedSequence: a pool of 4 uint32 words mixed from the entropy words, then
 * expanded into the generator's state words (uint32 arithmetic throughout). */
enum { POOL_SIZE = 4, XSHIFT = 16 };
static const uint32_t INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875;
static const uint32_t INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
static const uint32_t MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715;

static uint32_t hashmix(uint32_t value, uint32_t *hash_const) {
    value ^= *hash_const;
    *hash_const *= MULT_A;
    value *= *hash_const;
    value ^= value >> XSHIFT;
    return value;
}

static uint32_t mix(uint32_t x, uint32_t y) {
    uint32_t result = MIX_MULT_L * x - MIX_MULT_R * y;
    result ^= result >> XSHIFT;
    return result;
}

static void mix_entropy(uint32_t pool[POOL_SIZE], const uint32_t *entropy, size_t n) {
    uint32_t hash_const = INIT_A;
    for (size_t i = 0; i < POOL_SIZE; i++)
        pool[i] = hashmix(i < n ? entropy[i] : 0, &hash_const);
    for (size_t src = 0; src < POOL_SIZE; src++)
        for (size_t dst = 0; dst < POOL_SIZE; dst++)
            if (src != dst)
                pool[dst] = mix(pool[dst], hashmix(pool[src], &hash_const));
    for (size_t src = POOL_SIZE; src < n; src++)
        for (size_t dst = 0; dst < POOL_SIZE; dst++)
            pool[dst] = mix(pool[dst], hashmix(entropy[src], &hash_const));
}

static void generate_state(const uint32_t pool[POOL_SIZE], uint32_t *out, size_t n_words) {
    uint32_t hash_const = INIT_B;
    for (size_t i = 0; i < n_words; i++) {
        uint32_t value = pool[i % POOL_SIZE] ^ hash_const;
        hash_const *= MULT_B;
        value *= hash_const;
        value ^= value >> XSHIFT;
        out[i] = value;
    }
}

/* PCG64: a 128-bit LCG whose output is the XSL-RR permutation of the state after each step. */
#define PCG_MULT (((unsigned __int128)2549297995355413924ULL << 64) | 4865540595714422341ULL)

static void pcg_step(estella_rng *rng) { rng->state = rng->state * PCG_MULT + rng->inc; }

static unsigned __int128 u128(uint64_t high, uint64_t low) { return ((unsigned __int128)high << 64) | low; }

void estella_rng_seed_words(estella_rng *rng, const uint32_t *words, size_t n_words) {
    uint32_t pool[POOL_SIZE], state[8];
    mix_entropy(pool, words, n_words);
    generate_state(pool, state, 8);
    /* Four uint64 words, each two uint32 words little-endian: the initial state, then the stream. */
    uint64_t v[4];
    for (int i = 0; i < 4; i++)
        v[i] = (uint64_t)state[2 * i] | ((uint64_t)state[2 * i + 1] << 32);
    rng->state = 0;
    rng->inc = (u128(v[2], v[3]) << 1) | 1;
    pcg_step(rng);
    rng->state += u128(v[0], v[1]);
    pcg_step(rng);
}

int estella_rng_seed_decimal(estella_rng *rng, const char *digits) {
    size_t len = strlen(digits);
    if (len == 0)
        return -1;
    /* A decimal number of len digits needs at most len * log2(10) / 32 + 1 words. */
    size_t cap = len / 9 + 2, n = 1;
    uint32_t *words = calloc(cap, sizeof *words);
    if (!words)
        return -1;
    for (const char *c = digits; *c; c++) {
        if (*c < '0' || *c > '9') {
            free(words);
            return -1;
        }
        uint64_t carry = (uint64_t)(*c - '0');
        for (size_t i = 0; i < n; i++) {  /* words = words * 10 + digit */
            uint64_t v = (uint64_t)words[i] * 10 + carry;
            words[i] = (uint32_t)v;
            carry = v >> 32;
        }
        if (carry)
            words[n++] = (uint32_t)carry;
    }
    estella_rng_seed_words(rng, words, n);
    free(words);
    return 0;
}

int estella_rng_seed_random(estella_rng *rng) {
    uint32_t words[4];
    if (getrandom(words, sizeof words, 0) != (ssize_t)sizeof words)
        return -1;
    estella_rng_seed_words(rng, words, 4);
    return 0;
}

uint64_t estella_rng_next64(estella_rng *rng) {
    pcg_step(rng);
    uint64_t high = (uint64_t)(rng->state >> 64), low = (uint64_t)rng->state;
    unsigned rot = (unsigned)(rng->state >> 122);
    uint64_t x = high ^ low;
    return (x >> rot) | (x << ((64 - rot) & 63));
}

double estella_rng_random(estella_rng *rng) {
    return (double)(estella_rng_next64(rng) >> 11) * (1.0 / 9007199254740992.0);
}
