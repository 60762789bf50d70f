/*
 * bench-plain-publish - the publishing "limit": rabbitmq-c alone, no
 * libtoolbox. Publishes N persistent messages of a realistic Celery size (the
 * 16 Celery v2 headers of a msg.noop task, a fixed header table reused for
 * every message, and its ~90 B JSON body) to the topic exchange with
 * mandatory=1 on a channel in confirm mode, keeping at most `window`
 * messages unconfirmed (default 256 = broker_confirm_window), and prints the
 * rate from the first publish until the last confirm.
 *
 *   bench-plain-publish [-n N] [--window W] [--exchange X] [--routing-key K] [--url URL]
 *
 * Output: one line "bench-plain-publish msgs_per_s=... n=... window=... ...".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_amqp.h"

#define TASK_ID "0f6a2c8e-3d1b-4c55-9a7e-5b2d8c4e1f09"

static amqp_table_entry_t S(const char *k, const char *v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

static amqp_table_entry_t V(const char *k)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_VOID;
    return e;
}

typedef struct {
    uint64_t published, confirmed, nacked, returned;
} counters;

/* Handle one frame already read. Acks/nacks advance `confirmed`. */
static void on_frame(amqp_connection_state_t conn, const amqp_frame_t *f, counters *c)
{
    if (f->frame_type != AMQP_FRAME_METHOD)
        return;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *a = f->payload.method.decoded;
        c->confirmed = a->multiple ? a->delivery_tag : c->confirmed + 1;
        break;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *n = f->payload.method.decoded;
        uint64_t upto = n->multiple ? n->delivery_tag : c->confirmed + 1;
        c->nacked += upto - c->confirmed;
        c->confirmed = upto;
        break;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t m;
        bench_check_reply(amqp_read_message(conn, f->channel, &m, 0), "reading a returned message");
        amqp_destroy_message(&m);
        c->returned++;
        break;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION, .reply = f->payload.method};
        bench_check_reply(r, "publishing");
        break;
    }
    default:
        break;
    }
}

/* Block until at least one frame arrived, then handle every frame that is
 * already buffered (no further system calls). */
static void pump(amqp_connection_state_t conn, counters *c)
{
    amqp_frame_t f;
    bench_check_status(amqp_simple_wait_frame(conn, &f), "waiting for confirms");
    on_frame(conn, &f, c);
    while (amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn)) {
        bench_check_status(amqp_simple_wait_frame(conn, &f), "reading confirms");
        on_frame(conn, &f, c);
    }
    amqp_maybe_release_buffers(conn);
}

int main(int argc, char **argv)
{
    long n = 10000, window = 256;
    const char *exchange = "task_exchange", *rkey = "msg", *url = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-n"))
            n = bench_parse_long(v, "-n"), i++;
        else if (!strcmp(a, "--window"))
            window = bench_parse_long(v, "--window"), i++;
        else if (!strcmp(a, "--exchange") && v)
            exchange = v, i++;
        else if (!strcmp(a, "--routing-key") && v)
            rkey = v, i++;
        else if (!strcmp(a, "--url") && v)
            url = v, i++;
        else
            bench_die("usage: bench-plain-publish [-n N] [--window W] [--exchange X] "
                      "[--routing-key K] [--url URL]");
    }

    amqp_connection_state_t conn = bench_connect(url);
    amqp_confirm_select(conn, 1);
    bench_check_reply(amqp_get_rpc_reply(conn), "confirm.select");

    /* The header table of a Celery 5.2 msg.noop(12345) message, in wire order. */
    amqp_field_value_t tl_items[2];
    tl_items[0].kind = tl_items[1].kind = AMQP_FIELD_KIND_VOID;
    amqp_table_entry_t h[16];
    int k = 0;
    h[k++] = S("lang", "py");
    h[k++] = S("task", "msg.noop");
    h[k++] = S("id", TASK_ID);
    h[k++] = V("shadow");
    h[k++] = V("eta");
    h[k++] = V("expires");
    h[k++] = V("group");
    h[k++] = V("group_index");
    h[k].key = amqp_cstring_bytes("retries");
    h[k].value.kind = AMQP_FIELD_KIND_I32;
    h[k++].value.value.i32 = 0;
    h[k].key = amqp_cstring_bytes("timelimit");
    h[k].value.kind = AMQP_FIELD_KIND_ARRAY;
    h[k].value.value.array.num_entries = 2;
    h[k++].value.value.array.entries = tl_items;
    h[k++] = S("root_id", TASK_ID);
    h[k++] = V("parent_id");
    h[k++] = S("argsrepr", "[12345]");
    h[k++] = S("kwargsrepr", "{}");
    h[k++] = S("origin", "gen12345@bench-host.example.org");
    h[k].key = amqp_cstring_bytes("ignore_result");
    h[k].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    h[k++].value.value.boolean = 0;

    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
                   AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG |
                   AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.content_encoding = amqp_cstring_bytes("utf-8");
    props.headers.num_entries = k;
    props.headers.entries = h;
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props.priority = 0;
    props.correlation_id = amqp_cstring_bytes(TASK_ID);
    props.reply_to = amqp_cstring_bytes("8127b9bb-67b9-3eaa-85bc-4f66bb0cc410");
    static const char body_text[] =
        "[[12345], {}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]";
    amqp_bytes_t body = {sizeof body_text - 1, (void *)(uintptr_t)body_text};

    /* Approximate on-wire size of headers + body (keys, type octets, lengths). */
    size_t hbytes = 0;
    for (int i = 0; i < k; i++) {
        hbytes += 1 + h[i].key.len + 1;
        if (h[i].value.kind == AMQP_FIELD_KIND_UTF8)
            hbytes += 4 + h[i].value.value.bytes.len;
        else if (h[i].value.kind == AMQP_FIELD_KIND_I32)
            hbytes += 4;
        else if (h[i].value.kind == AMQP_FIELD_KIND_ARRAY)
            hbytes += 4 + 2;
        else if (h[i].value.kind == AMQP_FIELD_KIND_BOOLEAN)
            hbytes += 1;
    }

    counters c = {0};
    amqp_bytes_t ex = amqp_cstring_bytes(exchange), rk = amqp_cstring_bytes(rkey);
    double t0 = bench_now();
    while (c.published < (uint64_t)n) {
        while (c.published - c.confirmed >= (uint64_t)window)
            pump(conn, &c);
        bench_check_status(amqp_basic_publish(conn, 1, ex, rk, 1, 0, &props, body), "publishing");
        c.published++;
    }
    while (c.confirmed < c.published)
        pump(conn, &c);
    double dt = bench_now() - t0;

    printf("bench-plain-publish msgs_per_s=%.1f n=%ld window=%ld seconds=%.3f body_bytes=%zu "
           "header_bytes=%zu nacked=%" PRIu64 " returned=%" PRIu64 " maxrss_kib=%ld\n",
           (double)n / dt, n, window, dt, body.len, hbytes, c.nacked, c.returned, bench_maxrss_kib());
    bench_close(conn);
    return c.nacked || c.returned ? 1 : 0;
}
