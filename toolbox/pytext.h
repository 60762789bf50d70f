/*
 * pytext.h - Python text forms shared by the pickle codec and tbx_pyrepr; not installed.
 *
 * Float conversions run in the "C" locale whatever the process locale is, so a
 * program that called setlocale(LC_ALL, "") still reads and writes "1.5".
 */
#ifndef TBX_PYTEXT_H
#define TBX_PYTEXT_H

#include <stddef.h>
#include <stdint.h>

/* Longest repr of a double ("-2.2250738585072014e-308") plus NUL, rounded up. */
#define TBX_PYFLOAT_BUFSZ 32

/* Write Python's repr(float(v)) into out (NUL-terminated): shortest round-trip digits,
   fixed notation for 1e-4 <= |v| < 1e16 (always with a '.'), otherwise d.ddde+XX;
   "nan", "inf", "-inf". Returns the length written. */
size_t tbx_pyfloat_repr(double v, char out[TBX_PYFLOAT_BUFSZ]);

/* Parse the text Python's float() accepts (subset: optional surrounding ASCII
   whitespace, sign, decimal digits with '.', exponent, inf/infinity/nan in any case;
   no underscores, no hex). s need not be NUL-terminated. Returns 0 and sets *out,
   or -1 if the text is not a float literal. Values that overflow become +-inf as in Python. */
int tbx_pyfloat_parse(const char *s, size_t n, double *out);

/* UTF-8 check. Returns 0 if s[0..n) is valid UTF-8 (no overlongs, no code points above
   U+10FFFF, no surrogates). Returns 1 if the only defects are encoded surrogates
   (U+D800..U+DFFF as 3-byte sequences, which Python's "surrogatepass" accepts),
   and -1 otherwise. */
int tbx_utf8_check(const unsigned char *s, size_t n);

/* Decode one code point starting at s[0] (n > 0 bytes available). Returns the number of
   bytes consumed (1-4) and sets *cp; on an invalid sequence returns 1 and sets *cp to
   the byte value with bit 31 set (so callers can escape the raw byte). */
size_t tbx_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

#endif
