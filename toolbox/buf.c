/* buf.c - growable byte buffer used by the encoders. */
#include "internal.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tbx_buf_reserve(tbx_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    size_t need = b->len + extra;
    if (need < b->len)
        return -1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    unsigned char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int tbx_buf_append(tbx_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (tbx_buf_reserve(b, n))
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int tbx_buf_putc(tbx_buf *b, unsigned char c)
{
    return tbx_buf_append(b, &c, 1);
}

int tbx_buf_printf(tbx_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || tbx_buf_reserve(b, (size_t)n + 1))
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void tbx_buf_free(tbx_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
