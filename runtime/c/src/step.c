#include "step.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { IDS, STATE };        /* input roles */
enum { LOGITS, NEW_STATE }; /* output roles */

typedef struct {
    const char *name;
    LiteRtElementType type;
    int rank;
    int dims[3]; /* -1: the vocabulary size, -2: the state size */
} tensor_spec;

static const tensor_spec INPUT_SPECS[2] = {
    {"ids", kLiteRtElementTypeInt32, 2, {1, 1}},
    {"state", kLiteRtElementTypeFloat32, 2, {1, -2}},
};
static const tensor_spec OUTPUT_SPECS[2] = {
    {"logits", kLiteRtElementTypeFloat32, 3, {1, 1, -1}},
    {"new_state", kLiteRtElementTypeFloat32, 2, {1, -2}},
};

static void *aligned_floats(size_t count, size_t *bytes) {
    size_t align = LITERT_HOST_MEMORY_BUFFER_ALIGNMENT;
    *bytes = (count * 4 + align - 1) / align * align;
    void *p = aligned_alloc(align, *bytes);
    if (p)
        memset(p, 0, *bytes);
    return p;
}

/* Check one tensor of the signature against its spec, then give it host memory of its own. */
static int bind(estella_step *s, LiteRtTensor tensor, const tensor_spec *spec, void **memory,
                LiteRtTensorBuffer *buffer, const char *name, const char *path, char *err, size_t n) {
    LiteRtRankedTensorType type;
    if (LiteRtGetRankedTensorType(tensor, &type) != kLiteRtStatusOk) {
        snprintf(err, n, "artifact '%s' (%s) is not an estella step graph: %s has no fixed rank; re-export it",
                 name, path, spec->name);
        return -1;
    }
    size_t elements = 1;
    int ok = type.element_type == spec->type && (int)type.layout.rank == spec->rank;
    for (int d = 0; ok && d < spec->rank; d++) {
        int want = spec->dims[d] == -1 ? s->vocab_size : spec->dims[d] == -2 ? s->state_size : spec->dims[d];
        /* A dynamic dimension (< 0) of size 1 in the step (batch, time) is fixed to 1 here. */
        if (type.layout.dimensions[d] < 0 && spec->dims[d] == 1)
            type.layout.dimensions[d] = 1;
        ok = type.layout.dimensions[d] == want;
        elements *= (size_t)want;
    }
    if (!ok) {
        char shape[96] = "";
        for (unsigned d = 0; d < type.layout.rank && d < LITERT_TENSOR_MAX_RANK; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%d", d ? ", " : "",
                     type.layout.dimensions[d]);
        snprintf(err, n, "artifact '%s' (%s) does not belong with manifest.json: its %s has shape [%s] "
                 "(element type %d) where the manifest's vocabulary (%d) and state size (%d) call for "
                 "a step graph of batch 1 and time 1; re-export it",
                 name, path, spec->name, shape, (int)type.element_type, s->vocab_size, s->state_size);
        return -1;
    }
    size_t bytes;
    *memory = aligned_floats(elements, &bytes);
    if (!*memory) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    if (LiteRtCreateTensorBufferFromHostMemory(&type, *memory, bytes, NULL, buffer) != kLiteRtStatusOk) {
        snprintf(err, n, "LiteRT cannot make a buffer for %s of artifact '%s' (%s)", spec->name, name, path);
        return -1;
    }
    return 0;
}

/* Find each spec's tensor by its name in the signature; slot[i] is its position there. */
static int match(LiteRtSignature sig, int outputs, const tensor_spec specs[2], LiteRtTensor tensors[2],
                 int slot[2], const char *name, const char *path, char *err, size_t n) {
    LiteRtParamIndex count = 0;
    LiteRtStatus st = outputs ? LiteRtGetNumSignatureOutputs(sig, &count) : LiteRtGetNumSignatureInputs(sig, &count);
    if (st != kLiteRtStatusOk || count != 2) {
        snprintf(err, n, "artifact '%s' (%s) is not an estella step graph: it has %zu %s, not 2; re-export it",
                 name, path, (size_t)count, outputs ? "outputs" : "inputs");
        return -1;
    }
    slot[0] = slot[1] = -1;
    for (LiteRtParamIndex i = 0; i < count; i++) {
        const char *tensor_name = NULL;
        st = outputs ? LiteRtGetSignatureOutputName(sig, i, &tensor_name) : LiteRtGetSignatureInputName(sig, i, &tensor_name);
        for (int r = 0; st == kLiteRtStatusOk && tensor_name && r < 2; r++)
            if (strcmp(tensor_name, specs[r].name) == 0)
                slot[r] = (int)i;
    }
    for (int r = 0; r < 2; r++) {
        if (slot[r] < 0) {
            snprintf(err, n, "artifact '%s' (%s) is not an estella step graph: it has no tensor '%s'; re-export it",
                     name, path, specs[r].name);
            return -1;
        }
        st = outputs ? LiteRtGetSignatureOutputTensorByIndex(sig, (LiteRtParamIndex)slot[r], &tensors[r])
                     : LiteRtGetSignatureInputTensorByIndex(sig, (LiteRtParamIndex)slot[r], &tensors[r]);
        if (st != kLiteRtStatusOk) {
            snprintf(err, n, "LiteRT cannot read tensor '%s' of artifact '%s' (%s)", specs[r].name, name, path);
            return -1;
        }
    }
    return 0;
}

/* Compiling creates TFLite's XNNPACK delegate, which announces itself on stderr through TFLite's
 * own logger; that logger's level is not exported by libLiteRt.so, so stderr is closed meanwhile
 * (the text's stderr is for refusals). A failure is still reported, by the caller. */
static LiteRtStatus compile_quietly(estella_step *s) {
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0)
        dup2(null, 2);
    LiteRtStatus status = LiteRtCreateCompiledModel(s->env, s->model, s->options, &s->compiled);
    if (saved >= 0 && null >= 0)
        dup2(saved, 2);
    if (saved >= 0)
        close(saved);
    if (null >= 0)
        close(null);
    return status;
}

int estella_step_open(estella_step *s, const void *bytes, size_t size, int vocab_size, int state_size,
                      const char *name, const char *path, char *err, size_t n) {
    memset(s, 0, sizeof *s);
    s->vocab_size = vocab_size;
    s->state_size = state_size;
    /* Only the CPU accelerator is registered (no probing for GPU libraries), and only errors are logged. */
    LiteRtEnvOption options[2] = {
        {kLiteRtEnvOptionTagAutoRegisterAccelerators, {kLiteRtAnyTypeInt, {.int_value = kLiteRtHwAcceleratorCpu}}},
        {kLiteRtEnvOptionTagMinLoggerSeverity, {kLiteRtAnyTypeInt, {.int_value = kLiteRtLogSeverityError}}},
    };
    if (LiteRtCreateEnvironment(2, options, &s->env) != kLiteRtStatusOk) {
        snprintf(err, n, "LiteRT cannot create its environment");
        return -1;
    }
    if (LiteRtCreateModelFromBuffer(s->env, bytes, size, &s->model) != kLiteRtStatusOk) {
        snprintf(err, n, "LiteRT cannot load artifact '%s' (%s): not a TFLite model", name, path);
        return -1;
    }
    LiteRtParamIndex signatures = 0;
    LiteRtSignature sig;
    if (LiteRtGetNumModelSignatures(s->model, &signatures) != kLiteRtStatusOk || signatures < 1
            || LiteRtGetModelSignature(s->model, 0, &sig) != kLiteRtStatusOk) {
        snprintf(err, n, "artifact '%s' (%s) is not an estella step graph: it has no signature; re-export it",
                 name, path);
        return -1;
    }
    LiteRtTensor in[2], out[2];
    int in_slot[2], out_slot[2];
    if (match(sig, 0, INPUT_SPECS, in, in_slot, name, path, err, n) != 0
            || match(sig, 1, OUTPUT_SPECS, out, out_slot, name, path, err, n) != 0)
        return -1;
    void *memory[4] = {NULL, NULL, NULL, NULL};
    int bound = bind(s, in[IDS], &INPUT_SPECS[IDS], &memory[0], &s->inputs[in_slot[IDS]], name, path, err, n) != 0
            || bind(s, in[STATE], &INPUT_SPECS[STATE], &memory[1], &s->inputs[in_slot[STATE]], name, path, err, n) != 0
            || bind(s, out[LOGITS], &OUTPUT_SPECS[LOGITS], &memory[2], &s->outputs[out_slot[LOGITS]], name, path, err, n) != 0
            || bind(s, out[NEW_STATE], &OUTPUT_SPECS[NEW_STATE], &memory[3], &s->outputs[out_slot[NEW_STATE]], name, path, err, n) != 0;
    s->ids = memory[0];
    s->state = memory[1];
    s->logits = memory[2];
    s->new_state = memory[3];
    if (bound != 0)
        return -1;
    /* The CPU accelerator must be selected: LiteRT 2.3 compiles for none otherwise. */
    if (LiteRtCreateOptions(&s->options) != kLiteRtStatusOk
            || LiteRtSetOptionsHardwareAccelerators(s->options, kLiteRtHwAcceleratorCpu) != kLiteRtStatusOk
            || compile_quietly(s) != kLiteRtStatusOk) {
        snprintf(err, n, "LiteRT cannot compile artifact '%s' (%s) for the CPU", name, path);
        return -1;
    }
    return 0;
}

void estella_step_reset(estella_step *s) { memset(s->state, 0, (size_t)s->state_size * sizeof *s->state); }

int estella_step_run(estella_step *s, int id, char *err, size_t n) {
    s->ids[0] = id;
    if (LiteRtRunCompiledModel(s->compiled, 0, 2, s->inputs, 2, s->outputs) != kLiteRtStatusOk) {
        snprintf(err, n, "LiteRT failed to run the step");
        return -1;
    }
    memcpy(s->state, s->new_state, (size_t)s->state_size * sizeof *s->state);
    return 0;
}

void estella_step_close(estella_step *s) {
    if (s->compiled)
        LiteRtDestroyCompiledModel(s->compiled);
    for (int i = 0; i < 2; i++) {
        if (s->inputs[i])
            LiteRtDestroyTensorBuffer(s->inputs[i]);
        if (s->outputs[i])
            LiteRtDestroyTensorBuffer(s->outputs[i]);
    }
    if (s->options)
        LiteRtDestroyOptions(s->options);
    if (s->model)
        LiteRtDestroyModel(s->model);
    if (s->env)
        LiteRtDestroyEnvironment(s->env);
    free(s->ids);
    free(s->state);
    free(s->logits);
    free(s->new_state);
    memset(s, 0, sizeof *s);
}
