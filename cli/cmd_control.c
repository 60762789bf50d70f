/*
 * cmd_control.c - `toolbox ping`, `toolbox revoke`, `toolbox interrupt`: remote
 * control over Celery's pidbox, understood by C and Python workers alike
 * (interrupt is ours). Replies are collected for --timeout seconds, or until
 * --limit workers have answered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "broker.h"
#include "cli.h"
#include "toolbox/message.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Broadcast method(arguments) and print each worker's reply; returns the exit code. */
static int broadcast(const char *method, json_t *arguments, double timeout, long long limit)
{
    tbx_config *cfg = cli_config();
    if (!cfg) {
        json_decref(arguments);
        return CLI_USAGE;
    }
    tbx_error err = {0};
    tbx_broker *b = NULL;
    int rc = CLI_FAIL;
    tbx_status st = tbx_broker_open_cfg(&b, cfg, "toolbox control", &err);
    if (st) {
        rc = cli_fail(st, &err);
        goto out;
    }
    char oid[TBX_TASK_ID_LEN + 1], ticket[TBX_TASK_ID_LEN + 1];
    tbx_uuid4(oid);
    tbx_uuid4(ticket);
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes("celery.pidbox"), amqp_cstring_bytes("fanout"), 0,
                          0, 0, 0, amqp_empty_table);
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes("reply.celery.pidbox"),
                          amqp_cstring_bytes("direct"), 0, 0, 0, 0, amqp_empty_table);
    amqp_queue_declare_ok_t *q = amqp_queue_declare(b->conn, b->channel, amqp_empty_bytes, 0, 0, 1, 1,
                                                    amqp_empty_table);
    if ((st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), "declaring the reply queue", &err))) {
        rc = cli_fail(st, &err);
        goto out;
    }
    amqp_bytes_t qname = amqp_bytes_malloc_dup(q->queue);
    amqp_queue_bind(b->conn, b->channel, qname, amqp_cstring_bytes("reply.celery.pidbox"), amqp_cstring_bytes(oid),
                    amqp_empty_table);
    amqp_basic_consume(b->conn, b->channel, qname, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
    amqp_bytes_free(qname);
    if ((st = tbx_broker_check(b, amqp_get_rpc_reply(b->conn), "consuming replies", &err))) {
        rc = cli_fail(st, &err);
        goto out;
    }
    json_t *msg = json_pack("{s:s, s:O, s:n, s:n, s:n, s:s, s:{s:s, s:s}}", "method", method, "arguments",
                            arguments, "destination", "pattern", "matcher", "ticket", ticket, "reply_to",
                            "exchange", "reply.celery.pidbox", "routing_key", oid);
    char *text = json_dumps(msg, JSON_ENCODE_ANY);
    json_decref(msg);
    amqp_table_entry_t h[2] = {
        {amqp_cstring_bytes("clock"), {AMQP_FIELD_KIND_I32, {.i32 = 1}}},
        {amqp_cstring_bytes("expires"), {AMQP_FIELD_KIND_F64, {.f64 = now_s() + timeout}}},
    };
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG | AMQP_BASIC_HEADERS_FLAG |
               AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.content_encoding = amqp_cstring_bytes("utf-8");
    p.headers.num_entries = 2;
    p.headers.entries = h;
    p.delivery_mode = 1;
    int prc = amqp_basic_publish(b->conn, b->channel, amqp_cstring_bytes("celery.pidbox"), amqp_empty_bytes, 0, 0,
                                 &p, amqp_cstring_bytes(text ? text : "{}"));
    free(text);
    if (prc != AMQP_STATUS_OK) {
        rc = cli_fail(tbx_broker_status(b, prc, "publishing the request", &err), &err);
        goto out;
    }
    int replies = 0;
    double deadline = now_s() + timeout;
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0)
            break;
        struct timeval tv = {(time_t)left, (suseconds_t)((left - (double)(time_t)left) * 1e6)};
        amqp_envelope_t env;
        amqp_maybe_release_buffers(b->conn);
        amqp_rpc_reply_t r = amqp_consume_message(b->conn, &env, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            break;
        printf("%.*s\n", (int)env.message.body.len, (const char *)env.message.body.bytes);
        replies++;
        amqp_destroy_envelope(&env);
        if (limit > 0 && replies >= limit)
            break;
    }
    fflush(stdout);
    if (replies) {
        rc = CLI_OK;
    } else {
        fprintf(stderr, "toolbox: no worker replied to %s within %.1f s\n", method, timeout);
    }
out:
    json_decref(arguments);
    tbx_broker_close(b);
    tbx_config_free(cfg);
    return rc;
}

int cmd_control(cli_args *a, const char *method)
{
    const char *id = NULL, *v;
    double timeout = 1.0, countdown = 0;
    long long limit = 0;
    int terminate = 0, retry = 0, cancel = 0, r;
    while (a->i < a->argc) {
        if ((r = cli_common(a)) != 0) {
            if (r < 0)
                return CLI_USAGE;
        } else if ((r = cli_opt(a, "--timeout", &v)) != 0) {
            if (r < 0 || cli_parse_double("--timeout", v, &timeout))
                return CLI_USAGE;
        } else if ((r = cli_opt(a, "--countdown", &v)) != 0) {
            if (r < 0 || cli_parse_double("--countdown", v, &countdown))
                return CLI_USAGE;
        } else if ((r = cli_opt(a, "--limit", &v)) != 0) {
            if (r < 0 || cli_parse_int("--limit", v, 0, 1000000, &limit))
                return CLI_USAGE;
        } else if (cli_flag(a, "--terminate")) {
            terminate = 1;
        } else if (cli_flag(a, "--retry")) {
            retry = 1;
        } else if (cli_flag(a, "--cancel")) {
            cancel = 1;
        } else if (a->argv[a->i][0] != '-' && !id && strcmp(method, "ping") != 0) {
            id = a->argv[a->i++];
        } else {
            fprintf(stderr, "toolbox: %s: unexpected argument '%s'\n", method, a->argv[a->i]);
            return CLI_USAGE;
        }
    }
    if (!strcmp(method, "ping"))
        return broadcast("ping", json_object(), timeout, limit);
    if (!id) {
        fprintf(stderr, "toolbox: %s: missing TASK_ID\n", method);
        return CLI_USAGE;
    }
    if (!strcmp(method, "revoke"))
        return broadcast("revoke", json_pack("{s:s, s:b, s:s}", "task_id", id, "terminate", terminate, "signal",
                                             "SIGKILL"), timeout, limit);
    if (retry == cancel) {
        fprintf(stderr, "toolbox: interrupt: give exactly one of --retry or --cancel\n");
        return CLI_USAGE;
    }
    return broadcast("interrupt", json_pack("{s:s, s:s, s:f}", "task_id", id, "action", retry ? "retry" : "cancel",
                                            "countdown", countdown), timeout, limit);
}
