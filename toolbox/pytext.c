/* pytext.c - Python float text forms and UTF-8 helpers (see pytext.h). */
#include "pytext.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- C locale for numeric conversions ------------------------------------ */

static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;
static locale_t c_numeric; /* created once, lives as long as the process */

static void c_numeric_init(void)
{
    c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* Switch this thread to the C numeric locale; returns what leave_c() restores. */
static locale_t enter_c(void)
{
    pthread_once(&c_numeric_once, c_numeric_init);
    return c_numeric ? uselocale(c_numeric) : (locale_t)0;
}

static void leave_c(locale_t old)
{
    if (old)
        uselocale(old);
}

/* ---- float repr ---------------------------------------------------------- */

/* Shortest decimal digits of a (finite, > 0) that read back as a.
   digits: NUL-terminated, no trailing zeros; *decpt: a = 0.DIGITS * 10^decpt. */
static void shortest_digits(double a, char digits[20], int *decpt)
{
    char tmp[48];
    int frexp_exp;
    int pow2 = frexp(a, &frexp_exp) == 0.5;

    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, a);
        /* tmp is "D.DDDe+XX" (or "De+XX" when prec == 1) */
        size_t nd = 0;
        const char *p = tmp;
        for (; *p && *p != 'e'; p++)
            if (*p >= '0' && *p <= '9')
                digits[nd++] = *p;
        digits[nd] = '\0';
        int exp10 = *p == 'e' ? atoi(p + 1) : 0;
        int ok = strtod(tmp, NULL) == a;
        if (!ok && pow2 && prec > 1) {
            /* At a power of two the gap below is half the gap above, so the next
               digit string up may round-trip while the nearest one does not. */
            unsigned long long m = strtoull(digits, NULL, 10) + 1;
            char up[48];
            snprintf(up, sizeof up, "%llue%d", m, exp10 - (prec - 1));
            if (strtod(up, NULL) == a) {
                snprintf(digits, 20, "%llu", m);
                if (strlen(digits) > (size_t)prec) { /* 999 + 1 = 1000 */
                    digits[prec] = '\0';
                    exp10++;
                }
                ok = 1;
            }
        }
        if (ok || prec == 17) {
            size_t len = strlen(digits);
            while (len > 1 && digits[len - 1] == '0')
                digits[--len] = '\0';
            *decpt = exp10 + 1;
            return;
        }
    }
}

size_t tbx_pyfloat_repr(double v, char out[TBX_PYFLOAT_BUFSZ])
{
    if (isnan(v))
        return (size_t)snprintf(out, TBX_PYFLOAT_BUFSZ, "nan");
    if (isinf(v))
        return (size_t)snprintf(out, TBX_PYFLOAT_BUFSZ, "%s", v < 0 ? "-inf" : "inf");
    if (v == 0)
        return (size_t)snprintf(out, TBX_PYFLOAT_BUFSZ, "%s", signbit(v) ? "-0.0" : "0.0");

    char digits[20];
    int decpt;
    locale_t old = enter_c();
    shortest_digits(fabs(v), digits, &decpt);
    leave_c(old);

    size_t nd = strlen(digits), o = 0;
    if (v < 0)
        out[o++] = '-';
    if (decpt <= -4 || decpt > 16) {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        int e = decpt - 1;
        o += (size_t)snprintf(out + o, TBX_PYFLOAT_BUFSZ - o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    } else if (decpt <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = decpt; i < 0; i++)
            out[o++] = '0';
        memcpy(out + o, digits, nd);
        o += nd;
    } else if ((size_t)decpt >= nd) {
        memcpy(out + o, digits, nd);
        o += nd;
        for (size_t i = nd; i < (size_t)decpt; i++)
            out[o++] = '0';
        out[o++] = '.';
        out[o++] = '0';
    } else {
        memcpy(out + o, digits, (size_t)decpt);
        o += (size_t)decpt;
        out[o++] = '.';
        memcpy(out + o, digits + decpt, nd - (size_t)decpt);
        o += nd - (size_t)decpt;
    }
    out[o] = '\0';
    return o;
}

/* ---- float parse --------------------------------------------------------- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int word_ieq(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    if (n != wl)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != w[i])
            return 0;
    }
    return 1;
}

static int float_syntax_ok(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    if (word_ieq(s + i, n - i, "inf") || word_ieq(s + i, n - i, "infinity") || word_ieq(s + i, n - i, "nan"))
        return 1;
    size_t d = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, d++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, d++;
    }
    if (d == 0)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t e = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, e++;
        if (e == 0)
            return 0;
    }
    return i == n;
}

int tbx_pyfloat_parse(const char *s, size_t n, double *out)
{
    while (n > 0 && is_space(s[0]))
        s++, n--;
    while (n > 0 && is_space(s[n - 1]))
        n--;
    if (n == 0 || !float_syntax_ok(s, n))
        return -1;
    char small[128];
    char *copy = n < sizeof small ? small : malloc(n + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, n);
    copy[n] = '\0';
    locale_t old = enter_c();
    char *end;
    double v = strtod(copy, &end);
    leave_c(old);
    int ok = end == copy + n;
    if (copy != small)
        free(copy);
    if (!ok)
        return -1;
    *out = v;
    return 0;
}

/* ---- UTF-8 --------------------------------------------------------------- */

/* Decode one sequence; 0 if invalid. Surrogates (ED A0..BF xx) decode as such. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF)
        return 0;
    *cp = v;
    return len;
}

int tbx_utf8_check(const unsigned char *s, size_t n)
{
    int surrogates = 0;
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_seq(s + i, n - i, &cp);
        if (k == 0)
            return -1;
        if (cp >= 0xD800 && cp <= 0xDFFF)
            surrogates = 1;
        i += k;
    }
    return surrogates;
}

size_t tbx_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t k = utf8_seq(s, n, cp);
    if (k == 0 || (*cp >= 0xD800 && *cp <= 0xDFFF)) {
        *cp = 0x80000000u | s[0];
        return 1;
    }
    return k;
}
