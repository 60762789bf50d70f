/*
 * break.c - break-it tests of the conformance suite: `conformance-break SCENARIO` sets up a correct
 * deployment in its sandbox (a vhost and a database named t_conf_*), breaks it in exactly one way, runs the
 * suite, and passes only if exactly the expected checks fail, each with a one-line "expected ...; found ...;
 * fix: ..." message, and the suite changed nothing: the same exchanges, queues, bindings, message counts,
 * tables, rows and sequence values before and after. Scenario "pass" also runs the suite while consumers
 * wait on every queue (they must receive nothing) and with tasks in the queues (they must come out
 * unchanged, in order). The sandbox is wiped before and after.
 *
 * Environment: the sandbox's TOOLBOX_BROKER_URL, TOOLBOX_RESULT_BACKEND and TOOLBOX_DATABASE_ADMIN_URL
 * (run.sh sets them), TOOLBOX_CONFIG_DIR (config/), and TOOLBOX_BROKER_MANAGEMENT_URL when the management
 * API is not where the suite would derive it. Exit 0 pass, 1 fail, 77 skipped (no management API).
 */
#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker.h"
#include "conformance_internal.h"
#include "pg.h"
#include "toolbox/conformance.h"
#include "toolbox/config.h"
#include "toolbox/setup.h"

#define SKIP 77

static const char *scenario;
static char vhost[256], mgmt[1024], admin_url[1024], broker_url[1024], backend_url[1024];

static void die(const char *fmt, ...) TBX_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "conformance-break %s: ", scenario);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---- broker and database helpers -------------------------------------------------------------------- */

static tbx_broker *amqp_open(void)
{
    tbx_broker *b;
    tbx_error err = {0};
    if (tbx_broker_open(&b, broker_url, 0, 10, "conformance-break", &err))
        die("%s", err.msg);
    return b;
}

/* Run one AMQP method's reply; 0 ok, else the channel is reopened and the code returned. */
static int reply(tbx_broker *b)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(b->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    int code = -1;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        code = ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    tbx_broker_check(b, r, "amqp", NULL);
    if (tbx_broker_reopen_channel(b, NULL))
        die("broker connection lost");
    return code;
}

static void x_delete(tbx_broker *b, const char *x)
{
    amqp_exchange_delete(b->conn, b->channel, amqp_cstring_bytes(x), 0);
    reply(b);
}

static void q_delete(tbx_broker *b, const char *q)
{
    amqp_queue_delete(b->conn, b->channel, amqp_cstring_bytes(q), 0, 0);
    reply(b);
}

static void x_declare(tbx_broker *b, const char *x, const char *type, int durable, int auto_delete)
{
    amqp_exchange_declare(b->conn, b->channel, amqp_cstring_bytes(x), amqp_cstring_bytes(type), 0, durable,
                          auto_delete, 0, amqp_empty_table);
    if (reply(b))
        die("declaring exchange %s failed", x);
}

static void q_declare(tbx_broker *b, const char *q, int durable, amqp_table_t args)
{
    amqp_queue_declare(b->conn, b->channel, amqp_cstring_bytes(q), 0, durable, 0, 0, args);
    if (reply(b))
        die("declaring queue %s failed", q);
}

static void q_bind(tbx_broker *b, const char *q, const char *x, const char *key, int bind)
{
    if (bind)
        amqp_queue_bind(b->conn, b->channel, amqp_cstring_bytes(q), amqp_cstring_bytes(x), amqp_cstring_bytes(key),
                        amqp_empty_table);
    else
        amqp_queue_unbind(b->conn, b->channel, amqp_cstring_bytes(q), amqp_cstring_bytes(x),
                          amqp_cstring_bytes(key), amqp_empty_table);
    if (reply(b))
        die("%sbinding %s/%s/%s failed", bind ? "" : "un", x, q, key);
}

static void x_bind(tbx_broker *b, const char *dest, const char *src, const char *key)
{
    amqp_exchange_bind(b->conn, b->channel, amqp_cstring_bytes(dest), amqp_cstring_bytes(src),
                       amqp_cstring_bytes(key), amqp_empty_table);
    if (reply(b))
        die("binding exchange %s to %s failed", dest, src);
}

static PGconn *sql_open(void)
{
    PGconn *c;
    tbx_error err = {0};
    if (tbx_pg_connect(admin_url, "conformance-break", &c, &err))
        die("%s", err.msg);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static void sql(const char *fmt, ...) TBX_PRINTF(1, 2);
static void sql(const char *fmt, ...)
{
    char q[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof q, fmt, ap);
    va_end(ap);
    PGconn *c = sql_open();
    tbx_error err = {0};
    if (tbx_pg_exec(c, q, q, &err))
        die("%s", err.msg);
    PQfinish(c);
}

/* One-row, one-column query as the admin; "" on error. */
static void sql_value(const char *q, char *out, size_t cap)
{
    PGconn *c = sql_open();
    PGresult *r = PQexec(c, q);
    snprintf(out, cap, "%s", PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(c);
}

static json_t *mgmt_get(const char *what)
{
    tbx_buf path = {0};
    tbx_buf_printf(&path, "/api/%s/", what);
    tbx_http_path_segment(&path, vhost);
    tbx_buf_putc(&path, '\0');
    int status;
    char *body;
    size_t len;
    tbx_error err = {0};
    if (tbx_http_get(mgmt, (const char *)path.data, 10, &status, &body, &len, &err) || status != 200)
        die("GET %s: %s (HTTP %d)", (const char *)path.data, err.msg, status);
    json_t *j = json_loadb(body, len, 0, NULL);
    free(body);
    tbx_buf_free(&path);
    if (!json_is_array(j))
        die("GET %s: not a JSON array", what);
    return j;
}

/* ---- the sandbox ------------------------------------------------------------------------------------- */

/* Remove every exchange (but the amq.* and default ones), every queue and every table. */
static void wipe(void)
{
    tbx_broker *b = amqp_open();
    json_t *qs = mgmt_get("queues"), *xs = mgmt_get("exchanges"), *it;
    size_t i;
    json_array_foreach(qs, i, it) q_delete(b, json_string_value(json_object_get(it, "name")));
    json_array_foreach(xs, i, it) {
        const char *n = json_string_value(json_object_get(it, "name"));
        if (*n && strncmp(n, "amq.", 4) != 0)
            x_delete(b, n);
    }
    json_decref(qs);
    json_decref(xs);
    tbx_broker_close(b);
    sql("DROP TABLE IF EXISTS celery_taskmeta, celery_tasksetmeta, other_data, tasks_backgroundtask,"
        " tasks_parkedmessage CASCADE;"
        "DROP SEQUENCE IF EXISTS task_id_sequence, taskset_id_sequence;"
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC, worker");
}

/* Everything the suite must leave as it found: topology, message counts, tables, rows, sequence. */
static char *snapshot(void)
{
    json_t *s = json_object();
    json_t *xs = mgmt_get("exchanges"), *qs = mgmt_get("queues"), *bs = mgmt_get("bindings"), *it;
    size_t i;
    json_array_foreach(xs, i, it) {
        json_object_del(it, "message_stats");
        json_object_del(it, "user_who_performed_action");
    }
    json_t *queues = json_object();
    tbx_broker *b = amqp_open();
    json_array_foreach(qs, i, it) {
        const char *n = json_string_value(json_object_get(it, "name"));
        uint32_t msgs = 0;
        tbx_broker_queue_info(b, n, &msgs, NULL, NULL);
        json_object_set_new(queues, n, json_pack("{s:O,s:O,s:O,s:O,s:i}", "durable", json_object_get(it, "durable"),
                                                  "auto_delete", json_object_get(it, "auto_delete"), "exclusive",
                                                  json_object_get(it, "exclusive"), "arguments",
                                                  json_object_get(it, "arguments"), "messages", (int)msgs));
    }
    tbx_broker_close(b);
    json_object_set(s, "exchanges", xs);
    json_object_set_new(s, "queues", queues);
    json_object_set(s, "bindings", bs);
    char v[4096];
    sql_value("SELECT string_agg(relname || ':' || relkind, ',' ORDER BY relname) FROM pg_class"
              " WHERE relnamespace = 'public'::regnamespace",
              v, sizeof v);
    json_object_set_new(s, "relations", json_string(v));
    sql_value("SELECT count(*) || '/' || coalesce(max(id), 0) || '/' || coalesce(sum(hashtext(task_id || status)), 0)"
              " FROM celery_taskmeta",
              v, sizeof v);
    json_object_set_new(s, "rows", json_string(v));
    sql_value("SELECT last_value || '/' || is_called FROM task_id_sequence", v, sizeof v);
    json_object_set_new(s, "sequence", json_string(v));
    sql_value("SELECT string_agg(c.relname || '=' || coalesce(c.relacl::text, ''), ',' ORDER BY relname)"
              " FROM pg_class c WHERE relnamespace = 'public'::regnamespace",
              v, sizeof v);
    json_object_set_new(s, "grants", json_string(v));
    json_decref(xs);
    json_decref(qs);
    json_decref(bs);
    char *text = json_dumps(s, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(s);
    return text;
}

/* A copy of url with its password replaced. */
static void with_password(char *out, size_t cap, const char *url, const char *pw)
{
    const char *s = strstr(url, "://");
    const char *at = s ? strchr(s + 3, '@') : NULL;
    const char *colon = s ? strchr(s + 3, ':') : NULL;
    if (!at || !colon || colon > at)
        die("URL without a password: cannot break it");
    snprintf(out, cap, "%.*s%s%s", (int)(colon + 1 - url), url, pw, at);
}

/* ---- the breaks -------------------------------------------------------------------------------------- */

/* Recreate the task exchange with other flags, and its bindings. */
static void recreate_exchange(const char *type, int durable)
{
    tbx_broker *b = amqp_open();
    x_delete(b, "task_exchange");
    x_declare(b, "task_exchange", type, durable, 0);
    q_bind(b, "celery", "task_exchange", "celery", 1);
    q_bind(b, "platform.fifo", "task_exchange", "#", 1);
    q_bind(b, "msg", "task_exchange", "msg", 1);
    q_bind(b, "export", "task_exchange", "export", 1);
    tbx_broker_close(b);
}

static void break_exchange_missing(void)
{
    tbx_broker *b = amqp_open();
    x_delete(b, "task_exchange");
    tbx_broker_close(b);
}
static void break_exchange_direct(void) { recreate_exchange("direct", 1); }
static void break_exchange_transient(void) { recreate_exchange("topic", 0); }

static void break_queue_missing(void)
{
    tbx_broker *b = amqp_open();
    q_delete(b, "export");
    tbx_broker_close(b);
}

static void recreate_msg_queue(int durable, const char *arg, int value)
{
    tbx_broker *b = amqp_open();
    q_delete(b, "msg");
    amqp_table_entry_t e = {amqp_cstring_bytes(arg ? arg : ""), {AMQP_FIELD_KIND_I32, {.i32 = value}}};
    amqp_table_t args = {arg ? 1 : 0, arg ? &e : NULL};
    q_declare(b, "msg", durable, args);
    q_bind(b, "msg", "task_exchange", "msg", 1);
    tbx_broker_close(b);
}
static void break_queue_priority(void) { recreate_msg_queue(1, "x-max-priority", 10); }
static void break_queue_transient(void) { recreate_msg_queue(0, NULL, 0); }

static void break_platform_unbound(void)
{
    tbx_broker *b = amqp_open();
    q_bind(b, "platform.fifo", "task_exchange", "#", 0);
    tbx_broker_close(b);
}

static void break_msg_unbound(void)
{
    tbx_broker *b = amqp_open();
    q_bind(b, "msg", "task_exchange", "msg", 0);
    tbx_broker_close(b);
}

static void break_msg_also_to_export(void)
{
    tbx_broker *b = amqp_open();
    q_bind(b, "export", "task_exchange", "msg", 1);
    tbx_broker_close(b);
}

static void break_msg_via_exchange(void)
{
    tbx_broker *b = amqp_open();
    x_declare(b, "side", "topic", 1, 0);
    x_bind(b, "side", "task_exchange", "msg");
    q_declare(b, "stray", 1, amqp_empty_table);
    q_bind(b, "stray", "side", "#", 1);
    tbx_broker_close(b);
}

static void break_catch_all(void)
{
    tbx_broker *b = amqp_open();
    q_declare(b, "stray", 1, amqp_empty_table);
    q_bind(b, "stray", "task_exchange", "*", 1);
    tbx_broker_close(b);
}

static void break_drop_column(void) { sql("ALTER TABLE celery_taskmeta DROP COLUMN traceback"); }
static void break_no_select(void) { sql("REVOKE SELECT ON celery_taskmeta FROM worker"); }
static void break_no_insert(void) { sql("REVOKE INSERT ON celery_taskmeta FROM worker"); }
static void break_other_table(void)
{
    sql("CREATE TABLE other_data (secret text); GRANT SELECT ON other_data TO worker");
}
static void break_create_schema(void) { sql("GRANT CREATE ON SCHEMA public TO worker"); }

/* ---- do no harm: waiting consumers, and tasks in the queues ------------------------------------------- */

static const char *const QUEUES[] = {"celery", "platform.fifo", "msg", "export"};

/* A child consuming every queue until its stdin pipe closes; exits with the number of deliveries (max 100). */
static pid_t start_consumers(int *stop_fd)
{
    int p[2];
    if (pipe(p))
        die("pipe failed");
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid > 0) {
        close(p[0]);
        *stop_fd = p[1];
        return pid;
    }
    close(p[1]);
    tbx_broker *b;
    if (tbx_broker_open(&b, broker_url, 0, 10, "conformance-break consumers", NULL))
        _exit(101);
    amqp_basic_qos(b->conn, b->channel, 0, 100, 0);
    reply(b);
    for (size_t i = 0; i < 4; i++) {
        amqp_basic_consume(b->conn, b->channel, amqp_cstring_bytes(QUEUES[i]), amqp_empty_bytes, 0, 0, 0,
                           amqp_empty_table);
        if (reply(b))
            _exit(101);
    }
    int n = 0;
    for (;;) {
        struct timeval tv = {0, 100000};
        amqp_envelope_t env;
        amqp_maybe_release_buffers(b->conn);
        amqp_rpc_reply_t r = amqp_consume_message(b->conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            n++;
            amqp_basic_reject(b->conn, b->channel, env.delivery_tag, 1); /* put it back untouched */
            amqp_destroy_envelope(&env);
        }
        struct timeval zero = {0, 0};
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(p[0], &fds);
        if (select(p[0] + 1, &fds, NULL, NULL, &zero) > 0)
            break;
    }
    tbx_broker_close(b);
    _exit(n > 100 ? 100 : n);
}

static int stop_consumers(pid_t pid, int fd)
{
    close(fd);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

/* Publish two tasks per service key; returns their ids in order as "key:id,..." per queue in out. */
static void publish_tasks(json_t *expect)
{
    tbx_broker *b = amqp_open();
    static const char *const keys[] = {"msg", "export", "celery"};
    for (int round = 0; round < 2; round++)
        for (size_t k = 0; k < 3; k++) {
            char id[64];
            snprintf(id, sizeof id, "%s-%d-%d", keys[k], round, (int)getpid());
            amqp_basic_properties_t props = {0};
            props._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
            props.message_id = amqp_cstring_bytes(id);
            props.delivery_mode = 2;
            if (amqp_basic_publish(b->conn, b->channel, amqp_cstring_bytes("task_exchange"),
                                   amqp_cstring_bytes(keys[k]), 1, 0, &props, amqp_cstring_bytes("[[], {}, {}]")))
                die("publish failed");
            json_array_append_new(json_object_get(expect, keys[k]), json_string(id));
            json_array_append_new(json_object_get(expect, "platform.fifo"), json_string(id));
        }
    amqp_basic_qos(b->conn, b->channel, 0, 1, 0); /* a round trip: the publishes are routed */
    reply(b);
    tbx_broker_close(b);
}

/* Take every message of every queue; they must be exactly expect's, in order. */
static void drain_and_compare(json_t *expect)
{
    tbx_broker *b = amqp_open();
    for (size_t i = 0; i < 4; i++) {
        json_t *got = json_array();
        for (;;) {
            amqp_rpc_reply_t r = amqp_basic_get(b->conn, b->channel, amqp_cstring_bytes(QUEUES[i]), 1);
            if (r.reply_type != AMQP_RESPONSE_NORMAL)
                die("basic.get on %s failed", QUEUES[i]);
            if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
                break;
            amqp_message_t m;
            if (amqp_read_message(b->conn, b->channel, &m, 0).reply_type != AMQP_RESPONSE_NORMAL)
                die("reading a message failed");
            json_array_append_new(got, json_stringn((const char *)m.properties.message_id.bytes,
                                                    m.properties.message_id.len));
            amqp_destroy_message(&m);
        }
        if (!json_equal(got, json_object_get(expect, QUEUES[i]))) {
            char *a = json_dumps(got, 0), *e = json_dumps(json_object_get(expect, QUEUES[i]), 0);
            die("queue %s holds %s after the suite, expected %s", QUEUES[i], a, e);
        }
        json_decref(got);
    }
    tbx_broker_close(b);
}

/* ---- scenarios --------------------------------------------------------------------------------------- */

typedef struct scenario_def {
    const char *name;
    const char *expect;        /* failing checks, space-separated; "" for none */
    int producer_only;
    const char *setup_set[3];  /* overrides for `toolbox setup` and the suite */
    const char *run_set[3];    /* overrides for the suite only */
    void (*breaker)(void);
    int bad_broker_password, bad_db_password, broker_tls, db_tls, bad_mgmt;
} scenario_def;

static const scenario_def SCENARIOS[] = {
    {"pass", "", 0, {NULL}, {NULL}, NULL, 0, 0, 0, 0, 0},
    {"pass_producer", "", 1, {NULL}, {NULL}, NULL, 0, 0, 0, 0, 0},
    {"default_queue_name", "default_queue_name", 0, {"task_default_queue=jobs"}, {NULL}, NULL, 0, 0, 0, 0, 0},
    {"platform_queue_name", "platform_queue_name", 0, {"platform_queue=platform.all"}, {NULL}, NULL, 0, 0, 0, 0, 0},
    {"exchange_type_configured", "exchange_type_configured", 0, {NULL}, {"task_default_exchange_type=direct"}, NULL,
     0, 0, 0, 0, 0},
    {"chord_unlock_retries_bounded", "chord_unlock_retries_bounded", 0, {NULL}, {"chord_unlock_max_retries=0"},
     NULL, 0, 0, 0, 0, 0},
    {"task_retries_bounded", "task_retries_bounded", 0, {NULL}, {"task_max_retries=-1"}, NULL, 0, 0, 0, 0, 0},
    {"worker_queues", "worker_queues", 0, {NULL}, {"worker.queues=msg,platform.fifo"}, NULL, 0, 0, 0, 0, 0},
    {"queue_names_distinct", "queue_names_distinct", 0, {"queues=msg,export,celery"}, {NULL}, NULL, 0, 0, 0, 0, 0},
    {"broker_password", "broker_reachable", 0, {NULL}, {NULL}, NULL, 1, 0, 0, 0, 0},
    {"broker_tls", "broker_reachable", 0, {NULL}, {NULL}, NULL, 0, 0, 1, 0, 0},
    {"exchange_missing", "exchange_exists", 0, {NULL}, {NULL}, break_exchange_missing, 0, 0, 0, 0, 0},
    {"exchange_direct", "exchange_type", 0, {NULL}, {NULL}, break_exchange_direct, 0, 0, 0, 0, 0},
    {"exchange_transient", "exchange_flags", 0, {NULL}, {NULL}, break_exchange_transient, 0, 0, 0, 0, 0},
    {"queue_missing", "queues_exist", 0, {NULL}, {NULL}, break_queue_missing, 0, 0, 0, 0, 0},
    {"queue_priority", "queue_flags", 0, {NULL}, {NULL}, break_queue_priority, 0, 0, 0, 0, 0},
    {"queue_transient", "queue_flags", 0, {NULL}, {NULL}, break_queue_transient, 0, 0, 0, 0, 0},
    {"management_unreachable", "bindings_readable", 0, {NULL}, {NULL}, NULL, 0, 0, 0, 0, 1},
    {"platform_unbound", "platform_catches_all", 0, {NULL}, {NULL}, break_platform_unbound, 0, 0, 0, 0, 0},
    {"msg_unbound", "route_to_msg", 0, {NULL}, {NULL}, break_msg_unbound, 0, 0, 0, 0, 0},
    {"msg_also_to_export", "route_to_msg", 0, {NULL}, {NULL}, break_msg_also_to_export, 0, 0, 0, 0, 0},
    {"msg_via_exchange", "route_to_msg", 0, {NULL}, {NULL}, break_msg_via_exchange, 0, 0, 0, 0, 0},
    {"catch_all", "unknown_prefix_platform_only", 0, {NULL}, {NULL}, break_catch_all, 0, 0, 0, 0, 0},
    {"database_password", "database_reachable", 0, {NULL}, {NULL}, NULL, 0, 1, 0, 0, 0},
    {"database_tls", "database_reachable", 0, {NULL}, {NULL}, NULL, 0, 0, 0, 1, 0},
    {"missing_column", "result_table_schema", 0, {NULL}, {NULL}, break_drop_column, 0, 0, 0, 0, 0},
    {"no_select", "result_table_readable", 0, {NULL}, {NULL}, break_no_select, 0, 0, 0, 0, 0},
    {"no_insert", "result_table_writable", 0, {NULL}, {NULL}, break_no_insert, 0, 0, 0, 0, 0},
    {"no_insert_producer", "", 1, {NULL}, {NULL}, break_no_insert, 0, 0, 0, 0, 0},
    {"other_table", "worker_least_privilege", 0, {NULL}, {NULL}, break_other_table, 0, 0, 0, 0, 0},
    {"create_in_public", "worker_least_privilege", 0, {NULL}, {NULL}, break_create_schema, 0, 0, 0, 0, 0},
};
#define NSCENARIOS (sizeof SCENARIOS / sizeof SCENARIOS[0])

static tbx_config *load(const char *const *a, const char *const *b, const char *extra)
{
    const char *sets[8];
    size_t n = 0;
    for (size_t i = 0; a && i < 3 && a[i]; i++)
        sets[n++] = a[i];
    for (size_t i = 0; b && i < 3 && b[i]; i++)
        sets[n++] = b[i];
    if (extra)
        sets[n++] = extra;
    sets[n] = NULL;
    tbx_config *cfg = NULL;
    tbx_error err = {0};
    if (tbx_config_load(&cfg, NULL, "test", sets, &err))
        die("configuration: %s", err.msg);
    return cfg;
}

/* Run the suite; the names of the failing checks, space-separated and sorted, in out. */
static int run_suite(const scenario_def *s, const char *extra, char *out, size_t cap)
{
    tbx_config *cfg = load(s->setup_set, s->run_set, extra);
    Suite *suite = tbx_conformance_suite(cfg, s->producer_only);
    tbx_config_free(cfg);
    if (!suite)
        die("tbx_conformance_suite returned NULL");
    SRunner *sr = srunner_create(suite);
    srunner_run_all(sr, CK_SILENT);
    int n = srunner_ntests_run(sr), bad = 0;
    TestResult **res = srunner_results(sr);
    json_t *names = json_array();
    for (int i = 0; i < n; i++) {
        if (tr_rtype(res[i]) == CK_PASS)
            continue;
        const char *msg = tr_msg(res[i]);
        printf("  %-30s %s\n", tr_tcname(res[i]), msg);
        if (tr_rtype(res[i]) != CK_FAILURE || strchr(msg, '\n') || strncmp(msg, "expected ", 9) != 0 ||
            !strstr(msg, "; found ") || !strstr(msg, "; fix: ")) {
            printf("  ^ not a one-line \"expected ...; found ...; fix: ...\" failure\n");
            bad = 1;
        }
        size_t k = 0;
        while (k < json_array_size(names) && strcmp(json_string_value(json_array_get(names, k)), tr_tcname(res[i])) < 0)
            k++;
        json_array_insert_new(names, k, json_string(tr_tcname(res[i])));
    }
    free(res);
    srunner_free(sr);
    out[0] = '\0';
    for (size_t k = 0; k < json_array_size(names); k++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", k ? " " : "", json_string_value(json_array_get(names, k)));
    json_decref(names);
    printf("  %d checks, failing: [%s]\n", n, out);
    return bad;
}

static void env_copy(char *out, size_t cap, const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        die("%s is not set (run through run.sh, which creates the sandbox)", name);
    snprintf(out, cap, "%s", v);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && !strcmp(argv[1], "--list")) {
        for (size_t i = 0; i < NSCENARIOS; i++)
            printf("%s\n", SCENARIOS[i].name);
        return 0;
    }
    scenario = argc == 2 ? argv[1] : "?";
    const scenario_def *s = NULL;
    for (size_t i = 0; i < NSCENARIOS; i++)
        if (!strcmp(SCENARIOS[i].name, scenario))
            s = &SCENARIOS[i];
    if (!s)
        die("usage: conformance-break SCENARIO (--list shows them)");
    env_copy(broker_url, sizeof broker_url, "TOOLBOX_BROKER_URL");
    env_copy(backend_url, sizeof backend_url, "TOOLBOX_RESULT_BACKEND");
    env_copy(admin_url, sizeof admin_url, "TOOLBOX_DATABASE_ADMIN_URL");
    char *vh = tbx_conf_broker_vhost(broker_url);
    snprintf(vhost, sizeof vhost, "%s", vh ? vh : "");
    free(vh);
    const char *db = strrchr(backend_url, '/');
    /* Never wipe anything but a sandbox of ours. */
    if (strncmp(vhost, "t_conf", 6) != 0 || !db || strncmp(db + 1, "t_conf", 6) != 0)
        die("refusing to run outside a t_conf* sandbox (vhost '%s', database '%s')", vhost, db ? db + 1 : "?");
    const char *m = getenv("TOOLBOX_BROKER_MANAGEMENT_URL");
    char *derived = tbx_conf_mgmt_url_from_broker(broker_url);
    snprintf(mgmt, sizeof mgmt, "%s", m && *m ? m : derived ? derived : "");
    free(derived);
    int status;
    char *body = NULL;
    size_t len;
    tbx_error err = {0};
    if (tbx_http_get(mgmt, "/api/overview", 10, &status, &body, &len, &err) || status != 200) {
        printf("SKIP: the RabbitMQ management API is not reachable (%s, HTTP %d); enable rabbitmq_management "
               "or set TOOLBOX_BROKER_MANAGEMENT_URL\n", err.msg, status);
        free(body);
        return SKIP;
    }
    free(body);

    printf("scenario %s (vhost %s): expecting [%s] to fail\n", s->name, vhost, s->expect);
    wipe();
    tbx_config *setup_cfg = load(s->setup_set, NULL, NULL);
    if (tbx_setup(setup_cfg, TBX_SETUP_BROKER | TBX_SETUP_DATABASE, &err))
        die("toolbox setup: %s", err.msg);
    tbx_config_free(setup_cfg);
    /* The platform monitor's tables are not part of a worker's world: `toolbox setup` currently grants the
     * result_backend role access to them, which worker_least_privilege rightly reports. The baseline here is
     * a deployment without them. */
    sql("DROP TABLE IF EXISTS tasks_backgroundtask, tasks_parkedmessage");
    if (s->breaker)
        s->breaker();

    char extra[1200] = "", *extra_p = NULL;
    if (s->bad_broker_password) {
        char u[1024];
        with_password(u, sizeof u, broker_url, "wrong-password");
        snprintf(extra, sizeof extra, "broker_url=%s", u);
    } else if (s->broker_tls) {
        snprintf(extra, sizeof extra, "broker_url=amqps%s", strchr(broker_url, ':'));
    } else if (s->bad_db_password) {
        char u[1024];
        with_password(u, sizeof u, backend_url, "wrong-password");
        snprintf(extra, sizeof extra, "result_backend=%s", u);
    } else if (s->db_tls) {
        snprintf(extra, sizeof extra, "result_backend=%s%ssslmode=require", backend_url,
                 strchr(backend_url, '?') ? "&" : "?");
    }
    if (*extra)
        extra_p = extra;
    if (s->bad_mgmt)
        setenv("TOOLBOX_BROKER_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:1", 1);

    int bad = 0;
    char failing[2048];
    char *before = snapshot();
    int stop_fd = -1;
    pid_t consumers = !strcmp(s->name, "pass") ? start_consumers(&stop_fd) : 0;
    if (consumers)
        usleep(300000); /* let them attach */
    bad |= run_suite(s, extra_p, failing, sizeof failing);
    if (consumers) {
        int got = stop_consumers(consumers, stop_fd);
        if (got != 0) {
            printf("FAIL: consumers waiting on the queues received %d message(s) during the suite\n", got);
            bad = 1;
        }
    }
    char *after = snapshot();
    if (strcmp(before, after) != 0) {
        printf("FAIL: the suite changed the sandbox:\n  before %s\n  after  %s\n", before, after);
        bad = 1;
    }
    if (strcmp(failing, s->expect) != 0) {
        printf("FAIL: expected exactly [%s] to fail, got [%s]\n", s->expect, failing);
        bad = 1;
    }
    if (!strcmp(s->name, "pass")) {
        /* Tasks waiting in the queues, the suite run twice: they come out the same, in the same order. */
        json_t *expect = json_pack("{s:[],s:[],s:[],s:[]}", "celery", "platform.fifo", "msg", "export");
        publish_tasks(expect);
        free(before);
        before = snapshot();
        scenario_def producer = *s;
        producer.producer_only = 1;
        for (int k = 0; k < 2; k++) {
            bad |= run_suite(k ? &producer : s, NULL, failing, sizeof failing);
            if (*failing) {
                printf("FAIL: with tasks queued, [%s] failed\n", failing);
                bad = 1;
            }
        }
        free(after);
        after = snapshot();
        if (strcmp(before, after) != 0) {
            printf("FAIL: with tasks queued, the suite changed the sandbox:\n  before %s\n  after  %s\n", before,
                   after);
            bad = 1;
        }
        drain_and_compare(expect);
        json_decref(expect);
    }
    free(before);
    free(after);
    wipe();
    printf("%s: %s\n", s->name, bad ? "FAIL" : "ok");
    return bad ? 1 : 0;
}
