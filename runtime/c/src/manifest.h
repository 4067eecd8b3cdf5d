/* An export folder as the Python runtime reads it (runtime/manifest.py, export/FORMAT.md): the
 * manifest's structure checked, every listed path confined to the folder, and the one artifact that
 * is run verified (size and sha256) and read once, so that the bytes hashed are the bytes loaded.
 * Refusals carry the Python runtime's messages. */
#ifndef ESTELLA_MANIFEST_H
#define ESTELLA_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int schema_version;
    int vocab_size;
    uint32_t *vocab;       /* [V] code points */
    int state_size;        /* S: schema 1 model.units, schema 2 model.state_size */
    char *artifact_name;   /* the artifact opened, e.g. "tflite-float32" */
    char *artifact_path;
    unsigned char *model;  /* its verified bytes */
    size_t model_size;
} estella_export;

/* Open export_dir's `format` artifact of `precision` ("float32", "int8"). Returns 0, or -1 with
 * the refusal in err (malloc'd; the caller frees it). */
int estella_export_open(estella_export *e, const char *export_dir, const char *format, const char *precision,
                        char **err);
void estella_export_close(estella_export *e);

#endif
