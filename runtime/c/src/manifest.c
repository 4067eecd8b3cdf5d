#include "manifest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "paths.h"
#include "text.h"

#define MANIFEST "manifest.json"
#define UNFINISHED_PREFIX ".export-tmp-"
#define UNFINISHED_MARKER "INCOMPLETE"
#define MAX_MANIFEST_BYTES (32L << 20)

/* Every check appends its refusal to err and returns -1. */
#define FAIL(...) do { estella_str_addf(err, __VA_ARGS__); return -1; } while (0)

/* --- Python's view of a JSON value, for messages ------------------------------------------------ */

static const char *type_name(const cJSON *v) {
    if (cJSON_IsObject(v)) return "dict";
    if (cJSON_IsArray(v)) return "list";
    if (cJSON_IsString(v)) return "str";
    if (cJSON_IsBool(v)) return "bool";
    if (cJSON_IsNull(v)) return "NoneType";
    return v->valuedouble == (double)(long long)v->valuedouble ? "int" : "float";
}

static void repr(estella_str *out, const cJSON *v) {
    if (!v || cJSON_IsNull(v))
        estella_str_add(out, "None");
    else if (cJSON_IsBool(v))
        estella_str_add(out, cJSON_IsTrue(v) ? "True" : "False");
    else if (cJSON_IsString(v))
        estella_repr_utf8(out, v->valuestring);
    else if (cJSON_IsNumber(v)) {
        if (strcmp(type_name(v), "int") == 0)
            estella_str_addf(out, "%lld", (long long)v->valuedouble);
        else
            estella_repr_float(out, v->valuedouble);
    } else {
        int object = cJSON_IsObject(v);
        estella_str_add(out, object ? "{" : "[");
        for (const cJSON *item = v->child; item; item = item->next) {
            if (object) {
                estella_repr_utf8(out, item->string);
                estella_str_add(out, ": ");
            }
            repr(out, item);
            if (item->next)
                estella_str_add(out, ", ");
        }
        estella_str_add(out, object ? "}" : "]");
    }
}

static const char *repr_of(estella_str *scratch, const cJSON *v) {
    scratch->len = 0;
    estella_str_add(scratch, "");
    repr(scratch, v);
    return scratch->data;
}

static int positive_int(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= INT_MAX
           && v->valuedouble == (double)(int)v->valuedouble;
}

/* --- structure: every field read has the type it must have (runtime/manifest.py check_manifest) -- */

static int check_string_field(const cJSON *artifact, const char *key, const char *field, const char *where,
                              estella_str *scratch, estella_str *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(artifact, key);
    if (!cJSON_IsString(v) || !v->valuestring[0])
        FAIL("%s: %s.%s must be a non-empty string, got %s", where, field, key, repr_of(scratch, v));
    return 0;
}

static int check_artifact(const cJSON *a, int index, const char *where, estella_str *scratch, estella_str *err) {
    char field[64];
    snprintf(field, sizeof field, "artifacts[%d]", index);
    if (!cJSON_IsObject(a))
        FAIL("%s: %s must be a JSON object, got %s", where, field, type_name(a));
    static const char *const required[] = {"name", "format", "precision", "path"};
    for (int i = 0; i < 4; i++)
        if (check_string_field(a, required[i], field, where, scratch, err) != 0)
            return -1;
    estella_str named = {0};
    estella_str_addf(&named, "%s (%s)", field, cJSON_GetObjectItemCaseSensitive(a, "name")->valuestring);
    const char *f = named.data;
    int rc = -1;
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(a, "role"), *files;
    if (role && !cJSON_IsString(role)) {
        estella_str_addf(err, "%s: %s.role must be a string, got %s", where, f, repr_of(scratch, role));
        goto done;
    }
    static const char *const dims[] = {"batch", "time"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, dims[i]);
        if (v && !cJSON_IsNull(v) && !positive_int(v)) {
            estella_str_addf(err, "%s: %s.%s must be an integer >= 1 or null, got %s", where, f, dims[i], repr_of(scratch, v));
            goto done;
        }
    }
    estella_str path_field = {0};
    estella_str_addf(&path_field, "%s.path", f);
    int bad_path = estella_check_relative(cJSON_GetObjectItemCaseSensitive(a, "path")->valuestring, path_field.data, err);
    estella_str_free(&path_field);
    if (bad_path)
        goto done;
    files = cJSON_GetObjectItemCaseSensitive(a, "files");
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) == 0) {
        estella_str_addf(err, "%s: %s.files must be a non-empty list of files, got %s", where, f, repr_of(scratch, files));
        goto done;
    }
    for (int j = 0; j < cJSON_GetArraySize(files); j++) {
        const cJSON *entry = cJSON_GetArrayItem(files, j), *v;
        char at[96];
        snprintf(at, sizeof at, "%s.files[%d]", f, j);
        if (!cJSON_IsObject(entry)) {
            estella_str_addf(err, "%s: %s must be a JSON object, got %s", where, at, type_name(entry));
            goto done;
        }
        v = cJSON_GetObjectItemCaseSensitive(entry, "path");
        if (!cJSON_IsString(v)) {
            estella_str_addf(err, "%s: %s.path must be a string, got %s", where, at, repr_of(scratch, v));
            goto done;
        }
        char entry_field[128];
        snprintf(entry_field, sizeof entry_field, "%s.path", at);
        if (estella_check_relative(v->valuestring, entry_field, err) != 0)
            goto done;
        v = cJSON_GetObjectItemCaseSensitive(entry, "bytes");
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != (double)(long long)v->valuedouble) {
            estella_str_addf(err, "%s: %s.bytes must be an integer >= 0, got %s", where, at, repr_of(scratch, v));
            goto done;
        }
        v = cJSON_GetObjectItemCaseSensitive(entry, "sha256");
        int hex = cJSON_IsString(v) && strlen(v->valuestring) == 64;
        for (int k = 0; hex && k < 64; k++)
            hex = strchr("0123456789abcdef", v->valuestring[k]) != NULL;
        if (!hex) {
            estella_str_addf(err, "%s: %s.sha256 must be 64 lowercase hex digits, got %s", where, at, repr_of(scratch, v));
            goto done;
        }
    }
    static const char *const spec_keys[] = {"inputs", "outputs"};
    for (int i = 0; i < 2; i++) {
        const cJSON *specs = cJSON_GetObjectItemCaseSensitive(a, spec_keys[i]), *spec;
        if (!specs || cJSON_IsNull(specs))
            continue;
        int ok = cJSON_IsArray(specs);
        if (ok)
            cJSON_ArrayForEach(spec, specs)
                ok = ok && cJSON_IsObject(spec) && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(spec, "name"))
                 && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(spec, "dtype"))
                 && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(spec, "shape"));
        if (!ok) {
            estella_str_addf(err, "%s: %s.%s must be a list of {name, shape, dtype} objects", where, f, spec_keys[i]);
            goto done;
        }
    }
    rc = 0;
done:
    estella_str_free(&named);
    return rc;
}

/* The state row's width: schema 1 model.units; schema 2 model.state_size, which state.shape[1]
 * repeats where it is given. The row is opaque here: its layout is the backends' business. */
static int check_state_size(const cJSON *m, int version, const char *where, estella_str *scratch, estella_str *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(m, "model");
    const char *key = version == 1 ? "units" : "state_size";
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, key);
    if (!positive_int(v))
        FAIL("%s: model.%s must be an integer >= 1, got %s", where, key, repr_of(scratch, v));
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "state"), "shape");
    const cJSON *width = cJSON_GetArrayItem(shape, 1);
    if (version >= 2 && cJSON_IsArray(shape) && cJSON_IsNumber(width) && width->valuedouble != v->valuedouble)
        FAIL("%s: state.shape is %s but model.state_size is %d", where, repr_of(scratch, shape), v->valueint);
    return v->valueint;
}

static int check_manifest(const cJSON *m, const char *where, estella_export *e, estella_str *err) {
    estella_str scratch = {0};
    int rc = -1;
    const cJSON *version, *model, *artifacts, *vocab, *item;
    if (!cJSON_IsObject(m)) {
        estella_str_addf(err, "%s: the manifest must be a JSON object, got %s", where, type_name(m));
        goto done;
    }
    version = cJSON_GetObjectItemCaseSensitive(m, "schema_version");
    if (!cJSON_IsNumber(version) || (version->valuedouble != 1 && version->valuedouble != 2)) {
        estella_str_addf(err, "%s has schema_version %s; this runtime reads versions 1, 2 (upgrade estella, "
                         "or re-export with this version)", where, repr_of(&scratch, version));
        goto done;
    }
    e->schema_version = version->valueint;
    static const char *const sections[] = {"model", "artifacts"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, sections[i]);
        if (!v) {
            estella_str_addf(err, "%s has no '%s' section", where, sections[i]);
            goto done;
        }
        if (i == 0 ? !cJSON_IsObject(v) : !cJSON_IsArray(v)) {
            estella_str_addf(err, "%s: %s must be a JSON %s, got %s", where, sections[i], i == 0 ? "object" : "list",
                             type_name(v));
            goto done;
        }
    }
    model = cJSON_GetObjectItemCaseSensitive(m, "model");
    artifacts = cJSON_GetObjectItemCaseSensitive(m, "artifacts");
    vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsArray(vocab)) {
        estella_str_addf(err, "%s has no model.vocab list", where);
        goto done;
    }
    int n = cJSON_GetArraySize(vocab), i = 0;
    e->vocab = calloc((size_t)n + 1, sizeof *e->vocab);
    cJSON_ArrayForEach(item, vocab) {
        uint32_t cps[8];
        if (!cJSON_IsString(item) || strlen(item->valuestring) > 4 || estella_utf8_decode(item->valuestring, cps) != 1) {
            estella_str_addf(err, "%s: model.vocab must hold single characters, got %s", where, repr_of(&scratch, item));
            goto done;
        }
        e->vocab[i++] = cps[0];
    }
    uint32_t *sorted = malloc(((size_t)n + 1) * sizeof *sorted), dupes[64];
    int n_dupes = 0;
    memcpy(sorted, e->vocab, (size_t)n * sizeof *sorted);
    for (int a = 0; a < n; a++) /* few characters: a plain selection sort keeps this short */
        for (int b = a + 1; b < n; b++)
            if (sorted[b] < sorted[a]) {
                uint32_t t = sorted[a];
                sorted[a] = sorted[b];
                sorted[b] = t;
            }
    for (int a = 1; a < n; a++)
        if (sorted[a] == sorted[a - 1] && (n_dupes == 0 || dupes[n_dupes - 1] != sorted[a]) && n_dupes < 64)
            dupes[n_dupes++] = sorted[a];
    free(sorted);
    if (n_dupes) {
        estella_str_addf(err, "%s: model.vocab has characters more than once: [", where);
        for (int a = 0; a < n_dupes; a++) {
            if (a)
                estella_str_add(err, ", ");
            estella_repr_str(err, &dupes[a], 1);
        }
        estella_str_add(err, "]");
        goto done;
    }
    const cJSON *vocab_size = cJSON_GetObjectItemCaseSensitive(model, "vocab_size");
    if (!positive_int(vocab_size)) {
        estella_str_addf(err, "%s: model.vocab_size must be an integer >= 1, got %s", where, repr_of(&scratch, vocab_size));
        goto done;
    }
    if ((e->state_size = check_state_size(m, e->schema_version, where, &scratch, err)) < 0)
        goto done;
    const cJSON *embedding_dim = cJSON_GetObjectItemCaseSensitive(model, "embedding_dim");
    if (embedding_dim && !positive_int(embedding_dim)) {
        estella_str_addf(err, "%s: model.embedding_dim must be an integer >= 1, got %s", where,
                         repr_of(&scratch, embedding_dim));
        goto done;
    }
    if (vocab_size->valueint != n) {
        estella_str_addf(err, "%s: model.vocab_size is %d but model.vocab has %d characters", where,
                         vocab_size->valueint, n);
        goto done;
    }
    e->vocab_size = n;
    i = 0;
    cJSON_ArrayForEach(item, artifacts)
        if (check_artifact(item, i++, where, &scratch, err) != 0)
            goto done;
    rc = 0;
done:
    estella_str_free(&scratch);
    return rc;
}

/* --- the export folder ------------------------------------------------------------------------------ */

static int base_is_unfinished(const char *path) {
    char *copy = strdup(path);
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = 0;
    const char *slash = strrchr(copy, '/'), *base = slash ? slash + 1 : copy;
    int unfinished = strncmp(base, UNFINISHED_PREFIX, strlen(UNFINISHED_PREFIX)) == 0;
    free(copy);
    return unfinished;
}

/* runtime/manifest.py check_finished */
static int check_finished(const char *dir, estella_str *err) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        FAIL("export directory %s does not exist (write one with `estella export RUN --out DIR`)", dir);
    char *abs = realpath(dir, NULL), *marker = estella_join(dir, UNFINISHED_MARKER);
    /* os.path.abspath keeps the folder's own name; realpath the name a link points to */
    char *cwd_joined = dir[0] == '/' ? strdup(dir) : estella_join(getcwd(NULL, 0), dir);
    int unfinished = base_is_unfinished(cwd_joined) || (abs && base_is_unfinished(abs)) || lstat(marker, &st) == 0;
    free(abs);
    free(marker);
    free(cwd_joined);
    if (unfinished)
        FAIL("%s is an unfinished export (the temporary folder of an `estella export` that was killed or failed): "
             "it is never loaded; run `estella export` again", dir);
    return 0;
}

static cJSON *read_manifest(const char *dir, estella_str *err) {
    char *path = estella_join(dir, MANIFEST), *config = estella_join(dir, "config.json");
    cJSON *m = NULL;
    struct stat st;
    char *text = NULL;
    int fd = -1;
    if (lstat(path, &st) != 0) {
        estella_str_addf(err, "%s is missing: %s is not an estella export directory", path, dir);
        if (stat(config, &st) == 0 && S_ISREG(st.st_mode))
            estella_str_addf(err, " but a training run: export it with `estella export %s --out DIR`", dir);
        goto done;
    }
    int opened = estella_open_confined(dir, path, &fd, err);
    if (opened == ESTELLA_MISSING)
        estella_str_addf(err, "%s is missing", path);
    if (opened != 0)
        goto done;
    if (fstat(fd, &st) != 0 || st.st_size > MAX_MANIFEST_BYTES) {
        estella_str_addf(err, "%s is larger than %ld MB: refused; re-export it", path, MAX_MANIFEST_BYTES >> 20);
        goto done;
    }
    text = malloc((size_t)st.st_size + 1);
    ssize_t got = read(fd, text, (size_t)st.st_size);
    if (got != st.st_size) {
        estella_str_addf(err, "cannot read %s: %s", path, got < 0 ? strerror(errno) : "it changed while read");
        goto done;
    }
    text[got] = 0;
    const char *end = NULL;
    m = cJSON_ParseWithOpts(text, &end, 1);
    if (!m)
        estella_str_addf(err, "cannot read %s: not valid JSON (at byte %ld)", path, end ? (long)(end - text) : 0L);
done:
    if (fd >= 0)
        close(fd);
    free(text);
    free(path);
    free(config);
    return m;
}

int estella_export_open(estella_export *e, const char *dir, const char *format, const char *precision, char **error) {
    memset(e, 0, sizeof *e);
    estella_str err = {0};
    cJSON *m = NULL, *item, *chosen = NULL;
    int rc = -1;
    if (check_finished(dir, &err) != 0 || !(m = read_manifest(dir, &err)))
        goto done;
    char *where = estella_join(dir, MANIFEST);
    int bad = check_manifest(m, where, e, &err);
    free(where);
    if (bad)
        goto done;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(m, "artifacts"))
        if (estella_check_artifact_paths(dir, item, &err) != 0)
            goto done;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(m, "artifacts")) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(item, "role");
        if (!chosen && strcmp(cJSON_GetObjectItemCaseSensitive(item, "format")->valuestring, format) == 0
                && strcmp(cJSON_GetObjectItemCaseSensitive(item, "precision")->valuestring, precision) == 0
                && (!role || strcmp(role->valuestring, "step") == 0))
            chosen = item;
    }
    if (!chosen) { /* runtime/backends/__init__.py _open: name what there is */
        char *have[64];
        int n = 0;
        cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(m, "artifacts")) {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(item, "role");
            if ((role && strcmp(role->valuestring, "step") != 0) || n == 64)
                continue;
            estella_str s = {0};
            estella_str_addf(&s, "%s %s", cJSON_GetObjectItemCaseSensitive(item, "format")->valuestring,
                             cJSON_GetObjectItemCaseSensitive(item, "precision")->valuestring);
            int dup = 0;
            for (int i = 0; i < n; i++)
                dup |= strcmp(have[i], s.data) == 0;
            if (dup)
                estella_str_free(&s);
            else
                have[n++] = s.data;
        }
        qsort(have, (size_t)n, sizeof *have, estella_compare_strings);
        estella_str_addf(&err, "%s has no %s artifact for the %s backend; it has: ", dir, precision, format);
        for (int i = 0; i < n; i++) {
            estella_str_addf(&err, "%s%s", i ? ", " : "", have[i]);
            free(have[i]);
        }
        goto done;
    }
    if (estella_verify_files(dir, chosen, &e->model, &e->model_size, &err) != 0)
        goto done;
    if (!e->model) {
        estella_str_addf(&err, "artifact '%s' is a folder; the tflite backend runs one file",
                         cJSON_GetObjectItemCaseSensitive(chosen, "name")->valuestring);
        goto done;
    }
    e->artifact_name = strdup(cJSON_GetObjectItemCaseSensitive(chosen, "name")->valuestring);
    e->artifact_path = strdup(cJSON_GetObjectItemCaseSensitive(chosen, "path")->valuestring);
    rc = 0;
done:
    cJSON_Delete(m);
    if (rc != 0) {
        *error = err.data ? err.data : strdup("cannot open the export");
        estella_export_close(e);
    } else {
        estella_str_free(&err);
    }
    return rc;
}

void estella_export_close(estella_export *e) {
    free(e->vocab);
    free(e->model);
    free(e->artifact_name);
    free(e->artifact_path);
    memset(e, 0, sizeof *e);
}
