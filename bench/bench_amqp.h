/*
 * bench_amqp.h - the few helpers the plain rabbitmq-c benchmarks share:
 * connect from an amqp:// URL, die on errors, a monotonic clock, max RSS.
 *
 * Benchmarks are programs, not library code: they print and exit on errors.
 * Nothing here uses libtoolbox, so the "plain" figures are what rabbitmq-c
 * alone can do.
 */
#ifndef BENCH_AMQP_H
#define BENCH_AMQP_H

#include <amqp.h>
#include <stddef.h>

/* Seconds on CLOCK_MONOTONIC. */
double bench_now(void);

/* Print "prog: error: ..." and exit(1). */
void bench_die(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

/* Die unless r is a normal reply; what names the operation. */
void bench_check_reply(amqp_rpc_reply_t r, const char *what);

/* Die unless status is AMQP_STATUS_OK. */
void bench_check_status(int status, const char *what);

/* Open url (amqp://user:pass@host:port/vhost; NULL: $TOOLBOX_BROKER_URL, else
 * the local default) with heartbeats off, channel 1 open. The connection
 * is owned by the caller (amqp_connection_close + amqp_destroy_connection). */
amqp_connection_state_t bench_connect(const char *url);

/* Close channel 1 and the connection, then free it. */
void bench_close(amqp_connection_state_t conn);

/* Peak resident set size of this process, in KiB. */
long bench_maxrss_kib(void);

/* Parse a positive integer option value or die. */
long bench_parse_long(const char *text, const char *what);

#endif
