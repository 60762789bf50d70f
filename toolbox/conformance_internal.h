/*
 * conformance_internal.h - shared by the conformance suite's files (conformance*.c). Internal.
 *
 * A Check test function receives only an int. Each call of tbx_conformance_suite() stores a snapshot of the
 * configuration (tbx_conf_ctx) in a process-wide registry and passes (registry index << 12 | item) as the
 * loop index of every check it adds; item selects the queue of a per-queue check.
 */
#ifndef TOOLBOX_CONFORMANCE_INTERNAL_H
#define TOOLBOX_CONFORMANCE_INTERNAL_H

#include <check.h>
#include <jansson.h>
#include <stddef.h>

#include "internal.h"
#include "toolbox/config.h"

#define TBX_CONF_ITEM_BITS 12
#define TBX_CONF_MAX_ITEMS (1 << TBX_CONF_ITEM_BITS)

/* What the checks need from the configuration, copied (all strings owned). */
typedef struct tbx_conf_ctx {
    int producer_only;
    char *broker_url, *result_backend;
    char *mgmt_url;          /* management API base URL (may hold a password) */
    const char *mgmt_origin; /* static text: where mgmt_url came from */
    char *exchange, *exchange_type, *default_queue, *platform_queue;
    char **queues;           /* service queues */
    size_t nqueues;
    char **worker_queues;
    size_t nworker_queues;
    char **topology;         /* default, platform, then service queues; distinct */
    size_t ntopology;
    char **routed;           /* default then service queues, distinct, platform queue excluded */
    char **route_names;      /* "route_to_<queue>", TCase names for routed[] */
    size_t nrouted;
    long long chord_unlock_max_retries, task_max_retries;
    double timeout;          /* broker_connect_timeout */
    char *ssl_ca, *ssl_cert, *ssl_key; /* broker_ssl_* (empty: unset) */
    int ssl_verify;
    int result_extended;
    char probe_key[48];      /* a routing key no service uses: "toolbox-conformance-<hex>" */
} tbx_conf_ctx;

/* The context and item a check's loop index names. */
const tbx_conf_ctx *tbx_conf_ctx_of(int i, size_t *item);

/* Add one check as a TCase named name (kept by pointer: must outlive the suite). */
void tbx_conf_add(Suite *s, const char *name, const TTest *test, int ctx_index, size_t item, double timeout);

/* Per-area registration (conformance_broker.c, conformance_routing.c, conformance_db.c). */
void tbx_conf_add_broker_checks(Suite *s, int ctx_index, const tbx_conf_ctx *c);
void tbx_conf_add_routing_checks(Suite *s, int ctx_index, const tbx_conf_ctx *c);
void tbx_conf_add_db_checks(Suite *s, int ctx_index, const tbx_conf_ctx *c);

/* A check's verdict, built while the check runs and reported once at its end (so that connections are
 * closed before Check unwinds). Zero-initialise. */
typedef struct tbx_conf_verdict {
    tbx_buf expected, found, fix;
    int failed;
} tbx_conf_verdict;

/* Record a failure; each part is appended (joined with "; " when several problems are found). */
void tbx_conf_fail(tbx_conf_verdict *v, const char *expected, const char *found, const char *fix);
/* Formatted variants for one part at a time. */
void tbx_conf_expected(tbx_conf_verdict *v, const char *fmt, ...) TBX_PRINTF(2, 3);
void tbx_conf_found(tbx_conf_verdict *v, const char *fmt, ...) TBX_PRINTF(2, 3);
void tbx_conf_fix(tbx_conf_verdict *v, const char *fmt, ...) TBX_PRINTF(2, 3);
/* Report: fails the running check with "expected E; found F; fix: X" (one line) if a failure was recorded,
 * else passes. Frees v's buffers either way. */
void tbx_conf_report_at(tbx_conf_verdict *v, const char *file, int line);
#define tbx_conf_report(v) tbx_conf_report_at((v), __FILE__, __LINE__)

/* Replace control characters (newlines, tabs) by spaces in place. */
void tbx_conf_one_line(char *s);

/* ---- broker helpers (conformance_broker.c) ---- */

#define TBX_CONF_DECL_TEXT 512
struct tbx_broker;

/* Open c's broker; NULL if it cannot be reached (err gets why). Close with tbx_broker_close(). */
struct tbx_broker *tbx_conf_open_broker(const tbx_conf_ctx *c, tbx_error *err);

/* Declare with Celery 5.2's flags (passive or not): 0 on success, the reply code of a channel error (404, 403,
 * 405, 406, ...) with the server's text in text[TBX_CONF_DECL_TEXT], -1 when the connection failed. The
 * channel is reopened after a channel error. */
int tbx_conf_exchange_declare(struct tbx_broker *b, const char *name, const char *type, int passive, char *text);
int tbx_conf_queue_declare(struct tbx_broker *b, const char *name, int passive, char *text);

/* ---- routing helpers (conformance_routing.c), exposed for unit tests ---- */

/* Does the topic binding key pattern match routing key key, by RabbitMQ's rules ('.'-separated words, '*' one
 * word, '#' zero or more words, "" = no words)? */
int tbx_conf_topic_match(const char *pattern, const char *key);

/* The management API base URL derived from an amqp(s):// broker URL: http(s)://user:pass@host:15672(15671),
 * no trailing slash. malloc'd; NULL if the URL cannot be parsed or on ENOMEM. */
char *tbx_conf_mgmt_url_from_broker(const char *broker_url);

/* The virtual host of an amqp(s):// URL ("//" and none mean "/"), percent-decoded. malloc'd or NULL. */
char *tbx_conf_broker_vhost(const char *broker_url);

/* ---- HTTP (conformance_http.c) ---- */

/* GET base_url + path (path starts with '/', already percent-encoded), with Basic authentication from the
 * URL's user info, over TLS for https:// (peer and host name verified; CA file from $TOOLBOX_BROKER_CA_FILE
 * when set, else the system's). timeout bounds the whole exchange. On success *status is the HTTP status and
 * *body a NUL-terminated malloc'd copy of the body (caller frees), *len its length. */
tbx_status tbx_http_get(const char *base_url, const char *path, double timeout, int *status, char **body,
                        size_t *len, tbx_error *err);

/* Append s to b percent-encoded as one path segment. 0 ok, -1 ENOMEM. */
int tbx_http_path_segment(tbx_buf *b, const char *s);

#endif
