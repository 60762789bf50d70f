/*
 * internal.h - helpers shared by libtoolbox's modules; not installed.
 */
#ifndef TOOLBOX_INTERNAL_H
#define TOOLBOX_INTERNAL_H

#include "toolbox/error.h"

#include <stddef.h>
#include <stdint.h>

/* Drop const from a pointer the C API makes us pass as mutable but never writes. */
#define TBX_UNCONST(p) ((void *)(uintptr_t)(p))

#if defined(__GNUC__)
#define TBX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TBX_PRINTF(a, b)
#endif

/* Fill err (if non-NULL) with code and a formatted message; returns code. */
tbx_status tbx_seterr(tbx_error *err, tbx_status code, const char *fmt, ...) TBX_PRINTF(3, 4);

/* Growable byte buffer. Zero-initialise; free data with free(). */
typedef struct tbx_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
} tbx_buf;

int tbx_buf_reserve(tbx_buf *b, size_t extra);          /* 0 ok, -1 ENOMEM */
int tbx_buf_append(tbx_buf *b, const void *p, size_t n); /* 0 ok, -1 ENOMEM */
int tbx_buf_putc(tbx_buf *b, unsigned char c);
int tbx_buf_printf(tbx_buf *b, const char *fmt, ...) TBX_PRINTF(2, 3);
void tbx_buf_free(tbx_buf *b);

/* clock.c: seconds on the monotonic clock; a random delay in [0, upto) for spreading retries
 * (rand(): seed it once per process); wait up to seconds for fd to become readable
 * (1 readable, 0 timed out, -1 poll failed). */
double tbx_mono(void);
double tbx_jitter(double upto);
/* The next wait of a doubling backoff: *delay plus up to 1 s of jitter; *delay doubles, capped at 30 s. */
double tbx_backoff(double *delay);
int tbx_wait_readable(int fd, double seconds);

/* Call attempt(ud, err) until it returns TBX_OK, for at most seconds, waiting a doubling delay
 * (1 s, 2 s ... 30 s, plus jitter) between tries and logging each failure; a byte readable on
 * stop_fd (a signal pipe) ends the wait. 0 succeeded, -1 gave up (err holds the last failure),
 * 1 stopped. Services started together come up in any order: daemons use it to connect at start. */
int tbx_retry_startup(double seconds, int stop_fd, tbx_status (*attempt)(void *ud, tbx_error *err), void *ud,
                      tbx_error *err);

#endif
