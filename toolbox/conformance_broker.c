/*
 * conformance_broker.c - the live broker checks: login (and TLS), the exchange and the queues exist, and
 * carry the flags a Python Celery 5.2 worker declares (celery-wire.md §1.1).
 *
 * Flags are compared the way a Python worker would find out: an active redeclare with Celery's exact flags.
 * RabbitMQ answers 406 PRECONDITION_FAILED (or 405 RESOURCE_LOCKED for another connection's exclusive queue)
 * naming the first argument that differs, and closes only the channel; the probe then reopens one. It checks
 * the exchange's type before its other flags, so exchange_type and exchange_flags can each be judged alone:
 * exchange_flags redeclares with the exchange's actual type. The redeclare is done only after a passive
 * declare has shown that the entity exists, and an equivalent redeclare changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "conformance_internal.h"

#define DECL_TEXT TBX_CONF_DECL_TEXT

/* Open the broker of c. NULL when it cannot be reached: the check then holds vacuously, since
 * broker_reachable reports that (err gets the reason). */
tbx_broker *tbx_conf_open_broker(const tbx_conf_ctx *c, tbx_error *err)
{
    tbx_broker *b = NULL;
    tbx_broker_tls tls = {c->ssl_ca && *c->ssl_ca ? c->ssl_ca : NULL,
                          c->ssl_cert && *c->ssl_cert ? c->ssl_cert : NULL,
                          c->ssl_key && *c->ssl_key ? c->ssl_key : NULL, c->ssl_verify};
    if (tbx_broker_open_tls(&b, c->broker_url, 0, c->timeout, &tls, "toolbox-conformance", err))
        return NULL;
    return b;
}

/* The outcome of a declare: 0 on success, the AMQP reply code of a channel error (404, 403, 405, 406, ...)
 * with the server's text, or -1 when the connection failed. The channel is reopened after a channel error. */
static int outcome(tbx_broker *b, amqp_rpc_reply_t r, char *text, size_t cap)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    int code = -1;
    text[0] = '\0';
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = r.reply.decoded;
        code = m->reply_code;
        snprintf(text, cap, "%.*s", (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    }
    tbx_error e = {0};
    tbx_broker_check(b, r, "declaring", &e);
    if (code < 0)
        snprintf(text, cap, "%s", e.msg);
    else if (tbx_broker_reopen_channel(b, &e))
        code = -1;
    tbx_conf_one_line(text);
    return code;
}

int tbx_conf_exchange_declare(tbx_broker *b, const char *name, const char *type, int passive, char *text)
{
    if (!b->channel && tbx_broker_reopen_channel(b, NULL))
        return -1;
    /* Celery 5.2 / kombu: durable=true, auto_delete=false, internal=false, no arguments. */
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes(name), amqp_cstring_bytes(type), passive != 0,
                          1, 0, 0, amqp_empty_table);
    return outcome(b, amqp_get_rpc_reply(b->conn), text, DECL_TEXT);
}

int tbx_conf_queue_declare(tbx_broker *b, const char *name, int passive, char *text)
{
    if (!b->channel && tbx_broker_reopen_channel(b, NULL))
        return -1;
    /* Celery 5.2 / kombu: durable=true, exclusive=false, auto_delete=false, no arguments. */
    amqp_queue_declare(b->conn, b->channel, amqp_cstring_bytes(name), passive != 0, 1, 0, 0, amqp_empty_table);
    return outcome(b, amqp_get_rpc_reply(b->conn), text, DECL_TEXT);
}

/* From "... inequivalent arg 'durable' for ...: received 'true' but current is 'false'" take the argument's
 * name and its current value (quotes removed). 1 if the text has that shape. */
static int inequivalent(const char *text, char *arg, size_t acap, char *cur, size_t ccap)
{
    const char *a = strstr(text, "inequivalent arg '");
    if (!a)
        return 0;
    a += strlen("inequivalent arg '");
    const char *ae = strchr(a, '\'');
    const char *cu = strstr(text, " but current is ");
    if (!ae || !cu)
        return 0;
    snprintf(arg, acap, "%.*s", (int)(ae - a), a);
    cu += strlen(" but current is ");
    size_t n = strlen(cu);
    if (n >= 2 && cu[0] == '\'' && cu[n - 1] == '\'')
        snprintf(cur, ccap, "%.*s", (int)(n - 2), cu + 1);
    else
        snprintf(cur, ccap, "%s", cu);
    return 1;
}

static const char *celery_exchange_value(const char *arg)
{
    if (!strcmp(arg, "durable"))
        return "true";
    if (!strcmp(arg, "auto_delete") || !strcmp(arg, "internal"))
        return "false";
    return "none";
}

static const char *celery_queue_value(const char *arg)
{
    if (!strcmp(arg, "durable"))
        return "true";
    if (!strcmp(arg, "auto_delete") || !strcmp(arg, "exclusive"))
        return "false";
    return "none";
}

/* ---- checks ------------------------------------------------------------------------------------------- */

START_TEST(check_broker_reachable)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    tbx_error err = {0};
    tbx_broker *b = tbx_conf_open_broker(c, &err);
    if (!b) {
        int tls = !strncmp(c->broker_url, "amqps://", 8);
        tbx_conf_expected(&v, "to log in to the broker_url within %g s%s", c->timeout,
                          tls ? " over TLS with a verified certificate" : "");
        tbx_conf_found(&v, "%s", err.msg);
        tbx_conf_fix(&v, "check broker_url (host, port, virtual host, user, password)%s",
                     tls ? "; amqps:// needs the broker's TLS port and a CA it trusts (broker_ssl_ca_file)"
                         : "");
    }
    tbx_broker_close(b);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_exchange_exists)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    tbx_broker *b = tbx_conf_open_broker(c, NULL);
    char text[DECL_TEXT];
    int rc = b ? tbx_conf_exchange_declare(b, c->exchange, c->exchange_type, 1, text) : 0;
    if (rc != 0) {
        tbx_conf_expected(&v, "exchange '%s' to exist", c->exchange);
        tbx_conf_found(&v, "%s", text);
        if (rc == 404)
            tbx_conf_fix(&v, "run `toolbox setup` (declares it: topic, durable)");
        else
            tbx_conf_fix(&v, "give the broker user access to the virtual host and '%s'", c->exchange);
    }
    tbx_broker_close(b);
    tbx_conf_report(&v);
}
END_TEST

/* Passive declare of the exchange; 1 when it exists (a check on it makes sense). */
static int exchange_present(tbx_broker *b, const tbx_conf_ctx *c)
{
    char text[DECL_TEXT];
    return b && tbx_conf_exchange_declare(b, c->exchange, c->exchange_type, 1, text) == 0;
}

START_TEST(check_exchange_type)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    tbx_broker *b = tbx_conf_open_broker(c, NULL);
    if (exchange_present(b, c)) {
        char text[DECL_TEXT], arg[64], cur[256];
        int rc = tbx_conf_exchange_declare(b, c->exchange, "topic", 0, text);
        if (rc == 406 && inequivalent(text, arg, sizeof arg, cur, sizeof cur) && !strcmp(arg, "type")) {
            tbx_conf_expected(&v, "exchange '%s' of type topic", c->exchange);
            tbx_conf_found(&v, "type %s", cur);
            tbx_conf_fix(&v, "once producers are stopped, delete exchange '%s' and run `toolbox setup` "
                             "(RabbitMQ cannot change an exchange's type)", c->exchange);
        } else if (rc != 0 && rc != 406) {
            tbx_conf_expected(&v, "to redeclare exchange '%s' as a Celery worker does, to learn its type",
                              c->exchange);
            tbx_conf_found(&v, "%s", text);
            tbx_conf_fix(&v, "give the broker user configure permission on '%s' (Celery workers declare it)",
                         c->exchange);
        }
    }
    tbx_broker_close(b);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_exchange_flags)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    tbx_broker *b = tbx_conf_open_broker(c, NULL);
    if (exchange_present(b, c)) {
        char text[DECL_TEXT], arg[64], cur[256];
        int rc = tbx_conf_exchange_declare(b, c->exchange, "topic", 0, text);
        if (rc == 406 && inequivalent(text, arg, sizeof arg, cur, sizeof cur) && !strcmp(arg, "type")) {
            char type[256]; /* judge the flags with the type it has: exchange_type reports the type */
            snprintf(type, sizeof type, "%s", cur);
            rc = tbx_conf_exchange_declare(b, c->exchange, type, 0, text);
        }
        if (rc == 406 && inequivalent(text, arg, sizeof arg, cur, sizeof cur)) {
            tbx_conf_expected(&v, "a Celery 5.2 worker to redeclare exchange '%s' (durable=true, auto_delete="
                                  "false, internal=false, no alternate-exchange) without a 406",
                              c->exchange);
            tbx_conf_found(&v, "%s is %s, Celery declares %s (%s)", arg, cur, celery_exchange_value(arg), text);
            tbx_conf_fix(&v, "once producers are stopped, delete exchange '%s' and run `toolbox setup` "
                             "(RabbitMQ cannot change an exchange's flags)", c->exchange);
        } else if (rc != 0) {
            tbx_conf_expected(&v, "to redeclare exchange '%s' with Celery 5.2's flags", c->exchange);
            tbx_conf_found(&v, "%s", text);
            if (rc == 406)
                tbx_conf_fix(&v, "delete exchange '%s' and run `toolbox setup`", c->exchange);
            else
                tbx_conf_fix(&v, "give the broker user configure permission on '%s'", c->exchange);
        }
    }
    tbx_broker_close(b);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_queues_exist)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    tbx_broker *b = tbx_conf_open_broker(c, NULL);
    tbx_buf missing = {0}, other = {0};
    for (size_t i = 0; b && i < c->ntopology; i++) {
        char text[DECL_TEXT];
        int rc = tbx_conf_queue_declare(b, c->topology[i], 1, text);
        if (rc == 404)
            tbx_buf_printf(&missing, "%s'%s'", missing.len ? ", " : "", c->topology[i]);
        else if (rc != 0 && rc != 405) /* 405: another connection's exclusive queue; queue_flags reports it */
            tbx_buf_printf(&other, "%s'%s': %s", other.len ? ", " : "", c->topology[i], text);
    }
    if (missing.len || other.len) {
        tbx_conf_expected(&v, "the default, platform and service queues to exist");
        if (missing.len)
            tbx_conf_found(&v, "missing: %.*s", (int)missing.len, (const char *)missing.data);
        if (other.len)
            tbx_conf_found(&v, "cannot check %.*s", (int)other.len, (const char *)other.data);
        tbx_conf_fix(&v, "run `toolbox setup` (declares and binds them)%s",
                     other.len ? "; give the broker user access to them" : "");
    }
    tbx_buf_free(&missing);
    tbx_buf_free(&other);
    tbx_broker_close(b);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_queue_flags)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    tbx_broker *b = tbx_conf_open_broker(c, NULL);
    tbx_buf bad = {0};
    int denied = 0;
    for (size_t i = 0; b && i < c->ntopology; i++) {
        const char *q = c->topology[i];
        char text[DECL_TEXT], arg[64], cur[256];
        int rc = tbx_conf_queue_declare(b, q, 1, text);
        if (rc == 0)
            rc = tbx_conf_queue_declare(b, q, 0, text);
        else if (rc != 405)
            continue; /* missing or inaccessible: queues_exist reports it */
        if (rc == 406 && inequivalent(text, arg, sizeof arg, cur, sizeof cur))
            tbx_buf_printf(&bad, "%s'%s' has %s %s, Celery declares %s", bad.len ? ", " : "", q, arg, cur,
                           celery_queue_value(arg));
        else if (rc == 405)
            tbx_buf_printf(&bad, "%s'%s' is exclusive to another connection, Celery declares exclusive=false",
                           bad.len ? ", " : "", q);
        else if (rc != 0) {
            tbx_buf_printf(&bad, "%s'%s': %s", bad.len ? ", " : "", q, text);
            denied |= rc == 403;
        }
    }
    if (bad.len) {
        tbx_conf_expected(&v, "a Celery 5.2 worker to redeclare every queue (durable=true, exclusive=false, "
                              "auto_delete=false, no arguments) without a 406");
        tbx_conf_found(&v, "%.*s", (int)bad.len, (const char *)bad.data);
        tbx_conf_fix(&v, "%s", denied ? "give the broker user configure permission on the queues"
                                      : "drain the queue, delete it and run `toolbox setup` (RabbitMQ cannot "
                                        "change a queue's flags)");
    }
    tbx_buf_free(&bad);
    tbx_broker_close(b);
    tbx_conf_report(&v);
}
END_TEST

void tbx_conf_add_broker_checks(Suite *s, int ctx_index, const tbx_conf_ctx *c)
{
    double t = 4 * c->timeout + 20;
    tbx_conf_add(s, "broker_reachable", check_broker_reachable, ctx_index, 0, t);
    tbx_conf_add(s, "exchange_exists", check_exchange_exists, ctx_index, 0, t);
    tbx_conf_add(s, "exchange_type", check_exchange_type, ctx_index, 0, t);
    tbx_conf_add(s, "exchange_flags", check_exchange_flags, ctx_index, 0, t);
    tbx_conf_add(s, "queues_exist", check_queues_exist, ctx_index, 0, t);
    tbx_conf_add(s, "queue_flags", check_queue_flags, ctx_index, 0, t);
}
