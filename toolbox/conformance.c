/*
 * conformance.c - the conformance suite builder: a snapshot of the configuration, the checks on the
 * configuration itself (cadasta-workertoolbox's generated tests), and the verdict helpers every check uses.
 * The live checks are in conformance_broker.c, conformance_routing.c and conformance_db.c; the design (and
 * why it cannot harm a production system) is described in include/toolbox/conformance.h.
 */
#include "toolbox/conformance.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conformance_internal.h"
#include "toolbox/message.h"

/* ---- registry of contexts ---------------------------------------------------------------------------- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static tbx_conf_ctx **reg;
static size_t reg_len, reg_cap;

const tbx_conf_ctx *tbx_conf_ctx_of(int i, size_t *item)
{
    size_t idx = (size_t)i >> TBX_CONF_ITEM_BITS;
    if (item)
        *item = (size_t)i & (TBX_CONF_MAX_ITEMS - 1);
    pthread_mutex_lock(&reg_lock);
    const tbx_conf_ctx *c = idx < reg_len ? reg[idx] : NULL;
    pthread_mutex_unlock(&reg_lock);
    return c;
}

/* Index of c in the registry, or -1 on ENOMEM (or when the registry is full). */
static int reg_add(tbx_conf_ctx *c)
{
    int idx = -1;
    pthread_mutex_lock(&reg_lock);
    if (reg_len == reg_cap) {
        size_t cap = reg_cap ? 2 * reg_cap : 8;
        tbx_conf_ctx **n = realloc(reg, cap * sizeof *n);
        if (n) {
            reg = n;
            reg_cap = cap;
        }
    }
    if (reg_len < reg_cap && reg_len < ((size_t)1 << 18)) {
        reg[reg_len] = c;
        idx = (int)reg_len++;
    }
    pthread_mutex_unlock(&reg_lock);
    return idx;
}

void tbx_conf_add(Suite *s, const char *name, const TTest *test, int ctx_index, size_t item, double timeout)
{
    TCase *tc = tcase_create(name);
    int i = (ctx_index << TBX_CONF_ITEM_BITS) | (int)item;
    tcase_add_loop_test(tc, test, i, i + 1);
    tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
}

/* ---- verdicts ---------------------------------------------------------------------------------------- */

void tbx_conf_one_line(char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

static void vappend(tbx_buf *b, const char *fmt, va_list ap) TBX_PRINTF(2, 0);
static void vappend(tbx_buf *b, const char *fmt, va_list ap)
{
    char tmp[2048];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    tbx_conf_one_line(tmp);
    if (b->len)
        tbx_buf_append(b, "; ", 2);
    tbx_buf_append(b, tmp, strlen(tmp));
}

void tbx_conf_expected(tbx_conf_verdict *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(&v->expected, fmt, ap);
    va_end(ap);
    v->failed = 1;
}

void tbx_conf_found(tbx_conf_verdict *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(&v->found, fmt, ap);
    va_end(ap);
    v->failed = 1;
}

void tbx_conf_fix(tbx_conf_verdict *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(&v->fix, fmt, ap);
    va_end(ap);
    v->failed = 1;
}

void tbx_conf_fail(tbx_conf_verdict *v, const char *expected, const char *found, const char *fix)
{
    tbx_conf_expected(v, "%s", expected);
    tbx_conf_found(v, "%s", found);
    tbx_conf_fix(v, "%s", fix);
}

static const char *buf_text(tbx_buf *b)
{
    if (tbx_buf_putc(b, '\0'))
        return "(out of memory)";
    b->len--;
    return (const char *)b->data;
}

void tbx_conf_report_at(tbx_conf_verdict *v, const char *file, int line)
{
    if (!v->failed) {
        tbx_buf_free(&v->expected);
        tbx_buf_free(&v->found);
        tbx_buf_free(&v->fix);
        return;
    }
    /* Copy into one stack message, free the buffers, then fail (Check may longjmp or exit). */
    char msg[4096];
    snprintf(msg, sizeof msg, "expected %s; found %s; fix: %s", buf_text(&v->expected), buf_text(&v->found),
             buf_text(&v->fix));
    tbx_buf_free(&v->expected);
    tbx_buf_free(&v->found);
    tbx_buf_free(&v->fix);
    _ck_assert_failed(file, line, "conformance", "%s", msg); /* Check's own ck_abort_msg, at the check's line */
}

/* ---- configuration checks (cadasta-workertoolbox's generated tests, and a few more) -------------------- */

START_TEST(check_default_queue_name)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    char key[256];
    tbx_routing_key("celery.chord_unlock", key, sizeof key);
    if (strcmp(c->default_queue, "celery") != 0)
        tbx_conf_fail(&v, "task_default_queue 'celery'", c->default_queue,
                      "set task_default_queue: celery (the queue of every celery.* task, e.g. chord_unlock)");
    else if (strcmp(key, c->default_queue) != 0)
        tbx_conf_fail(&v, "celery.* tasks to get the default queue's routing key 'celery'", key,
                      "use a toolbox whose tbx_routing_key() keeps the name's prefix");
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_platform_queue_name)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    if (strcmp(c->platform_queue, "platform.fifo") != 0)
        tbx_conf_fail(&v, "platform_queue 'platform.fifo'", c->platform_queue,
                      "set platform_queue: platform.fifo (the platform monitor consumes it)");
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_exchange_type_configured)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    if (strcmp(c->exchange_type, "topic") != 0) {
        tbx_conf_expected(&v, "task_default_exchange_type 'topic'");
        tbx_conf_found(&v, "'%s'", c->exchange_type);
        tbx_conf_fix(&v, "set task_default_exchange_type: topic (the platform queue's '#' binding needs it)");
    }
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_chord_unlock_retries_bounded)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    if (c->chord_unlock_max_retries < 1) {
        tbx_conf_expected(&v, "chord_unlock_max_retries, the bound of the self-retrying celery.chord_unlock, "
                              "to be a positive number");
        tbx_conf_found(&v, "%lld", c->chord_unlock_max_retries);
        tbx_conf_fix(&v, "set chord_unlock_max_retries: 21600 (cadasta-workertoolbox's default)");
    }
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_task_retries_bounded)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    if (c->task_max_retries < 0) {
        tbx_conf_expected(&v, "task_max_retries to bound the retries of self-retrying tasks");
        tbx_conf_found(&v, "%lld (unlimited)", c->task_max_retries);
        tbx_conf_fix(&v, "set task_max_retries to a bound, e.g. 3");
    }
    tbx_conf_report(&v);
}
END_TEST

static int in_list(char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s))
            return 1;
    return 0;
}

START_TEST(check_worker_queues)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    for (size_t i = 0; i < c->nworker_queues; i++) {
        const char *q = c->worker_queues[i];
        if (!strcmp(q, c->platform_queue)) {
            tbx_conf_expected(&v, "a worker never to consume the platform queue '%s'", q);
            tbx_conf_found(&v, "worker.queues lists '%s'", q);
            tbx_conf_fix(&v, "remove '%s' from worker.queues (only the platform monitor consumes it)", q);
        } else if (!in_list(c->routed, c->nrouted, q)) {
            tbx_conf_expected(&v, "worker.queues to name the default queue or service queues");
            tbx_conf_found(&v, "'%s', which no routing key reaches", q);
            tbx_conf_fix(&v, "add '%s' to queues, or remove it from worker.queues", q);
        }
    }
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_queue_names_distinct)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    if (!strcmp(c->default_queue, c->platform_queue))
        tbx_conf_fail(&v, "the default queue and the platform queue to differ", c->default_queue,
                      "set task_default_queue: celery and platform_queue: platform.fifo");
    for (size_t i = 0; i < c->nqueues; i++) {
        const char *q = c->queues[i];
        if (!strcmp(q, c->default_queue) || !strcmp(q, c->platform_queue)) {
            tbx_conf_expected(&v, "service queues distinct from the default and platform queues");
            tbx_conf_found(&v, "queues lists '%s'", q);
            tbx_conf_fix(&v, "remove '%s' from queues", q);
        }
    }
    tbx_conf_report(&v);
}
END_TEST

/* ---- building the suite ------------------------------------------------------------------------------ */

static char *dup_or(const char *s, int *oom)
{
    char *d = strdup(s ? s : "");
    if (!d)
        *oom = 1;
    return d;
}

static char **dup_list(const tbx_config *cfg, const char *key, size_t *n, int *oom)
{
    *n = tbx_config_list_len(cfg, key);
    char **l = calloc(*n + 1, sizeof *l);
    if (!l) {
        *oom = 1;
        *n = 0;
        return NULL;
    }
    for (size_t i = 0; i < *n; i++)
        l[i] = dup_or(tbx_config_list_at(cfg, key, i), oom);
    return l;
}

/* Append name to list[*n] unless present (list has room). */
static void add_distinct(char **list, size_t *n, char *name)
{
    if (name && !in_list(list, *n, name))
        list[(*n)++] = name;
}

static int has_config_key(const char *name)
{
    for (size_t i = 0; i < tbx_config_key_count(); i++)
        if (!strcmp(tbx_config_key_name(i), name))
            return 1;
    return 0;
}

/* Where the management API is: broker_management_url (if the key table has it), the environment, or derived
 * from broker_url. */
static char *mgmt_url(const tbx_config *cfg, const char **origin, int *oom)
{
    if (has_config_key("broker_management_url")) {
        const char *u = tbx_config_str(cfg, "broker_management_url");
        if (u && *u) {
            *origin = "broker_management_url";
            return dup_or(u, oom);
        }
    }
    const char *e = getenv("TOOLBOX_BROKER_MANAGEMENT_URL");
    if (e && *e) {
        *origin = "TOOLBOX_BROKER_MANAGEMENT_URL";
        return dup_or(e, oom);
    }
    *origin = "derived from broker_url";
    char *d = tbx_conf_mgmt_url_from_broker(tbx_config_str(cfg, "broker_url"));
    return d ? d : dup_or("", oom);
}

static tbx_conf_ctx *snapshot(const tbx_config *cfg, int producer_only)
{
    tbx_conf_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    int oom = 0;
    c->producer_only = producer_only != 0;
    c->broker_url = dup_or(tbx_config_str(cfg, "broker_url"), &oom);
    c->result_backend = dup_or(tbx_config_str(cfg, "result_backend"), &oom);
    c->mgmt_url = mgmt_url(cfg, &c->mgmt_origin, &oom);
    c->exchange = dup_or(tbx_config_str(cfg, "task_default_exchange"), &oom);
    c->exchange_type = dup_or(tbx_config_str(cfg, "task_default_exchange_type"), &oom);
    c->default_queue = dup_or(tbx_config_str(cfg, "task_default_queue"), &oom);
    c->platform_queue = dup_or(tbx_config_str(cfg, "platform_queue"), &oom);
    c->queues = dup_list(cfg, "queues", &c->nqueues, &oom);
    c->worker_queues = dup_list(cfg, "worker.queues", &c->nworker_queues, &oom);
    c->chord_unlock_max_retries = tbx_config_int(cfg, "chord_unlock_max_retries");
    c->task_max_retries = tbx_config_int(cfg, "task_max_retries");
    c->timeout = tbx_config_double(cfg, "broker_connect_timeout");
    c->ssl_ca = dup_or(tbx_config_str(cfg, "broker_ssl_ca_file"), &oom);
    c->ssl_cert = dup_or(tbx_config_str(cfg, "broker_ssl_cert_file"), &oom);
    c->ssl_key = dup_or(tbx_config_str(cfg, "broker_ssl_key_file"), &oom);
    c->ssl_verify = tbx_config_bool(cfg, "broker_ssl_verify");
    c->result_extended = tbx_config_bool(cfg, "result_extended");
    if (c->nqueues + 2 > TBX_CONF_MAX_ITEMS)
        oom = 1; /* more queues than the loop index can name: refuse rather than truncate */
    c->topology = calloc(c->nqueues + 3, sizeof *c->topology);
    c->routed = calloc(c->nqueues + 2, sizeof *c->routed);
    c->route_names = calloc(c->nqueues + 2, sizeof *c->route_names);
    if (oom || !c->topology || !c->routed || !c->route_names)
        return NULL; /* a partial snapshot is leaked: ENOMEM only */
    add_distinct(c->topology, &c->ntopology, c->default_queue);
    add_distinct(c->topology, &c->ntopology, c->platform_queue);
    for (size_t i = 0; i < c->nqueues; i++)
        add_distinct(c->topology, &c->ntopology, c->queues[i]);
    for (size_t i = 0; i < c->ntopology; i++)
        if (strcmp(c->topology[i], c->platform_queue) != 0)
            c->routed[c->nrouted++] = c->topology[i];
    for (size_t i = 0; i < c->nrouted; i++) {
        size_t n = strlen(c->routed[i]) + sizeof "route_to_";
        c->route_names[i] = malloc(n);
        if (!c->route_names[i])
            return NULL;
        snprintf(c->route_names[i], n, "route_to_%s", c->routed[i]);
    }
    char id[TBX_TASK_ID_LEN + 1];
    tbx_uuid4(id);
    snprintf(c->probe_key, sizeof c->probe_key, "toolbox-conformance-%.8s%.4s", id, id + 9);
    return c;
}

Suite *tbx_conformance_suite(const tbx_config *cfg, int producer_only)
{
    if (!cfg)
        return NULL;
    tbx_conf_ctx *c = snapshot(cfg, producer_only);
    if (!c)
        return NULL;
    int idx = reg_add(c);
    if (idx < 0)
        return NULL;
    Suite *s = suite_create("conformance");
    if (!s)
        return NULL;
    double t = 10.0;
    tbx_conf_add(s, "default_queue_name", check_default_queue_name, idx, 0, t);
    tbx_conf_add(s, "platform_queue_name", check_platform_queue_name, idx, 0, t);
    tbx_conf_add(s, "exchange_type_configured", check_exchange_type_configured, idx, 0, t);
    tbx_conf_add(s, "chord_unlock_retries_bounded", check_chord_unlock_retries_bounded, idx, 0, t);
    if (!c->producer_only) {
        tbx_conf_add(s, "task_retries_bounded", check_task_retries_bounded, idx, 0, t);
        tbx_conf_add(s, "worker_queues", check_worker_queues, idx, 0, t);
    }
    tbx_conf_add(s, "queue_names_distinct", check_queue_names_distinct, idx, 0, t);
    tbx_conf_add_broker_checks(s, idx, c);
    tbx_conf_add_routing_checks(s, idx, c);
    tbx_conf_add_db_checks(s, idx, c);
    return s;
}
