/* broker.c - opening, checking and closing AMQP connections. */
#include "broker.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

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

/* ------------------------------------------------------------------------------------------------ TLS */

/* rabbitmq-c's sockets each have an SSL_CTX of their own; its app data points at the tbx_broker, which
 * outlives the socket. Records the first verification failure (the message after a failed handshake
 * comes from it) and keeps OpenSSL's verdict. */
static int tls_verify_cb(int ok, X509_STORE_CTX *store)
{
    if (ok)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    tbx_broker *b = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (b && !b->tls_verify_error) {
        b->tls_verify_error = X509_STORE_CTX_get_error(store);
        b->tls_verify_depth = X509_STORE_CTX_get_error_depth(store);
    }
    return ok;
}

/* Encrypted keys are refused rather than prompted for on the terminal (OpenSSL's default). */
static int tls_no_password_cb(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return -1;
}

static const char *unset_null(const char *s)
{
    return s && *s ? s : NULL;
}

/* " (reason)" of OpenSSL's last error in this thread, or "". Clears the error queue. */
static void tls_reason(char *buf, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        snprintf(buf, cap, " (%s)", r);
    else
        buf[0] = '\0';
    ERR_clear_error();
}

/* A file named by a configuration key must be readable; says which key when it is not. */
static tbx_status tls_file_readable(const char *key, const char *path, tbx_error *err)
{
    if (access(path, R_OK) == 0)
        return TBX_OK;
    return tbx_seterr(err, TBX_ECONFIG, "%s: cannot read '%s': %s", key, path, strerror(errno));
}

static tbx_status tls_setup(tbx_broker *b, amqp_socket_t *sock, const char *host, const tbx_broker_tls *tls,
                            tbx_error *err)
{
    static const tbx_broker_tls defaults = {NULL, NULL, NULL, 1};
    if (!tls)
        tls = &defaults;
    const char *ca = unset_null(tls->ca_file), *cert = unset_null(tls->cert_file);
    const char *key = unset_null(tls->key_file);
    SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
    char why[200];
    ERR_clear_error();
    SSL_CTX_set_app_data(ctx, b);
    SSL_CTX_set_default_passwd_cb(ctx, tls_no_password_cb);
    if (amqp_ssl_socket_set_ssl_versions(sock, AMQP_TLSv1_2, AMQP_TLSvLATEST) != AMQP_STATUS_OK)
        return tbx_seterr(err, TBX_EBROKER, "cannot connect to %s: this OpenSSL offers no TLS 1.2 or later",
                          b->masked_url);
    if (ca) {
        if (tls_file_readable("broker_ssl_ca_file", ca, err))
            return TBX_ECONFIG;
        if (amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK) {
            tls_reason(why, sizeof why);
            return tbx_seterr(err, TBX_ECONFIG, "broker_ssl_ca_file: no PEM certificate in '%s'%s", ca, why);
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        tls_reason(why, sizeof why);
        return tbx_seterr(err, TBX_ECONFIG, "cannot load the system's CA certificates%s; set broker_ssl_ca_file",
                          why);
    }
    if (key && !cert)
        return tbx_seterr(err, TBX_ECONFIG, "broker_ssl_key_file is set but broker_ssl_cert_file is not");
    if (cert) {
        if (tls_file_readable("broker_ssl_cert_file", cert, err) ||
            (key && tls_file_readable("broker_ssl_key_file", key, err)))
            return TBX_ECONFIG;
        if (amqp_ssl_socket_set_key(sock, cert, key ? key : cert) != AMQP_STATUS_OK) {
            tls_reason(why, sizeof why);
            return tbx_seterr(err, TBX_ECONFIG,
                              "broker_ssl_cert_file/broker_ssl_key_file: cannot use certificate '%s' with key "
                              "'%s'%s: both PEM, the key unencrypted and matching the certificate",
                              cert, key ? key : cert, why);
        }
    }
    /* OpenSSL checks the chain during the handshake and the host against DNS and IP address names
     * (rabbitmq-c's own host check reads DNS names only, so 127.0.0.1 would never match). */
    if (tls->verify) {
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1 && X509_VERIFY_PARAM_set1_host(param, host, 0) != 1)
            return tbx_seterr(err, TBX_ENOMEM, NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_cb);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    amqp_ssl_socket_set_verify_peer(sock, tls->verify ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(sock, 0);
    ERR_clear_error();
    return TBX_OK;
}

/* The message of a failed connect: verification failures say what was wrong with the broker's
 * certificate, other TLS failures carry OpenSSL's reason (e.g. an alert from the broker). */
static tbx_status connect_failed(tbx_broker *b, int tls, const char *host, int rc, tbx_error *err)
{
    int e = b->tls_verify_error;
    if (e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        ERR_clear_error();
        return tbx_seterr(err, TBX_EBROKER, "cannot connect to %s: TLS: the broker's certificate is not for host %s",
                          b->masked_url, host);
    }
    if (e) {
        ERR_clear_error();
        return tbx_seterr(err, TBX_EBROKER,
                          "cannot connect to %s: TLS: the broker's certificate is not trusted: %s (certificate "
                          "%d of the chain; is broker_ssl_ca_file the CA that signed it?)",
                          b->masked_url, X509_verify_cert_error_string(e), b->tls_verify_depth);
    }
    char why[200] = "";
    if (tls)
        tls_reason(why, sizeof why);
    return tbx_seterr(err, TBX_EBROKER, "cannot connect to %s: %s%s", b->masked_url, amqp_error_string2(rc), why);
}

tbx_status tbx_broker_open(tbx_broker **out, const char *url, int heartbeat, double timeout,
                           const char *name, tbx_error *err)
{
    return tbx_broker_open_tls(out, url, heartbeat, timeout, NULL, name, err);
}

tbx_status tbx_broker_open_cfg(tbx_broker **out, const tbx_config *cfg, const char *name, tbx_error *err)
{
    tbx_broker_tls tls = {
        tbx_config_str(cfg, "broker_ssl_ca_file"),
        tbx_config_str(cfg, "broker_ssl_cert_file"),
        tbx_config_str(cfg, "broker_ssl_key_file"),
        tbx_config_bool(cfg, "broker_ssl_verify"),
    };
    return tbx_broker_open_tls(out, tbx_config_str(cfg, "broker_url"), (int)tbx_config_int(cfg, "broker_heartbeat"),
                               tbx_config_double(cfg, "broker_connect_timeout"), &tls, name, err);
}

tbx_status tbx_broker_open_tls(tbx_broker **out, const char *url, int heartbeat, double timeout,
                               const tbx_broker_tls *tls, const char *name, tbx_error *err)
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
    if (ci.ssl && (st = tls_setup(b, sock, ci.host, tls, err)))
        goto fail;
    struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    int rc = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        st = connect_failed(b, ci.ssl, ci.host, rc, err);
        goto fail;
    }
    amqp_set_rpc_timeout(b->conn, &tv);
    amqp_set_handshake_timeout(b->conn, &tv); /* the login too (rabbitmq-c's default is 12 s) */

    /* Ask for the notifications RabbitMQ only sends to clients that advertise them. */
    amqp_table_entry_t caps[] = {
        {amqp_cstring_bytes("connection.blocked"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("consumer_cancel_notify"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        /* a refused login gets connection.close 403 with a reason instead of a bare disconnect */
        {amqp_cstring_bytes("authentication_failure_close"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
    };
    amqp_table_entry_t props[2];
    props[0].key = amqp_cstring_bytes("capabilities");
    props[0].value.kind = AMQP_FIELD_KIND_TABLE;
    props[0].value.value.table.num_entries = (int)(sizeof caps / sizeof caps[0]);
    props[0].value.value.table.entries = caps;
    props[1].key = amqp_cstring_bytes("connection_name");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes(name ? name : "toolbox");
    amqp_table_t client_props = {2, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(b->conn, ci.vhost, 0, 131072, heartbeat,
                                                    &client_props, AMQP_SASL_METHOD_PLAIN,
                                                    ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        /* Over TLS 1.3 a broker refusing our client certificate says so (an alert, which a reset may
         * swallow) only after the handshake: the first read fails. */
        char text[300], why[200] = "";
        amqp_reply_text(r, text, sizeof text);
        const char *hint = "";
        if (ci.ssl && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
            tls_reason(why, sizeof why);
            if (r.library_error == AMQP_STATUS_SSL_ERROR || r.library_error == AMQP_STATUS_CONNECTION_CLOSED ||
                r.library_error == AMQP_STATUS_SOCKET_ERROR)
                hint = "; the broker ended the TLS session: does it want a client certificate "
                       "(broker_ssl_cert_file) from a CA it trusts?";
        }
        st = tbx_seterr(err, TBX_EBROKER, "cannot log in to %s: %s%s%s", b->masked_url, text, why, hint);
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
