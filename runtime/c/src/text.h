/* Text as the Python runtime sees it: UTF-8 decoded to code points (undecodable bytes become the
 * lone surrogates U+DC80..U+DCFF, as Python's surrogateescape does for command-line arguments), and
 * Python's repr() of strings, ints and floats for messages that must read the same. */
#ifndef ESTELLA_TEXT_H
#define ESTELLA_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Decode s into code points; returns how many (at most strlen(s)), out has room for strlen(s). */
size_t estella_utf8_decode(const char *s, uint32_t *out);

/* Encode one code point as UTF-8 (surrogates as their three bytes); returns the length, 1 to 4. */
int estella_utf8_encode(uint32_t cp, char out[4]);

/* A growable string for messages. */
typedef struct {
    char *data;
    size_t len, cap;
} estella_str;

void estella_str_add(estella_str *s, const char *text);
void estella_str_addf(estella_str *s, const char *format, ...) __attribute__((format(printf, 2, 3)));
void estella_str_free(estella_str *s);

/* Python's repr() of a string of code points ('abc', "it's", '\n', '\x00'). */
void estella_repr_str(estella_str *out, const uint32_t *cps, size_t n);
void estella_repr_utf8(estella_str *out, const char *utf8);

/* A message as the terminal may show it: control and format characters (Unicode Cc, Cf) written as
 * \xNN / \uNNNN escapes, newlines kept, and the lone surrogates of undecodable bytes as \udcNN
 * (what the Python CLI's stderr writes), so that nothing from an export can drive the terminal. */
void estella_printable(estella_str *out, const char *utf8);

/* Python's repr() of a float (the shortest text that reads back the same: 0.5, 1e-05, inf). */
void estella_repr_float(estella_str *out, double value);

#endif
