/*
 * broker.h - one AMQP connection with one channel (rabbitmq-c), opened the
 * same way everywhere: non-blocking connect with a timeout, heartbeats, a
 * bounded RPC timeout, and the capabilities (connection.blocked,
 * consumer_cancel_notify) the broker only sends to clients that ask.
 * Internal. A tbx_broker must only be used by the thread that opened it.
 */
#ifndef TOOLBOX_BROKER_H
#define TOOLBOX_BROKER_H

#include <amqp.h>

#include "internal.h"
#include "toolbox/config.h"

typedef struct tbx_broker {
    amqp_connection_state_t conn;
    amqp_channel_t channel;     /* the open channel; 0 after a channel error */
    amqp_channel_t last_channel;
    char *masked_url;           /* for messages; password hidden */
    int blocked;                /* connection.blocked received and not yet unblocked */
    int broken;                 /* a socket/protocol error happened: destroy, don't close */
    int tls_verify_error;       /* amqps: first X509_V_ERR_* met verifying the broker (0: none) */
    int tls_verify_depth;       /* and the depth of the certificate it concerns */
} tbx_broker;

/* TLS settings of amqps:// connections. Strings are borrowed for the call; NULL or "" means unset. */
typedef struct tbx_broker_tls {
    const char *ca_file;   /* PEM CAs trusted to sign the broker's certificate; unset: the system's CAs */
    const char *cert_file; /* PEM client certificate (chain) shown to the broker; unset: none */
    const char *key_file;  /* PEM private key of cert_file, unencrypted; unset: read from cert_file */
    int verify;            /* non-zero: verify the broker's chain and that it names the URL's host */
} tbx_broker_tls;

/* Open url (amqp:// or amqps://). heartbeat in seconds (0: off),
 * timeout bounds the connect and every RPC. name shows in the management UI.
 * tls applies to amqps:// only; NULL means verify against the system's CAs,
 * no client certificate. TLS 1.2 or later; the broker's certificate must
 * chain to a trusted CA and name the URL's host (DNS name or IP address) unless
 * tls->verify is 0. Errors never show the password (the URL is masked).
 * On success *out is owned by the caller (tbx_broker_close). */
tbx_status tbx_broker_open_tls(tbx_broker **out, const char *url, int heartbeat, double timeout,
                               const tbx_broker_tls *tls, const char *name, tbx_error *err);
/* tbx_broker_open_tls with tls NULL. */
tbx_status tbx_broker_open(tbx_broker **out, const char *url, int heartbeat, double timeout,
                           const char *name, tbx_error *err);
/* Open the broker of cfg (borrowed for the call): broker_url, broker_heartbeat,
 * broker_connect_timeout and the broker_ssl_* keys. */
tbx_status tbx_broker_open_cfg(tbx_broker **out, const tbx_config *cfg, const char *name, tbx_error *err);
/* Close gracefully when healthy, else just drop the socket. NULL ok. */
void tbx_broker_close(tbx_broker *b);

/* Turn an RPC reply into a status with a one-line message naming what. Marks
 * the broker broken when the channel or connection is gone. */
tbx_status tbx_broker_check(tbx_broker *b, amqp_rpc_reply_t r, const char *what, tbx_error *err);

/* Turn a library status code (AMQP_STATUS_*) into a status. */
tbx_status tbx_broker_status(tbx_broker *b, int amqp_status, const char *what, tbx_error *err);

/* Passive queue declare: message and consumer counts. TBX_ENOTFOUND when the
 * queue does not exist (the channel is reopened in that case). */
tbx_status tbx_broker_queue_info(tbx_broker *b, const char *queue, uint32_t *messages,
                                 uint32_t *consumers, tbx_error *err);

/* Reopen the channel after a channel-level error (e.g. 404 on passive declare). */
tbx_status tbx_broker_reopen_channel(tbx_broker *b, tbx_error *err);

#endif
