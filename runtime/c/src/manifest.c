#include "manifest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* os.path.join(a, b) for a relative b */
static char *join(const char *a, const char *b) {
    estella_str s = {0};
    estella_str_add(&s, a);
    if (s.len && s.data[s.len - 1] != '/')
        estella_str_add(&s, "/");
    estella_str_add(&s, b);
    return s.data;
}

/* --- paths: confined to the export folder, regular files, each one listed ---------------------- */

static int check_relative(const char *path, const char *field, estella_str *err) {
    char *copy = strdup(path);
    for (char *c = copy; *c; c++)
        if (*c == '\\')
            *c = '/';
    char *first_end = strchr(copy, '/');
    size_t first_len = first_end ? (size_t)(first_end - copy) : strlen(copy);
    int bad = path[0] == '/' || path[0] == '\\' || memchr(copy, ':', first_len) != NULL
              || strcmp(path, "") == 0 || strcmp(path, ".") == 0;
    for (char *part = copy, *next; !bad && part; part = next) {
        next = strchr(part, '/');
        if (next)
            *next++ = 0;
        bad = strcmp(part, "..") == 0;
    }
    free(copy);
    if (bad) {
        estella_str_add(err, MANIFEST ": ");
        estella_str_addf(err, "%s ", field);
        estella_repr_utf8(err, path);
        estella_str_add(err, " must be a relative path inside the export folder");
        return -1;
    }
    return 0;
}

/* os.path.realpath: symlinks resolved; a path that does not exist (yet) is resolved as far as it does. */
static char *resolve(const char *path) {
    char *full = realpath(path, NULL);
    if (full)
        return full;
    char *copy = strdup(path), *slash = strrchr(copy, '/');
    char *parent = slash ? (slash == copy ? strdup("/") : strndup(copy, (size_t)(slash - copy))) : strdup(".");
    char *resolved_parent = strcmp(parent, path) ? resolve(parent) : strdup(parent);
    char *joined = join(resolved_parent, slash ? slash + 1 : copy);
    free(copy);
    free(parent);
    free(resolved_parent);
    return joined;
}

static int inside(const char *root, const char *full) {
    size_t n = strlen(root);
    return strcmp(root, "/") == 0 || (strncmp(root, full, n) == 0 && (full[n] == 0 || full[n] == '/'));
}

/* os.path.normpath for a relative path the manifest gives: no ".", no empty parts. */
static char *normpath(const char *path) {
    estella_str s = {0};
    estella_str_add(&s, "");
    char *copy = strdup(path);
    for (char *part = strtok(copy, "/"); part; part = strtok(NULL, "/"))
        if (strcmp(part, ".") != 0)
            estella_str_addf(&s, "%s%s", s.len ? "/" : "", part);
    free(copy);
    if (!s.len)
        estella_str_add(&s, ".");
    return s.data;
}

/* runtime/manifest.py check_path: nothing is opened here. */
static int check_path(const char *dir, const char *path, const char *what, estella_str *err) {
    char *root = resolve(dir), *joined = join(dir, path), *full = resolve(joined);
    int rc = 0;
    struct stat st, link;
    if (!inside(root, full)) {
        estella_str_addf(err, "%s ", what);
        estella_repr_utf8(err, path);
        estella_str_addf(err, " points outside the export folder %s: refused", dir);
        rc = -1;
    } else if (lstat(joined, &link) == 0 && stat(full, &st) == 0 && !S_ISREG(st.st_mode)) {
        estella_str_addf(err, "%s ", what);
        estella_repr_utf8(err, path);
        estella_str_addf(err, " in %s is not a regular file: refused", dir);
        rc = -1;
    }
    free(root);
    free(joined);
    free(full);
    return rc;
}

/* The files under a folder artifact, for the check that each one is listed. */
static struct {
    const char *root;
    char **listed;
    int n_listed;
    char **unlisted; /* found, not listed: sorted for the message, as Python's */
    int n_unlisted;
    char *linked;
} walk;

static int visit(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    if (flag == FTW_D || flag == FTW_DNR || flag == FTW_DP)
        return 0;
    struct stat target;
    if (flag == FTW_SL && stat(path, &target) == 0 && S_ISDIR(target.st_mode)) {
        walk.linked = strdup(path);
        return 1; /* os.walk lists it among the folders, and check_artifact_paths refuses it */
    }
    const char *relative = path + strlen(walk.root) + 1;
    for (int i = 0; i < walk.n_listed; i++)
        if (strcmp(walk.listed[i], relative) == 0)
            return 0;
    char **grown = realloc(walk.unlisted, (size_t)(walk.n_unlisted + 1) * sizeof *grown);
    if (!grown)
        return 1;
    walk.unlisted = grown;
    walk.unlisted[walk.n_unlisted++] = strdup(relative);
    return 0;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* runtime/manifest.py check_artifact_paths */
static int check_artifact_paths(const char *dir, const cJSON *artifact, estella_str *err) {
    const char *name = cJSON_GetObjectItemCaseSensitive(artifact, "name")->valuestring;
    const char *path = cJSON_GetObjectItemCaseSensitive(artifact, "path")->valuestring;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(artifact, "files");
    int n = cJSON_GetArraySize(files), rc = 0;
    char **listed = calloc((size_t)n + 1, sizeof *listed);
    estella_str what = {0}, names = {0};
    estella_str_add(&what, "artifact ");
    estella_repr_utf8(&what, name);
    estella_str_add(&what, ": file");
    estella_repr_utf8(&names, name);
    for (int i = 0; i < n; i++) {
        const char *file = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(files, i), "path")->valuestring;
        listed[i] = normpath(file);
        if (rc == 0)
            rc = check_path(dir, file, what.data, err);
    }
    char *root = resolve(dir), *joined = join(dir, path), *full = resolve(joined);
    struct stat st;
    if (rc != 0) {
    } else if (!inside(root, full)) {
        estella_str_addf(err, "artifact %s: path ", names.data);
        estella_repr_utf8(err, path);
        estella_str_addf(err, " points outside the export folder %s: refused", dir);
        rc = -1;
    } else if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
        /* every file under it listed (paths relative to the folder's real root) */
        walk.root = root;
        walk.listed = listed;
        walk.n_listed = n;
        walk.unlisted = NULL;
        walk.n_unlisted = 0;
        walk.linked = NULL;
        nftw(full, visit, 16, FTW_PHYS);
        if (walk.linked) {
            estella_str_addf(err, "artifact %s: ", names.data);
            estella_repr_utf8(err, walk.linked + strlen(root) + 1);
            estella_str_add(err, " is a link to a folder; a folder artifact holds plain files only");
            free(walk.linked);
            rc = -1;
        } else if (walk.n_unlisted) {
            qsort(walk.unlisted, (size_t)walk.n_unlisted, sizeof *walk.unlisted, compare_strings);
            estella_str_addf(err, "artifact %s: %s/ holds files that the manifest does not list (", names.data, path);
            for (int i = 0; i < walk.n_unlisted && i < 5; i++)
                estella_str_addf(err, "%s%s", i ? ", " : "", walk.unlisted[i]);
            estella_str_add(err, "); they would be loaded unverified: re-export it");
            rc = -1;
        }
        for (int i = 0; i < walk.n_unlisted; i++)
            free(walk.unlisted[i]);
        free(walk.unlisted);
    } else {
        char *norm = normpath(path);
        int found = 0;
        for (int i = 0; i < n; i++)
            found |= strcmp(listed[i], norm) == 0;
        free(norm);
        if (!found) {
            estella_str_addf(err, "artifact %s: its path ", names.data);
            estella_repr_utf8(err, path);
            estella_str_add(err, " is not in its files list, so it cannot be verified: the manifest was edited; re-export it");
            rc = -1;
        } else {
            estella_str_free(&what);
            estella_str_add(&what, "artifact ");
            estella_repr_utf8(&what, name);
            estella_str_add(&what, ": path");
            rc = check_path(dir, path, what.data, err);
        }
    }
    for (int i = 0; i < n; i++)
        free(listed[i]);
    free(listed);
    free(root);
    free(joined);
    free(full);
    estella_str_free(&what);
    estella_str_free(&names);
    return rc;
}

/* --- verification: size and sha256 of every file of the artifact -------------------------------- */

/* runtime/manifest.py _read_regular: opened without blocking, checked on the open descriptor. */
static int read_regular(const char *path, const cJSON *entry, const char *artifact, int keep,
                        unsigned char **data, size_t *size, estella_str *err) {
    long long want = (long long)cJSON_GetObjectItemCaseSensitive(entry, "bytes")->valuedouble;
    const char *sha = cJSON_GetObjectItemCaseSensitive(entry, "sha256")->valuestring;
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) {
            estella_str_addf(err, "%s is missing (listed in the manifest for artifact ", path);
            estella_repr_utf8(err, artifact);
            FAIL(")");
        }
        FAIL("cannot open %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        FAIL("%s is not a regular file: refused", path);
    }
    if ((long long)st.st_size != want) {
        close(fd);
        FAIL("%s is %lld bytes but the manifest lists %lld: the file is truncated or was replaced; re-export it",
             path, (long long)st.st_size, want);
    }
    unsigned char *bytes = keep ? malloc((size_t)want + 1) : NULL, block[1 << 16];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, block, sizeof block)) > 0) {
        EVP_DigestUpdate(ctx, block, (size_t)n);
        if (keep && got + (size_t)n <= (size_t)want)
            memcpy(bytes + got, block, (size_t)n);
        got += (size_t)n;
    }
    close(fd);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_DigestFinal_ex(ctx, digest, &digest_len);
    EVP_MD_CTX_free(ctx);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned i = 0; i < digest_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (n < 0 || got != (size_t)want || strcmp(hex, sha) != 0) {
        free(bytes);
        FAIL("%s does not match its sha256 in the manifest: the file is corrupt or was changed after export; re-export it",
             path);
    }
    if (keep) {
        *data = bytes;
        *size = got;
    }
    return 0;
}

/* runtime/manifest.py verify_files, keeping the bytes of the artifact's own path. */
static int verify_files(const char *dir, const cJSON *artifact, unsigned char **data, size_t *size, estella_str *err) {
    if (check_artifact_paths(dir, artifact, err) != 0)
        return -1;
    const char *name = cJSON_GetObjectItemCaseSensitive(artifact, "name")->valuestring;
    char *main_path = normpath(cJSON_GetObjectItemCaseSensitive(artifact, "path")->valuestring);
    const cJSON *entry;
    int rc = 0;
    cJSON_ArrayForEach(entry, cJSON_GetObjectItemCaseSensitive(artifact, "files")) {
        const char *file = cJSON_GetObjectItemCaseSensitive(entry, "path")->valuestring;
        char *norm = normpath(file), *path = join(dir, file);
        rc = read_regular(path, entry, name, strcmp(norm, main_path) == 0, data, size, err);
        free(norm);
        free(path);
        if (rc != 0)
            break;
    }
    free(main_path);
    return rc;
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
    int bad_path = check_relative(cJSON_GetObjectItemCaseSensitive(a, "path")->valuestring, path_field.data, err);
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
        if (check_relative(v->valuestring, entry_field, err) != 0)
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
    char *abs = realpath(dir, NULL), *marker = join(dir, UNFINISHED_MARKER);
    /* os.path.abspath keeps the folder's own name; realpath the name a link points to */
    char *cwd_joined = dir[0] == '/' ? strdup(dir) : join(getcwd(NULL, 0), dir);
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
    char *path = join(dir, MANIFEST), *config = join(dir, "config.json");
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
    if (check_path(dir, MANIFEST, "the manifest", err) != 0)
        goto done;
    fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        estella_str_addf(err, "cannot read %s: [Errno %d] %s: '%s'", path, errno, strerror(errno), path);
        goto done;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_MANIFEST_BYTES) {
        estella_str_addf(err, "%s is not a regular file of at most %ld MB: not an estella manifest", path,
                         MAX_MANIFEST_BYTES >> 20);
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
    char *where = join(dir, MANIFEST);
    int bad = check_manifest(m, where, e, &err);
    free(where);
    if (bad)
        goto done;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(m, "artifacts"))
        if (check_artifact_paths(dir, item, &err) != 0)
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
        qsort(have, (size_t)n, sizeof *have, compare_strings);
        estella_str_addf(&err, "%s has no %s artifact for the %s backend; it has: ", dir, precision, format);
        for (int i = 0; i < n; i++) {
            estella_str_addf(&err, "%s%s", i ? ", " : "", have[i]);
            free(have[i]);
        }
        goto done;
    }
    if (verify_files(dir, chosen, &e->model, &e->model_size, &err) != 0)
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
