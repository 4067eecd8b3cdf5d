/* Paths a manifest names, checked as runtime/manifest.py checks them (messages included). */
#ifndef ESTELLA_PATHS_H
#define ESTELLA_PATHS_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "text.h"

/* os.path.join(a, b) for a relative b, and os.path.normpath of a relative path (malloc'd). */
char *estella_join(const char *a, const char *b);
char *estella_normpath(const char *path);
int estella_compare_strings(const void *a, const void *b); /* for qsort of char * */

/* Each returns 0, or -1 with the refusal appended to err. */
int estella_check_relative(const char *path, const char *field, estella_str *err);
int estella_check_path(const char *dir, const char *path, const char *what, estella_str *err);
int estella_check_artifact_paths(const char *dir, const cJSON *artifact, estella_str *err);
/* Open path (inside dir) for reading, as the runtime's open_file: 0 and *fd; ESTELLA_MISSING (no
 * message) where it does not exist; -1 with the refusal where it cannot be opened, is not a regular
 * file, or turns out to lie outside dir once opened. */
#define ESTELLA_MISSING (-2)
int estella_open_confined(const char *dir, const char *path, int *fd, estella_str *err);

/* Every file of the artifact: its size and sha256; the bytes of its own path kept in *data. */
int estella_verify_files(const char *dir, const cJSON *artifact, unsigned char **data, size_t *size, estella_str *err);

#endif
