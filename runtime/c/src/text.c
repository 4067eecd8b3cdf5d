#include "text.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t estella_utf8_decode(const char *s, uint32_t *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p) {
        unsigned char c = *p;
        int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        int ok = len > 0;
        for (int i = 1; ok && i < len; i++) {
            ok = (p[i] & 0xc0) == 0x80;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        /* overlong forms, surrogates and values past U+10FFFF are not UTF-8 either */
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (ok && (cp < least[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff))
            ok = 0;
        if (!ok) { /* surrogateescape: the byte itself, as U+DC80..U+DCFF */
            out[n++] = 0xdc00 + c;
            p++;
            continue;
        }
        out[n++] = cp;
        p += len;
    }
    return n;
}

int estella_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static void reserve(estella_str *s, size_t more) {
    if (s->len + more + 1 <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->len + more + 1)
        cap *= 2;
    char *data = realloc(s->data, cap);
    if (!data) {
        fputs("estella-c: out of memory\n", stderr);
        exit(1);
    }
    s->data = data;
    s->cap = cap;
}

void estella_str_add(estella_str *s, const char *text) {
    size_t n = strlen(text);
    reserve(s, n);
    memcpy(s->data + s->len, text, n + 1);
    s->len += n;
}

void estella_str_addf(estella_str *s, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsnprintf(NULL, 0, format, args);
    va_end(args);
    reserve(s, (size_t)n);
    va_start(args, format);
    vsnprintf(s->data + s->len, (size_t)n + 1, format, args);
    va_end(args);
    s->len += (size_t)n;
}

void estella_str_free(estella_str *s) {
    free(s->data);
    s->data = NULL;
    s->len = s->cap = 0;
}

/* str.isprintable() for the characters a text is likely to hold: the control, format, separator
 * and private-use ranges Python escapes. (Unassigned code points, which Python escapes too, are
 * not told apart here.) */
static int printable(uint32_t cp) {
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad)
        return 0;
    if (cp == 0x061c || cp == 0x1680 || cp == 0x180e || (cp >= 0x2000 && cp <= 0x200f)
            || (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000
            || (cp >= 0xd800 && cp <= 0xf8ff) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb)
            || cp == 0xfffe || cp == 0xffff || (cp >= 0xf0000 && cp <= 0x10ffff))
        return 0;
    return 1;
}

void estella_repr_str(estella_str *out, const uint32_t *cps, size_t n) {
    int single = 0, dbl = 0;
    for (size_t i = 0; i < n; i++) {
        single |= cps[i] == '\'';
        dbl |= cps[i] == '"';
    }
    char quote = single && !dbl ? '"' : '\'';
    char q[2] = {quote, 0};
    estella_str_add(out, q);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cps[i];
        if (c == (uint32_t)quote || c == '\\')
            estella_str_addf(out, "\\%c", (char)c);
        else if (c == '\t')
            estella_str_add(out, "\\t");
        else if (c == '\n')
            estella_str_add(out, "\\n");
        else if (c == '\r')
            estella_str_add(out, "\\r");
        else if (!printable(c))
            estella_str_addf(out, c <= 0xff ? "\\x%02x" : c <= 0xffff ? "\\u%04x" : "\\U%08x", c);
        else {
            char buf[5] = {0};
            estella_utf8_encode(c, buf);
            estella_str_add(out, buf);
        }
    }
    estella_str_add(out, q);
}

void estella_repr_utf8(estella_str *out, const char *utf8) {
    uint32_t *cps = malloc((strlen(utf8) + 1) * sizeof *cps);
    if (!cps)
        exit(1);
    estella_repr_str(out, cps, estella_utf8_decode(utf8, cps));
    free(cps);
}

void estella_repr_float(estella_str *out, double v) {
    if (isnan(v)) {
        estella_str_add(out, "nan");
        return;
    }
    if (isinf(v)) {
        estella_str_add(out, v < 0 ? "-inf" : "inf");
        return;
    }
    char buf[40];
    int precision = 0;
    for (; precision < 17; precision++) { /* the fewest significant digits that read back as v */
        snprintf(buf, sizeof buf, "%.*e", precision, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    /* buf is [-]d[.ddd]e[+-]xx: split into the digits and the decimal point's place */
    char digits[24];
    int nd = 0, negative = buf[0] == '-';
    char *p = buf + negative;
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    int decpt = atoi(p + 1) + 1; /* digits[0] is in the place 10^(decpt-1) */
    if (negative)
        estella_str_add(out, "-");
    if (decpt > -4 && decpt <= 16) { /* Python writes these in positional notation */
        if (decpt <= 0) {
            estella_str_add(out, "0.");
            for (int i = 0; i < -decpt; i++)
                estella_str_add(out, "0");
            estella_str_add(out, digits);
        } else {
            for (int i = 0; i < decpt; i++)
                estella_str_addf(out, "%c", i < nd ? digits[i] : '0');
            estella_str_add(out, ".");
            estella_str_add(out, nd > decpt ? digits + decpt : "0");
        }
        return;
    }
    estella_str_addf(out, "%c", digits[0]);
    if (nd > 1)
        estella_str_addf(out, ".%s", digits + 1);
    estella_str_addf(out, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
}

/* Unicode's format characters (category Cf), as of Unicode 15. */
static int format_char(uint32_t c) {
    static const uint32_t ranges[][2] = {
        {0xad, 0xad}, {0x600, 0x605}, {0x61c, 0x61c}, {0x6dd, 0x6dd}, {0x70f, 0x70f}, {0x890, 0x891},
        {0x8e2, 0x8e2}, {0x180e, 0x180e}, {0x200b, 0x200f}, {0x202a, 0x202e}, {0x2060, 0x2064},
        {0x2066, 0x206f}, {0xfeff, 0xfeff}, {0xfff9, 0xfffb}, {0x110bd, 0x110bd}, {0x110cd, 0x110cd},
        {0x13430, 0x1343f}, {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a}, {0xe0001, 0xe0001}, {0xe0020, 0xe007f},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        if (c >= ranges[i][0] && c <= ranges[i][1])
            return 1;
    return 0;
}

void estella_printable(estella_str *out, const char *utf8) {
    uint32_t *cps = malloc((strlen(utf8) + 1) * sizeof *cps);
    if (!cps)
        exit(1);
    size_t n = estella_utf8_decode(utf8, cps);
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cps[i];
        if (c != '\n' && (c < 0x20 || (c >= 0x7f && c <= 0x9f) || format_char(c) || (c >= 0xdc80 && c <= 0xdcff)))
            estella_str_addf(out, c < 0x100 ? "\\x%02x" : c < 0x10000 ? "\\u%04x" : "\\U%08x", c);
        else {
            char buf[5] = {0};
            estella_utf8_encode(c, buf);
            estella_str_add(out, buf);
        }
    }
    free(cps);
}
