/* broker.c - opening, checking and closing AMQP connections. */
#include "broker.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "toolbox/config.h"

static void amqp_reply_text(amqp_rpc_reply_t r, char *buf, size_t cap)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(buf, cap, "ok");
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, cap, "missing RPC reply");
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, cap, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, cap, "connection closed by broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, cap, "channel closed by broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            snprintf(buf, cap, "unexpected server method 0x%08X", r.reply.id);
        }
        break;
    }
}

tbx_status tbx_broker_check(tbx_broker *b, amqp_rpc_reply_t r, const char *what, tbx_error *err)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return TBX_OK;
    char text[300];
    amqp_reply_text(r, text, sizeof text);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(b->conn, b->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        b->channel = 0; /* must be reopened */
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(b->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        b->broken = 1;
    } else {
        b->broken = 1;
    }
    return tbx_seterr(err, TBX_EBROKER, "%s on %s: %s", what, b->masked_url, text);
}

tbx_status tbx_broker_status(tbx_broker *b, int status, const char *what, tbx_error *err)
{
    if (status >= 0)
        return TBX_OK;
    if (status == AMQP_STATUS_TIMEOUT)
        return tbx_seterr(err, TBX_ETIMEOUT, "%s on %s: timed out", what, b->masked_url);
    b->broken = 1;
    return tbx_seterr(err, TBX_EBROKER, "%s on %s: %s", what, b->masked_url, amqp_error_string2(status));
}

tbx_status tbx_broker_reopen_channel(tbx_broker *b, tbx_error *err)
{
    if (b->channel)
        return TBX_OK;
    /* A fresh number each time: the broker may still be closing the old one. */
    amqp_channel_t ch = (amqp_channel_t)(b->last_channel % 2000 + 1);
    amqp_channel_open(b->conn, ch);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(b->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        return tbx_broker_check(b, r, "opening a channel", err);
    b->channel = b->last_channel = ch;
    return TBX_OK;
}

tbx_status tbx_broker_open(tbx_broker **out, const char *url, int heartbeat, double timeout,
                           const char *name, tbx_error *err)
{
    *out = NULL;
    tbx_broker *b = calloc(1, sizeof *b);
    char *copy = url ? strdup(url) : NULL;
    if (!b || !copy) {
        free(b);
        free(copy);
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    }
    b->masked_url = tbx_mask_url(url);
    /* Celery writes the default vhost as a second slash (amqp://h:5672//);
     * rabbitmq-c wants it percent-encoded (amqp://h:5672/%2F). */
    const char *auth = strstr(copy, "://");
    char *path = auth ? strchr(auth + 3, '/') : NULL;
    if (path && path[1] == '/') {
        size_t n = strlen(copy) + 3;
        char *fixed = malloc(n);
        if (fixed) {
            snprintf(fixed, n, "%.*s/%%2F%s", (int)(path - copy), copy, path + 2);
            free(copy);
            copy = fixed;
        }
    }
    struct amqp_connection_info ci;
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        tbx_seterr(err, TBX_ECONFIG, "broker_url '%s' is not a valid amqp:// or amqps:// URL",
                   b->masked_url ? b->masked_url : "?");
        free(copy);
        free(b->masked_url);
        free(b);
        return TBX_ECONFIG;
    }
    tbx_status st = TBX_OK;
    b->conn = amqp_new_connection();
    amqp_socket_t *sock = ci.ssl ? amqp_ssl_socket_new(b->conn) : amqp_tcp_socket_new(b->conn);
    if (!b->conn || !sock) {
        st = tbx_seterr(err, TBX_ENOMEM, "cannot create a socket for %s", b->masked_url);
        goto fail;
    }
    if (ci.ssl) {
        const char *ca = getenv("TOOLBOX_BROKER_CA_FILE");
        if (ca && *ca && amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK) {
            st = tbx_seterr(err, TBX_ECONFIG, "cannot load CA file %s", ca);
            goto fail;
        }
        amqp_ssl_socket_set_verify_peer(sock, 1);
        amqp_ssl_socket_set_verify_hostname(sock, 1);
    }
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    int rc = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        st = tbx_seterr(err, TBX_EBROKER, "cannot connect to %s: %s", b->masked_url, amqp_error_string2(rc));
        goto fail;
    }
    amqp_set_rpc_timeout(b->conn, &tv);

    /* Ask for the notifications RabbitMQ only sends to clients that advertise them. */
    amqp_table_entry_t caps[] = {
        {amqp_cstring_bytes("connection.blocked"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("consumer_cancel_notify"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
    };
    amqp_table_entry_t props[2];
    props[0].key = amqp_cstring_bytes("capabilities");
    props[0].value.kind = AMQP_FIELD_KIND_TABLE;
    props[0].value.value.table.num_entries = 2;
    props[0].value.value.table.entries = caps;
    props[1].key = amqp_cstring_bytes("connection_name");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes(name ? name : "toolbox");
    amqp_table_t client_props = {2, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(b->conn, ci.vhost, 0, 131072, heartbeat,
                                                    &client_props, AMQP_SASL_METHOD_PLAIN,
                                                    ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char text[300];
        amqp_reply_text(r, text, sizeof text);
        st = tbx_seterr(err, TBX_EBROKER, "cannot log in to %s: %s", b->masked_url, text);
        goto fail;
    }
    b->channel = 0;
    if ((st = tbx_broker_reopen_channel(b, err)))
        goto fail;
    free(copy);
    *out = b;
    return TBX_OK;
fail:
    free(copy);
    b->broken = 1;
    tbx_broker_close(b);
    return st;
}

void tbx_broker_close(tbx_broker *b)
{
    if (!b)
        return;
    if (b->conn) {
        if (!b->broken) {
            if (b->channel)
                amqp_channel_close(b->conn, b->channel, AMQP_REPLY_SUCCESS);
            amqp_connection_close(b->conn, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(b->conn);
    }
    free(b->masked_url);
    free(b);
}

tbx_status tbx_broker_queue_info(tbx_broker *b, const char *queue, uint32_t *messages,
                                 uint32_t *consumers, tbx_error *err)
{
    if (!b->channel && tbx_broker_reopen_channel(b, err))
        return TBX_EBROKER;
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(b->conn, b->channel, amqp_cstring_bytes(queue),
                                                     1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(b->conn);
    if (!ok) {
        int missing = r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
                      r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
                      ((amqp_channel_close_t *)r.reply.decoded)->reply_code == AMQP_NOT_FOUND;
        tbx_status st = tbx_broker_check(b, r, "declaring queue (passive)", err);
        if (missing) {
            tbx_broker_reopen_channel(b, NULL);
            return tbx_seterr(err, TBX_ENOTFOUND, "queue '%s' does not exist", queue);
        }
        return st;
    }
    if (messages)
        *messages = ok->message_count;
    if (consumers)
        *consumers = ok->consumer_count;
    return TBX_OK;
}
