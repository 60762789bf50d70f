/*
 * conformance_routing.c - where each routing key really goes, judged from the live bindings.
 *
 * Why not route probe messages: AMQP 0-9-1 has no way to list bindings, and RabbitMQ has no dry-run. A probe
 * published to the real exchange reaches the platform queue through '#' (the platform monitor records it, or
 * sets it aside: left behind either way) and any other queue it matches; expiration "0" does not stop it
 * from reaching a consumer that is waiting; inside a transaction nothing is routed before the commit and a
 * rollback tells nothing; a temporary exchange bound to the real one routes into the real queues, and one
 * bound from it learns nothing of their bindings. The RabbitMQ firehose would show the queues a message is
 * routed to, but only an administrator can turn it on, and it copies every real message.
 *
 * So the bindings are read, read-only, from RabbitMQ's management HTTP API (GET
 * /api/exchanges/{vhost}/{exchange}/bindings/source, following exchange-to-exchange bindings with the
 * destination's type) and matched with RabbitMQ's topic rules. The task exchange itself is evaluated as a
 * topic exchange: its type is exchange_type's business.
 *
 * The checks split "each key reaches exactly its own queue and the platform queue" into properties that fail
 * one at a time:
 *   platform_catches_all           every configured key, and an unknown one, reach the platform queue;
 *   route_to_<q>                   key q reaches queue q, and no other queue through a binding that is not a
 *                                  catch-all (a destination the unknown key also reaches);
 *   unknown_prefix_platform_only   the unknown key reaches no queue but the platform queue.
 * Together they give reach(q) = {q, platform queue} for every q.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>

#include "broker.h"
#include "conformance_internal.h"
#include "toolbox/message.h"

#define MAX_EXCHANGE_DEPTH 8

/* ---- topic matching (rabbit_exchange_type_topic) ------------------------------------------------------ */

/* Split s into words at '.'; "" has no words, "a." has two ("a" and ""). Returns the count; words[i] points
 * into s, lens[i] is its length. At most cap words are stored (further ones are counted). */
static size_t split_words(const char *s, const char **words, size_t *lens, size_t cap)
{
    if (!*s)
        return 0;
    size_t n = 0;
    const char *w = s;
    for (;;) {
        const char *dot = strchr(w, '.');
        size_t len = dot ? (size_t)(dot - w) : strlen(w);
        if (n < cap) {
            words[n] = w;
            lens[n] = len;
        }
        n++;
        if (!dot)
            return n;
        w = dot + 1;
    }
}

static int word_is(const char *w, size_t len, const char *lit)
{
    return len == strlen(lit) && !memcmp(w, lit, len);
}

static int match_words(const char **pw, const size_t *pl, size_t np, const char **kw, const size_t *kl, size_t nk)
{
    if (np == 0)
        return nk == 0;
    if (word_is(pw[0], pl[0], "#")) {
        for (size_t skip = 0; skip <= nk; skip++)
            if (match_words(pw + 1, pl + 1, np - 1, kw + skip, kl + skip, nk - skip))
                return 1;
        return 0;
    }
    if (nk == 0)
        return 0;
    if (!word_is(pw[0], pl[0], "*") && (pl[0] != kl[0] || memcmp(pw[0], kw[0], pl[0]) != 0))
        return 0;
    return match_words(pw + 1, pl + 1, np - 1, kw + 1, kl + 1, nk - 1);
}

int tbx_conf_topic_match(const char *pattern, const char *key)
{
    enum { CAP = 128 };
    const char *pw[CAP], *kw[CAP];
    size_t pl[CAP], kl[CAP];
    size_t np = split_words(pattern, pw, pl, CAP), nk = split_words(key, kw, kl, CAP);
    if (np > CAP || nk > CAP) /* AMQP short strings have at most 255 bytes: 128 words */
        return 0;
    return match_words(pw, pl, np, kw, kl, nk);
}

/* ---- URLs ---------------------------------------------------------------------------------------------- */

/* A copy of an amqp(s):// URL parsed by rabbitmq-c (Celery's "//" default vhost made "/%2F" first). The
 * fields of ci point into the returned buffer (caller frees); NULL if unparsable. */
static char *parse_broker(const char *url, struct amqp_connection_info *ci)
{
    if (!url)
        return NULL;
    size_t n = strlen(url) + 4;
    char *copy = malloc(n);
    if (!copy)
        return NULL;
    const char *auth = strstr(url, "://");
    const char *path = auth ? strchr(auth + 3, '/') : NULL;
    if (path && path[1] == '/')
        snprintf(copy, n, "%.*s/%%2F%s", (int)(path - url), url, path + 2);
    else
        snprintf(copy, n, "%s", url);
    if (amqp_parse_url(copy, ci) != AMQP_STATUS_OK) {
        free(copy);
        return NULL;
    }
    return copy;
}

char *tbx_conf_broker_vhost(const char *broker_url)
{
    struct amqp_connection_info ci;
    char *copy = parse_broker(broker_url, &ci);
    if (!copy)
        return NULL;
    char *v = strdup(ci.vhost && *ci.vhost ? ci.vhost : "/");
    free(copy);
    return v;
}

char *tbx_conf_mgmt_url_from_broker(const char *broker_url)
{
    struct amqp_connection_info ci;
    char *copy = parse_broker(broker_url, &ci);
    if (!copy)
        return NULL;
    tbx_buf b = {0};
    int v6 = strchr(ci.host, ':') != NULL;
    int fail = tbx_buf_printf(&b, "%s://", ci.ssl ? "https" : "http") || tbx_http_path_segment(&b, ci.user) ||
               tbx_buf_putc(&b, ':') || tbx_http_path_segment(&b, ci.password) ||
               tbx_buf_printf(&b, "@%s%s%s:%d", v6 ? "[" : "", ci.host, v6 ? "]" : "", ci.ssl ? 15671 : 15672) ||
               tbx_buf_putc(&b, '\0');
    free(copy);
    if (fail) {
        tbx_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* ---- reading the bindings ------------------------------------------------------------------------------ */

typedef struct mgmt {
    const tbx_conf_ctx *c;
    char *vhost;
    json_t *bindings; /* exchange name -> array of binding objects */
    json_t *types;    /* exchange name -> type string, or null when it does not exist */
    char error[1024]; /* why the last fetch failed */
} mgmt;

static int mgmt_init(mgmt *m, const tbx_conf_ctx *c)
{
    memset(m, 0, sizeof *m);
    m->c = c;
    m->vhost = tbx_conf_broker_vhost(c->broker_url);
    m->bindings = json_object();
    m->types = json_object();
    if (!m->vhost || !m->bindings || !m->types) {
        snprintf(m->error, sizeof m->error, "out of memory, or broker_url cannot be parsed");
        return -1;
    }
    return 0;
}

static void mgmt_free(mgmt *m)
{
    free(m->vhost);
    json_decref(m->bindings);
    json_decref(m->types);
}

/* GET /api/exchanges/{vhost}/{exchange}[/bindings/source]. New reference, or NULL with m->error set (and
 * *status the HTTP status when one came back). */
static json_t *mgmt_fetch(mgmt *m, const char *exchange, int bindings, int *status)
{
    tbx_buf path = {0};
    *status = 0;
    if (tbx_buf_printf(&path, "/api/exchanges/") || tbx_http_path_segment(&path, m->vhost) ||
        tbx_buf_putc(&path, '/') || tbx_http_path_segment(&path, exchange) ||
        (bindings && tbx_buf_printf(&path, "/bindings/source")) || tbx_buf_putc(&path, '\0')) {
        tbx_buf_free(&path);
        snprintf(m->error, sizeof m->error, "out of memory");
        return NULL;
    }
    char *masked = tbx_mask_url(m->c->mgmt_url);
    const char *where = masked && *masked ? masked : "(no URL)";
    char *body = NULL;
    size_t len = 0;
    tbx_error err = {0};
    json_t *j = NULL;
    if (!*m->c->mgmt_url) {
        snprintf(m->error, sizeof m->error, "no management API URL (broker_url cannot be parsed)");
    } else if (tbx_http_get(m->c->mgmt_url, (const char *)path.data, m->c->timeout + 5, status, &body, &len,
                            &err)) {
        snprintf(m->error, sizeof m->error, "GET %s%s: %s", where, (const char *)path.data, err.msg);
    } else if (*status != 200) {
        const char *why = *status == 401 ? " (login refused, or the user lacks the monitoring/management tag)"
                          : *status == 404 ? " (not found)"
                                           : "";
        snprintf(m->error, sizeof m->error, "GET %s%s: HTTP %d%s: %.200s", where, (const char *)path.data,
                 *status, why, body ? body : "");
    } else {
        json_error_t je;
        j = json_loadb(body, len, 0, &je);
        if (!j || (bindings && !json_is_array(j)) || (!bindings && !json_is_object(j))) {
            snprintf(m->error, sizeof m->error, "GET %s%s: unexpected answer (%s)", where,
                     (const char *)path.data, j ? "wrong JSON type" : je.text);
            json_decref(j);
            j = NULL;
        }
    }
    tbx_conf_one_line(m->error);
    free(body);
    free(masked);
    tbx_buf_free(&path);
    return j;
}

/* The bindings whose source is exchange (borrowed from the cache), or NULL on failure. */
static json_t *mgmt_bindings(mgmt *m, const char *exchange)
{
    json_t *a = json_object_get(m->bindings, exchange);
    if (a)
        return a;
    int status;
    a = mgmt_fetch(m, exchange, 1, &status);
    if (!a || json_object_set_new(m->bindings, exchange, a))
        return NULL;
    return a;
}

/* The type of exchange ("" when it does not exist), or NULL on failure. Borrowed. */
static const char *mgmt_type(mgmt *m, const char *exchange)
{
    json_t *t = json_object_get(m->types, exchange);
    if (!t) {
        int status;
        json_t *x = mgmt_fetch(m, exchange, 0, &status);
        if (!x && status != 404)
            return NULL;
        const char *type = x ? json_string_value(json_object_get(x, "type")) : "";
        t = json_string(type ? type : "");
        json_decref(x);
        if (!t || json_object_set_new(m->types, exchange, t))
            return NULL;
    }
    return json_string_value(t);
}

/* Does the management API know the task exchange (the broker does: the routing checks ask it first)? If not,
 * it is another broker or virtual host, and its (empty) bindings must not be judged. */
static int mgmt_knows_exchange(mgmt *m)
{
    const char *t = mgmt_type(m, m->c->exchange);
    if (t && !*t)
        snprintf(m->error, sizeof m->error, "the management API at %s knows no exchange '%s' in virtual host '%s'"
                 " (another broker?)", m->c->mgmt_origin, m->c->exchange, m->vhost);
    return t && *t;
}

/* Add to out (object: destination -> {"key", "source"}) every destination key reaches from exchange, which
 * routes as type. Exchange-to-exchange bindings are followed as RabbitMQ does (each exchange once).
 * 0 on success, -1 when the bindings could not be read (m->error). */
static int reach_from(mgmt *m, const char *exchange, const char *type, const char *key, json_t *seen, json_t *out,
                      int depth)
{
    if (json_object_get(seen, exchange) || depth > MAX_EXCHANGE_DEPTH)
        return 0;
    json_object_set_new(seen, exchange, json_true());
    json_t *bs = mgmt_bindings(m, exchange);
    if (!bs)
        return -1;
    size_t i;
    json_t *bnd;
    json_array_foreach(bs, i, bnd) {
        const char *dest = json_string_value(json_object_get(bnd, "destination"));
        const char *dtype = json_string_value(json_object_get(bnd, "destination_type"));
        const char *bkey = json_string_value(json_object_get(bnd, "routing_key"));
        if (!dest || !dtype || !bkey)
            continue;
        int hit = !strcmp(type, "topic")    ? tbx_conf_topic_match(bkey, key)
                  : !strcmp(type, "direct") ? !strcmp(bkey, key)
                  : !strcmp(type, "fanout") ? 1
                                            : -1;
        if (hit == 0)
            continue;
        if (hit < 0) { /* headers or a plugin type: cannot be judged from the key */
            char name[600];
            snprintf(name, sizeof name, "exchange '%s' (type %s, not evaluated)", exchange, type);
            if (!json_object_get(out, name))
                json_object_set_new(out, name, json_pack("{s:s,s:s}", "key", bkey, "source", exchange));
            return 0;
        }
        if (!strcmp(dtype, "queue")) {
            if (!json_object_get(out, dest))
                json_object_set_new(out, dest, json_pack("{s:s,s:s}", "key", bkey, "source", exchange));
        } else if (!strcmp(dtype, "exchange")) {
            const char *t = mgmt_type(m, dest);
            if (!t)
                return -1;
            if (*t && reach_from(m, dest, t, key, seen, out, depth + 1))
                return -1;
        }
    }
    return 0;
}

/* Destinations key reaches from the task exchange (judged as a topic exchange). New object or NULL. */
static json_t *reach(mgmt *m, const char *key)
{
    json_t *seen = json_object(), *out = json_object();
    if (!seen || !out || reach_from(m, m->c->exchange, "topic", key, seen, out, 0)) {
        json_decref(out);
        out = NULL;
    }
    json_decref(seen);
    return out;
}

/* Read the bindings of exchange and of every exchange it is bound to. 0 on success, -1 with m->error. */
static int read_closure(mgmt *m, const char *exchange, json_t *seen, int depth)
{
    if (json_object_get(seen, exchange) || depth > MAX_EXCHANGE_DEPTH)
        return 0;
    json_object_set_new(seen, exchange, json_true());
    json_t *bs = mgmt_bindings(m, exchange);
    if (!bs)
        return -1;
    size_t i;
    json_t *bnd;
    json_array_foreach(bs, i, bnd) {
        const char *dest = json_string_value(json_object_get(bnd, "destination"));
        const char *dtype = json_string_value(json_object_get(bnd, "destination_type"));
        if (dest && dtype && !strcmp(dtype, "exchange")) {
            const char *t = mgmt_type(m, dest);
            if (!t || (*t && read_closure(m, dest, seen, depth + 1)))
                return -1;
        }
    }
    return 0;
}

/* "'q' (binding 'k'[ of exchange 'e'])" for destination d of reach set r. */
static void describe(tbx_buf *b, const tbx_conf_ctx *c, json_t *r, const char *d)
{
    json_t *w = json_object_get(r, d);
    const char *k = json_string_value(json_object_get(w, "key"));
    const char *src = json_string_value(json_object_get(w, "source"));
    int other = src && strcmp(src, c->exchange) != 0;
    tbx_buf_printf(b, "%s'%s' (binding '%s'%s%s%s)", b->len ? ", " : "", d, k ? k : "?",
                   other ? " of exchange '" : "", other ? src : "", other ? "'" : "");
}

static const char *text_of(tbx_buf *b)
{
    if (tbx_buf_putc(b, '\0'))
        return "(out of memory)";
    b->len--;
    return (const char *)b->data;
}

/* Gate shared by the routing checks: the broker answers, the exchange exists and, if queue is non-NULL, so
 * does that queue. 1 when the check should go on. */
static int broker_gate(const tbx_conf_ctx *c, const char *queue)
{
    tbx_broker *b = tbx_conf_open_broker(c, NULL);
    char text[TBX_CONF_DECL_TEXT];
    int ok = b && tbx_conf_exchange_declare(b, c->exchange, c->exchange_type, 1, text) == 0;
    if (ok && queue) {
        int rc = tbx_conf_queue_declare(b, queue, 1, text);
        ok = rc == 0 || rc == 405;
    }
    tbx_broker_close(b);
    return ok;
}

/* ---- checks ------------------------------------------------------------------------------------------- */

START_TEST(check_bindings_readable)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    mgmt m;
    int bad = mgmt_init(&m, c);
    if (!bad && broker_gate(c, NULL)) {
        json_t *seen = json_object();
        bad = !seen || !mgmt_knows_exchange(&m) || read_closure(&m, c->exchange, seen, 0);
        json_decref(seen);
    }
    if (bad) {
        tbx_conf_expected(&v, "to read the bindings of exchange '%s' from the RabbitMQ management API (URL %s)",
                          c->exchange, c->mgmt_origin);
        tbx_conf_found(&v, "%s", m.error);
        tbx_conf_fix(&v, "enable the rabbitmq_management plugin, or set TOOLBOX_BROKER_MANAGEMENT_URL to "
                         "http(s)://user:password@host:port of it, the user tagged monitoring");
    }
    mgmt_free(&m);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_platform_catches_all)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    mgmt m;
    if (!mgmt_init(&m, c) && broker_gate(c, c->platform_queue) && mgmt_knows_exchange(&m)) {
        char celery_key[256];
        tbx_routing_key("celery.chord_unlock", celery_key, sizeof celery_key);
        const char *extra[] = {celery_key, c->probe_key};
        tbx_buf missing = {0};
        int unreadable = 0;
        for (size_t i = 0; i < c->nrouted + 2 && !unreadable; i++) {
            const char *k = i < c->nrouted ? c->routed[i] : extra[i - c->nrouted];
            if (i == c->nrouted && !strcmp(k, c->default_queue))
                continue; /* the key of celery.* tasks is the default queue's: already tried */
            json_t *r = reach(&m, k);
            unreadable = r == NULL;
            if (r && !json_object_get(r, c->platform_queue))
                tbx_buf_printf(&missing, "%s'%s'", missing.len ? ", " : "", k);
            json_decref(r);
        }
        if (!unreadable && missing.len) {
            tbx_conf_expected(&v, "every routing key to reach the platform queue '%s' (binding '#')",
                              c->platform_queue);
            tbx_conf_found(&v, "keys %s do not reach it", text_of(&missing));
            tbx_conf_fix(&v, "bind queue '%s' to exchange '%s' with key '#' (`toolbox setup` does)",
                         c->platform_queue, c->exchange);
        }
        tbx_buf_free(&missing);
    }
    mgmt_free(&m);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_route_to_queue)
{
    size_t item;
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, &item);
    const char *q = c->routed[item];
    tbx_conf_verdict v = {0};
    mgmt m;
    if (!mgmt_init(&m, c) && broker_gate(c, q) && mgmt_knows_exchange(&m)) {
        json_t *r = reach(&m, q), *catchall = reach(&m, c->probe_key);
        if (r && catchall) {
            tbx_buf reached = {0}, extra = {0}, fixes = {0};
            const char *d;
            json_t *w;
            json_object_foreach(r, d, w) {
                describe(&reached, c, r, d);
                if (!strcmp(d, q) || !strcmp(d, c->platform_queue) || json_object_get(catchall, d))
                    continue; /* catch-alls are unknown_prefix_platform_only's and platform_catches_all's */
                describe(&extra, c, r, d);
                const char *src = json_string_value(json_object_get(w, "source"));
                tbx_buf_printf(&fixes, "%sunbind '%s' from exchange '%s' (key '%s')", fixes.len ? ", " : "", d,
                               src ? src : c->exchange, json_string_value(json_object_get(w, "key")));
            }
            if (!json_object_get(r, q)) {
                tbx_conf_expected(&v, "routing key '%s' to reach queue '%s'", q, q);
                tbx_conf_found(&v, "it reaches %s", reached.len ? text_of(&reached) : "no queue");
                tbx_conf_fix(&v, "bind queue '%s' to exchange '%s' with key '%s' (`toolbox setup` does)", q,
                             c->exchange, q);
            }
            if (extra.len) {
                tbx_conf_expected(&v, "routing key '%s' to reach no queue but '%s' and '%s'", q, q,
                                  c->platform_queue);
                tbx_conf_found(&v, "it also reaches %s", text_of(&extra));
                tbx_conf_fix(&v, "%s", text_of(&fixes));
            }
            tbx_buf_free(&reached);
            tbx_buf_free(&extra);
            tbx_buf_free(&fixes);
        }
        json_decref(r);
        json_decref(catchall);
    }
    mgmt_free(&m);
    tbx_conf_report(&v);
}
END_TEST

START_TEST(check_unknown_prefix_platform_only)
{
    const tbx_conf_ctx *c = tbx_conf_ctx_of(_i, NULL);
    tbx_conf_verdict v = {0};
    mgmt m;
    if (!mgmt_init(&m, c) && broker_gate(c, NULL) && mgmt_knows_exchange(&m)) {
        json_t *r = reach(&m, c->probe_key);
        tbx_buf extra = {0}, fixes = {0};
        const char *d;
        json_t *w;
        json_object_foreach(r, d, w) {
            if (!strcmp(d, c->platform_queue))
                continue;
            describe(&extra, c, r, d);
            const char *src = json_string_value(json_object_get(w, "source"));
            tbx_buf_printf(&fixes, "%sunbind '%s' from exchange '%s' (key '%s')", fixes.len ? ", " : "", d,
                           src ? src : c->exchange, json_string_value(json_object_get(w, "key")));
        }
        if (extra.len) {
            tbx_conf_expected(&v, "a task of an unknown service (routing key '%s') to reach only the platform "
                                  "queue '%s', recorded but never run",
                              c->probe_key, c->platform_queue);
            tbx_conf_found(&v, "it also reaches %s", text_of(&extra));
            tbx_conf_fix(&v, "%s: only the platform queue may catch every key", text_of(&fixes));
        }
        tbx_buf_free(&extra);
        tbx_buf_free(&fixes);
        json_decref(r);
    }
    mgmt_free(&m);
    tbx_conf_report(&v);
}
END_TEST

void tbx_conf_add_routing_checks(Suite *s, int ctx_index, const tbx_conf_ctx *c)
{
    double t = 8 * c->timeout + 40;
    tbx_conf_add(s, "bindings_readable", check_bindings_readable, ctx_index, 0, t);
    tbx_conf_add(s, "platform_catches_all", check_platform_catches_all, ctx_index, 0, t);
    for (size_t i = 0; i < c->nrouted; i++)
        tbx_conf_add(s, c->route_names[i], check_route_to_queue, ctx_index, i, t);
    tbx_conf_add(s, "unknown_prefix_platform_only", check_unknown_prefix_platform_only, ctx_index, 0, t);
}
