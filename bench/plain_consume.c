/*
 * bench-plain-consume - the consuming "limit": rabbitmq-c alone, no
 * libtoolbox. Drains N messages from a pre-filled durable queue with
 * basic.consume (prefetch 100, manual ack of each message, one by one) and
 * prints the rate from the first delivery until the broker has processed the
 * last ack (a synchronous passive queue.declare after it).
 *
 *   bench-plain-consume [-n N] [--queue Q] [--prefetch P] [--url URL]
 *
 * Output: one line "bench-plain-consume msgs_per_s=... n=... prefetch=... ...".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_amqp.h"

int main(int argc, char **argv)
{
    long n = 10000, prefetch = 100;
    const char *queue = "msg", *url = NULL;
    double timeout = 120;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-n"))
            n = bench_parse_long(v, "-n"), i++;
        else if (!strcmp(a, "--prefetch"))
            prefetch = bench_parse_long(v, "--prefetch"), i++;
        else if (!strcmp(a, "--queue") && v)
            queue = v, i++;
        else if (!strcmp(a, "--url") && v)
            url = v, i++;
        else if (!strcmp(a, "--timeout"))
            timeout = (double)bench_parse_long(v, "--timeout"), i++;
        else
            bench_die("usage: bench-plain-consume [-n N] [--queue Q] [--prefetch P] [--url URL] "
                      "[--timeout S]");
    }
    if (prefetch > 65535)
        bench_die("--prefetch: at most 65535");

    amqp_connection_state_t conn = bench_connect(url);
    amqp_bytes_t q = amqp_cstring_bytes(queue);
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(conn, 1, q, 1, 0, 0, 0, amqp_empty_table);
    bench_check_reply(amqp_get_rpc_reply(conn), "passive queue.declare");
    if (ok->message_count < (uint32_t)n)
        bench_die("queue %s holds %u messages, fewer than -n %ld", queue, ok->message_count, n);
    amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
    bench_check_reply(amqp_get_rpc_reply(conn), "basic.qos");
    amqp_basic_consume(conn, 1, q, amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    bench_check_reply(amqp_get_rpc_reply(conn), "basic.consume");

    double t0 = 0, deadline = bench_now() + timeout;
    unsigned long long bytes = 0;
    long got = 0;
    while (got < n) {
        amqp_envelope_t env;
        struct timeval tv = {1, 0};
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
            if (bench_now() > deadline)
                bench_die("only %ld of %ld messages within %.0f s", got, n, timeout);
            continue;
        }
        bench_check_reply(r, "consuming");
        if (got == 0)
            t0 = bench_now();
        bytes += env.message.body.len;
        bench_check_status(amqp_basic_ack(conn, 1, env.delivery_tag, 0), "acking");
        amqp_destroy_envelope(&env);
        got++;
    }
    /* One synchronous round trip on the channel: once it returns, the broker
     * has processed every ack sent before it. */
    amqp_queue_declare(conn, 1, q, 1, 0, 0, 0, amqp_empty_table);
    double dt = bench_now() - t0;
    /* The timing covers n-1 inter-delivery gaps plus the last ack's processing. */
    printf("bench-plain-consume msgs_per_s=%.1f n=%ld prefetch=%ld seconds=%.3f avg_body_bytes=%.0f "
           "maxrss_kib=%ld\n",
           (double)n / dt, n, prefetch, dt, (double)bytes / (double)n, bench_maxrss_kib());
    bench_close(conn);
    return 0;
}
