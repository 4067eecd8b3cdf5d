/* One estella step graph (export/FORMAT.md) run through LiteRT's compiled-model C API on the CPU:
 * ids int32 [1, 1], state float32 [1, S] -> logits float32 [1, 1, V], new_state float32 [1, S].
 * The state row is opaque: S comes from the manifest and is only carried from one step to the next. */
#ifndef ESTELLA_STEP_H
#define ESTELLA_STEP_H

#include <stddef.h>

#include "litert_api.h"

typedef struct {
    LiteRtEnvironment env;
    LiteRtModel model;
    LiteRtOptions options;
    LiteRtCompiledModel compiled;
    LiteRtTensorBuffer inputs[2], outputs[2]; /* in the signature's order */
    int *ids;                                 /* [1]: the character fed next */
    float *state, *new_state;                 /* [S] */
    float *logits;                            /* [V]: the scores of the step just run */
    int vocab_size, state_size;
} estella_step;

/* Load the graph from its bytes (kept alive by the caller until estella_step_close) and check that
 * its signature is the step's with this V and S. name and path (the artifact's, from the manifest)
 * are for messages. Returns 0, or -1 with a message in err. */
int estella_step_open(estella_step *step, const void *model_bytes, size_t size, int vocab_size,
                      int state_size, const char *name, const char *path, char *err, size_t err_size);

/* Zero the state (the start of a text). */
void estella_step_reset(estella_step *step);

/* Feed one character id: step->logits holds its scores, and the state moves on. Returns 0 or -1. */
int estella_step_run(estella_step *step, int id, char *err, size_t err_size);

void estella_step_close(estella_step *step);

#endif
