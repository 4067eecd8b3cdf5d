/* Paths a manifest names, as runtime/manifest.py checks them: relative, confined to the export
 * folder (symlinks followed), regular files, every file of a folder artifact listed; and the files
 * of the artifact that runs verified (size and sha256) and read once. */
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MANIFEST "manifest.json"
#define MAX_FILE_BYTES (2LL << 30) /* runtime/manifest.py: no estella artifact file is larger */

/* Every check appends its refusal to err and returns -1. */
#define FAIL(...) do { estella_str_addf(err, __VA_ARGS__); return -1; } while (0)

/* os.path.join(a, b) for a relative b */
char *estella_join(const char *a, const char *b) {
    estella_str s = {0};
    estella_str_add(&s, a);
    if (s.len && s.data[s.len - 1] != '/')
        estella_str_add(&s, "/");
    estella_str_add(&s, b);
    return s.data;
}

/* --- paths: confined to the export folder, regular files, each one listed ---------------------- */

int estella_check_relative(const char *path, const char *field, estella_str *err) {
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
    char *joined = estella_join(resolved_parent, slash ? slash + 1 : copy);
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
char *estella_normpath(const char *path) {
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
int estella_check_path(const char *dir, const char *path, const char *what, estella_str *err) {
    char *root = resolve(dir), *joined = estella_join(dir, path), *full = resolve(joined);
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

int estella_compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* runtime/manifest.py check_artifact_paths */
int estella_check_artifact_paths(const char *dir, const cJSON *artifact, estella_str *err) {
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
        listed[i] = estella_normpath(file);
        if (rc == 0)
            rc = estella_check_path(dir, file, what.data, err);
    }
    char *root = resolve(dir), *joined = estella_join(dir, path), *full = resolve(joined);
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
            qsort(walk.unlisted, (size_t)walk.n_unlisted, sizeof *walk.unlisted, estella_compare_strings);
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
        char *norm = estella_normpath(path);
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
            rc = estella_check_path(dir, path, what.data, err);
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

/* runtime/untrusted_files.py open_file: opened without blocking, checked on the open descriptor. */
int estella_open_confined(const char *dir, const char *path, int *fd, estella_str *err) {
    *fd = open(path, O_RDONLY | O_NONBLOCK); /* non-blocking: a FIFO swapped in cannot hang the reader */
    if (*fd < 0) {
        if (errno == ENOENT)
            return ESTELLA_MISSING;
        FAIL("cannot open %s: %s; re-export it", path, strerror(errno));
    }
    /* What was opened, not what the path named a moment before: a link swapped in is refused. */
    char proc[64], opened[PATH_MAX + 1];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", *fd);
    ssize_t len = readlink(proc, opened, PATH_MAX);
    char *root = resolve(dir);
    int outside = len > 0 && (opened[len] = 0, !inside(root, opened));
    free(root);
    struct stat st;
    int regular = fstat(*fd, &st) == 0 && S_ISREG(st.st_mode);
    if (outside || !regular) {
        close(*fd);
        *fd = -1;
        if (outside)
            FAIL("%s points outside the export folder %s: refused", path, dir);
        FAIL("%s is not a regular file: refused", path);
    }
    return 0;
}

/* runtime/untrusted_files.py read_file with the manifest's size and sha256: the bytes hashed are
 * the bytes kept, and a file that grows while it is read is refused. */
static int read_regular(const char *dir, const char *path, const cJSON *entry, const char *artifact, int keep,
                        unsigned char **data, size_t *size, estella_str *err) {
    long long want = (long long)cJSON_GetObjectItemCaseSensitive(entry, "bytes")->valuedouble;
    const char *sha = cJSON_GetObjectItemCaseSensitive(entry, "sha256")->valuestring;
    if (want > MAX_FILE_BYTES)
        FAIL("%s is listed at %lld bytes, more than the %lld GB that any estella artifact file holds: refused unread",
             path, want, MAX_FILE_BYTES >> 30);
    int fd;
    int opened = estella_open_confined(dir, path, &fd, err);
    if (opened == ESTELLA_MISSING) {
        estella_str_addf(err, "%s is missing (listed in the manifest for artifact ", path);
        estella_repr_utf8(err, artifact);
        FAIL(")");
    }
    if (opened != 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || (long long)st.st_size != want) {
        close(fd);
        FAIL("%s is %lld bytes but %lld are expected: the file is truncated or was replaced; re-export it",
             path, (long long)st.st_size, want);
    }
    unsigned char *bytes = keep ? malloc((size_t)want + 1) : NULL, block[1 << 16];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, block, sizeof block)) > 0 && got + (size_t)n <= (size_t)want) {
        EVP_DigestUpdate(ctx, block, (size_t)n);
        if (keep)
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
    if (n > 0) { /* more bytes than it had when it was opened */
        free(bytes);
        FAIL("%s changed while it was read: refused; re-export it", path);
    }
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
int estella_verify_files(const char *dir, const cJSON *artifact, unsigned char **data, size_t *size, estella_str *err) {
    if (estella_check_artifact_paths(dir, artifact, err) != 0)
        return -1;
    const char *name = cJSON_GetObjectItemCaseSensitive(artifact, "name")->valuestring;
    char *main_path = estella_normpath(cJSON_GetObjectItemCaseSensitive(artifact, "path")->valuestring);
    const cJSON *entry;
    int rc = 0;
    cJSON_ArrayForEach(entry, cJSON_GetObjectItemCaseSensitive(artifact, "files")) {
        const char *file = cJSON_GetObjectItemCaseSensitive(entry, "path")->valuestring;
        char *norm = estella_normpath(file), *path = estella_join(dir, file);
        rc = read_regular(dir, path, entry, name, strcmp(norm, main_path) == 0, data, size, err);
        free(norm);
        free(path);
        if (rc != 0)
            break;
    }
    free(main_path);
    return rc;
}

