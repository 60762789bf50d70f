/*
 * cmd_tasks.c - `toolbox tasks`: what the platform monitor recorded, with each task's state from
 * the result table; `--root ID` shows one task family and its overall state (the platform's rule,
 * tbx_family_status); `--parked` lists the messages the monitor set aside and `--replay ID`
 * publishes one of them again as it was received.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pg.h"
#include "producer_internal.h"
#include "toolbox/monitor.h"
#include "wire.h"

static const char LIST_SQL[] =
    "SELECT t.task_id, t.type, COALESCE(m.status, 'PENDING'),"
    " to_char(t.created_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), t.parent_id, t.root_id,"
    " t.creator_id, t.related_object_id, m.status IS NULL"
    " FROM " TBX_MONITOR_TASK_TABLE " t LEFT JOIN celery_taskmeta m ON m.task_id = t.task_id"
    " %s ORDER BY t.created_date %s, t.task_id LIMIT %lld";

static const char PARKED_SQL[] =
    "SELECT p.id, to_char(p.received_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), p.task_id,"
    " p.routing_key, length(p.body), p.reason, encode(substring(p.body FROM 1 FOR 120), 'escape'),"
    " p.redelivered"
    " FROM " TBX_MONITOR_PARKED_TABLE " p ORDER BY p.received_date DESC, p.id LIMIT %lld";

static const char *val(PGresult *r, int i, int c)
{
    return PQgetisnull(r, i, c) ? NULL : PQgetvalue(r, i, c);
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *task_json(PGresult *r, int i)
{
    json_t *o = json_object();
    json_object_set_new(o, "task_id", jstr(val(r, i, 0)));
    json_object_set_new(o, "name", jstr(val(r, i, 1)));
    json_object_set_new(o, "state", jstr(val(r, i, 2)));
    json_object_set_new(o, "created", jstr(val(r, i, 3)));
    json_object_set_new(o, "parent_id", jstr(val(r, i, 4)));
    json_object_set_new(o, "root_id", jstr(val(r, i, 5)));
    json_object_set_new(o, "creator_id", jstr(val(r, i, 6)));
    json_object_set_new(o, "related_object_id", jstr(val(r, i, 7)));
    return o;
}

static void print_json(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    if (text)
        puts(text);
    free(text);
    json_decref(j);
}

static PGresult *query(PGconn *c, const char *sql, int n, const char *const *params, tbx_error *err)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        tbx_pg_fail(c, r, "reading the recorded tasks", err);
        PQclear(r);
        return NULL;
    }
    return r;
}

static int list_tasks(PGconn *c, long long limit, int as_json, tbx_error *err)
{
    char sql[sizeof LIST_SQL + 64];
    snprintf(sql, sizeof sql, LIST_SQL, "", "DESC", limit);
    PGresult *r = query(c, sql, 0, NULL, err);
    if (!r)
        return cli_fail(err->code, err);
    int n = PQntuples(r);
    if (as_json) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(a, task_json(r, i));
        print_json(a);
    } else {
        printf("%-26s  %-8s  %-36s  %s\n", "CREATED (UTC)", "STATE", "TASK ID", "NAME");
        for (int i = 0; i < n; i++)
            printf("%-26s  %-8s  %-36s  %s\n", val(r, i, 3), val(r, i, 2), val(r, i, 0), val(r, i, 1));
    }
    PQclear(r);
    return CLI_OK;
}

static int show_family(PGconn *c, const char *id, int as_json, tbx_error *err)
{
    /* The family of ID: its root's, when ID is a recorded task; else ID is taken as the root. */
    const char *p1[1] = {id};
    PGresult *r = query(c, "SELECT root_id FROM " TBX_MONITOR_TASK_TABLE " WHERE task_id = $1", 1, p1, err);
    if (!r)
        return cli_fail(err->code, err);
    char *root = strdup(PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : id);
    PQclear(r);
    if (!root)
        return cli_fail(TBX_ENOMEM, NULL);
    char sql[sizeof LIST_SQL + 64];
    snprintf(sql, sizeof sql, LIST_SQL, "WHERE t.root_id = $1", "ASC", 100000LL);
    const char *p2[1] = {root};
    r = query(c, sql, 1, p2, err);
    if (!r) {
        free(root);
        return cli_fail(err->code, err);
    }
    int n = PQntuples(r);
    if (n == 0) {
        fprintf(stderr, "toolbox: tasks: no recorded task with id or root id %s\n", id);
        PQclear(r);
        free(root);
        return CLI_FAIL;
    }
    /* The platform leaves celery.chord_unlock out of the overall state. */
    const char **states = calloc((size_t)n, sizeof *states);
    size_t ns = 0;
    for (int i = 0; states && i < n; i++)
        if (strcmp(val(r, i, 1), "celery.chord_unlock") != 0)
            states[ns++] = !strcmp(val(r, i, 8), "t") ? NULL : val(r, i, 2);
    const char *overall = states ? tbx_family_status(states, ns) : "?";
    if (as_json) {
        json_t *o = json_object(), *a = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(a, task_json(r, i));
        json_object_set_new(o, "root_id", json_string(root));
        json_object_set_new(o, "overall_state", json_string(overall));
        json_object_set_new(o, "tasks", a);
        print_json(o);
    } else {
        printf("family of %s: %d task%s, overall %s\n", root, n, n == 1 ? "" : "s", overall);
        printf("%-26s  %-8s  %-36s  %-36s  %s\n", "CREATED (UTC)", "STATE", "TASK ID", "PARENT ID", "NAME");
        for (int i = 0; i < n; i++) {
            const char *parent = val(r, i, 4);
            printf("%-26s  %-8s  %-36s  %-36s  %s\n", val(r, i, 3), val(r, i, 2), val(r, i, 0),
                   parent ? parent : "-", val(r, i, 1));
        }
    }
    free(states);
    PQclear(r);
    free(root);
    return CLI_OK;
}

static int list_parked(PGconn *c, long long limit, int as_json, tbx_error *err)
{
    char sql[sizeof PARKED_SQL + 32];
    snprintf(sql, sizeof sql, PARKED_SQL, limit);
    PGresult *r = query(c, sql, 0, NULL, err);
    if (!r)
        return cli_fail(err->code, err);
    int n = PQntuples(r);
    if (as_json) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "id", jstr(val(r, i, 0)));
            json_object_set_new(o, "received", jstr(val(r, i, 1)));
            json_object_set_new(o, "task_id", jstr(val(r, i, 2)));
            json_object_set_new(o, "routing_key", jstr(val(r, i, 3)));
            json_object_set_new(o, "body_bytes", json_integer(atoll(val(r, i, 4))));
            json_object_set_new(o, "reason", jstr(val(r, i, 5)));
            json_object_set_new(o, "body_start", jstr(val(r, i, 6)));
            json_object_set_new(o, "redelivered", json_boolean(!strcmp(val(r, i, 7), "t")));
            json_array_append_new(a, o);
        }
        print_json(a);
    } else {
        printf("%-26s  %-24s  %-36s  %8s  %s\n", "RECEIVED (UTC)", "PARKED ID", "TASK ID", "BYTES", "REASON");
        for (int i = 0; i < n; i++) {
            const char *tid = val(r, i, 2);
            printf("%-26s  %-24s  %-36s  %8s  %s\n", val(r, i, 1), val(r, i, 0), tid ? tid : "-", val(r, i, 4),
                   val(r, i, 5));
        }
    }
    PQclear(r);
    return CLI_OK;
}

/* Publish a parked message again, byte for byte: its properties, headers, body, exchange and
 * routing key (after the operator fixed what made it unreadable, or to retry a transient refusal). */
static int replay_parked(PGconn *c, const tbx_config *cfg, const char *id, tbx_error *err)
{
    const char *params[1] = {id};
    PGresult *r = PQexecParams(c,
                               "SELECT properties::text, headers::text, body, routing_key, exchange FROM "
                               TBX_MONITOR_PARKED_TABLE " WHERE id = $1",
                               1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        tbx_pg_fail(c, r, "reading the parked message", err);
        PQclear(r);
        return cli_fail(TBX_EDB, err);
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        fprintf(stderr, "toolbox: tasks: no parked message with id '%s'\n", id);
        return CLI_FAIL;
    }
    json_t *props = PQgetisnull(r, 0, 0) ? NULL : json_loadb(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), 0, NULL);
    json_t *headers = PQgetisnull(r, 0, 1) ? NULL : json_loadb(PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1), 0, NULL);
    char *rk = PQgetisnull(r, 0, 3) ? strdup("") : strndup(PQgetvalue(r, 0, 3), (size_t)PQgetlength(r, 0, 3));
    char *ex = PQgetisnull(r, 0, 4) ? strdup(tbx_config_str(cfg, "task_default_exchange"))
                                    : strndup(PQgetvalue(r, 0, 4), (size_t)PQgetlength(r, 0, 4));
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t p = {0};
    const char *v;
    if ((v = json_string_value(json_object_get(props, "content_type")))) {
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes(v);
    }
    if ((v = json_string_value(json_object_get(props, "content_encoding")))) {
        p._flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
        p.content_encoding = amqp_cstring_bytes(v);
    }
    if ((v = json_string_value(json_object_get(props, "correlation_id")))) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = amqp_cstring_bytes(v);
    }
    if ((v = json_string_value(json_object_get(props, "reply_to")))) {
        p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        p.reply_to = amqp_cstring_bytes(v);
    }
    p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_PRIORITY_FLAG;
    p.delivery_mode = 2;
    p.priority = (uint8_t)json_integer_value(json_object_get(props, "priority"));
    amqp_field_value_t h;
    if (json_is_object(headers) && tbx_wire_json_to_field(&pool, headers, &h, 0) == TBX_OK &&
        h.kind == AMQP_FIELD_KIND_TABLE) {
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers = h.value.table;
    }
    tbx_producer *prod = NULL;
    tbx_status st = tbx_producer_open(&prod, cfg, TBX_PRODUCER_NO_SETUP, err);
    if (!st)
        st = tbx_producer_publish_raw(prod, ex, rk, &p, PQgetvalue(r, 0, 2), (size_t)PQgetlength(r, 0, 2), id, err);
    int rc = st ? cli_fail(st, err) : CLI_OK;
    if (!st)
        printf("replayed parked message %s to exchange '%s' with routing key '%s'\n", id, ex, rk);
    tbx_producer_close(prod);
    empty_amqp_pool(&pool);
    free(rk);
    free(ex);
    json_decref(props);
    json_decref(headers);
    PQclear(r);
    return rc;
}

int cmd_tasks(cli_args *a)
{
    const char *root = NULL, *replay = NULL, *v;
    long long limit = 50;
    int as_json = 0, parked = 0, r;
    while (a->i < a->argc) {
        if ((r = cli_common(a)) != 0) {
            if (r < 0)
                return CLI_USAGE;
        } else if ((r = cli_opt(a, "--root", &v)) != 0) {
            if (r < 0)
                return CLI_USAGE;
            root = v;
        } else if ((r = cli_opt(a, "--limit", &v)) != 0) {
            if (r < 0 || cli_parse_int("--limit", v, 1, 1000000, &limit))
                return CLI_USAGE;
        } else if (cli_flag(a, "--json")) {
            as_json = 1;
        } else if ((r = cli_opt(a, "--replay", &v)) != 0) {
            if (r < 0)
                return CLI_USAGE;
            replay = v;
        } else if (cli_flag(a, "--parked")) {
            parked = 1;
        } else {
            fprintf(stderr, "toolbox: tasks: unexpected argument '%s'\n", a->argv[a->i]);
            return CLI_USAGE;
        }
    }
    if (root && parked) {
        fprintf(stderr, "toolbox: tasks: --root and --parked are exclusive\n");
        return CLI_USAGE;
    }
    tbx_config *cfg = cli_config();
    if (!cfg)
        return CLI_USAGE;
    tbx_error err = {0};
    PGconn *c = NULL;
    tbx_status st = tbx_pg_connect(tbx_monitor_db_url(cfg), "toolbox tasks", &c, &err);
    int rc;
    if (st)
        rc = cli_fail(st, &err);
    else if (replay)
        rc = replay_parked(c, cfg, replay, &err);
    else if (root)
        rc = show_family(c, root, as_json, &err);
    else if (parked)
        rc = list_parked(c, limit, as_json, &err);
    else
        rc = list_tasks(c, limit, as_json, &err);
    PQfinish(c);
    tbx_config_free(cfg);
    return rc;
}
