/*
 * bench_amqp.c - see bench_amqp.h.
 */
#include "bench_amqp.h"

#include <amqp_tcp_socket.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    fputs("bench: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void bench_check_reply(amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return;
    case AMQP_RESPONSE_NONE:
        bench_die("%s: missing RPC reply", what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        bench_die("%s: %s", what, amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            bench_die("%s: channel closed by the broker: %u %.*s", what, m->reply_code,
                      (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        }
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            bench_die("%s: connection closed by the broker: %u %.*s", what, m->reply_code,
                      (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        }
        bench_die("%s: unexpected server method 0x%08X", what, r.reply.id);
    }
    bench_die("%s: unknown reply type", what);
}

void bench_check_status(int status, const char *what)
{
    if (status != AMQP_STATUS_OK)
        bench_die("%s: %s", what, amqp_error_string2(status));
}

amqp_connection_state_t bench_connect(const char *url)
{
    if (!url)
        url = getenv("TOOLBOX_BROKER_URL");
    if (!url || !*url)
        url = "amqp://guest:guest@127.0.0.1:35672//";
    char *copy = strdup(url);
    if (!copy)
        bench_die("out of memory");
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK)
        bench_die("cannot parse the broker URL");
    if (ci.ssl)
        bench_die("amqps:// is not supported by the plain benchmarks");
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = conn ? amqp_tcp_socket_new(conn) : NULL;
    if (!sock)
        bench_die("out of memory");
    struct timeval tv = {5, 0};
    bench_check_status(amqp_socket_open_noblock(sock, ci.host, ci.port, &tv), "connecting");
    bench_check_reply(amqp_login(conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user,
                                 ci.password),
                      "logging in");
    amqp_channel_open(conn, 1);
    bench_check_reply(amqp_get_rpc_reply(conn), "opening channel 1");
    free(copy);
    return conn;
}

void bench_close(amqp_connection_state_t conn)
{
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

long bench_maxrss_kib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

long bench_parse_long(const char *text, const char *what)
{
    char *end;
    errno = 0;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || errno || end == text || *end || v <= 0)
        bench_die("%s: expected a positive integer, got '%s'", what, text ? text : "(none)");
    return v;
}
