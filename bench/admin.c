/*
 * bench-admin - small chores for bench/run.sh, so the driver needs neither
 * rabbitmqctl nor psql in its timing loops. Meant for a sandbox only: it
 * purges queues and empties the result table it is pointed at.
 *
 *   bench-admin purge Q...            purge queues ($TOOLBOX_BROKER_URL); prints what was dropped
 *   bench-admin depth Q               print the ready-message count of Q
 *   bench-admin truncate              TRUNCATE celery_taskmeta ($TOOLBOX_DATABASE_ADMIN_URL)
 *   bench-admin wait-results N [--timeout S] [--poll-ms MS]
 *       poll SELECT count(*) ... WHERE status='SUCCESS' ($TOOLBOX_DATABASE_ADMIN_URL) until N rows,
 *       and print the drain rate measured as celery_anchor.py measures it (rows finished between the
 *       first poll that saw any and the poll that saw N, over that time), plus the rate from the
 *       rows' own date_done span (rows committed after the first commit, over the time from the first
 *       commit to the last: exact, where polling is coarse for short drains).
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_amqp.h"

static PGconn *db_open(void)
{
    const char *url = getenv("TOOLBOX_DATABASE_ADMIN_URL");
    if (!url || !*url)
        bench_die("TOOLBOX_DATABASE_ADMIN_URL is not set");
    if (!strncmp(url, "db+", 3))
        url += 3;
    PGconn *db = PQconnectdb(url);
    if (PQstatus(db) != CONNECTION_OK)
        bench_die("connecting to the database: %s", PQerrorMessage(db));
    return db;
}

static PGresult *db_exec(PGconn *db, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != want)
        bench_die("%s: %s", sql, PQerrorMessage(db));
    return r;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int cmd_wait(int argc, char **argv)
{
    if (argc < 1)
        bench_die("wait-results: N missing");
    long n = bench_parse_long(argv[0], "wait-results N"), poll_ms = 50;
    double timeout = 600;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--timeout"))
            timeout = (double)bench_parse_long(v, "--timeout"), i++;
        else if (!strcmp(argv[i], "--poll-ms"))
            poll_ms = bench_parse_long(v, "--poll-ms"), i++;
        else
            bench_die("wait-results: unknown option %s", argv[i]);
    }
    PGconn *db = db_open();
    const char *count_sql = "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'";
    double start = bench_now(), first_t = 0, end_t = 0;
    long first_n = -1, cur = 0;
    for (;;) {
        PGresult *r = db_exec(db, count_sql, PGRES_TUPLES_OK);
        cur = atol(PQgetvalue(r, 0, 0));
        PQclear(r);
        double now = bench_now();
        if (first_n < 0 && cur > 0) {
            first_n = cur;
            first_t = now;
        }
        if (cur >= n) {
            end_t = now;
            break;
        }
        if (now - start > timeout) {
            fprintf(stderr, "bench-admin: only %ld of %ld results within %.0f s\n", cur, n, timeout);
            PQfinish(db);
            return 1;
        }
        sleep_ms(poll_ms);
    }
    /* Rows committed after the first commit, over the time from the first commit to the last
     * (date_done is the committing transaction's start, so rows of one batch share it). */
    PGresult *r = db_exec(db,
                          "WITH s AS (SELECT date_done FROM celery_taskmeta WHERE status = 'SUCCESS'), "
                          "m AS (SELECT min(date_done) AS lo, max(date_done) AS hi FROM s) "
                          "SELECT count(*), count(*) FILTER (WHERE s.date_done = m.lo), "
                          "extract(epoch FROM m.hi - m.lo) FROM s, m GROUP BY m.lo, m.hi",
                          PGRES_TUPLES_OK);
    long rows = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : 0;
    long first_rows = PQntuples(r) ? atol(PQgetvalue(r, 0, 1)) : 0;
    double span = PQntuples(r) ? atof(PQgetvalue(r, 0, 2)) : 0;
    PQclear(r);
    PQfinish(db);
    double poll_rate = end_t > first_t ? (double)(cur - first_n) / (end_t - first_t) : 0;
    double span_rate = span > 0 ? (double)(rows - first_rows) / span : 0;
    printf("bench-wait-results tasks_per_s=%.1f span_tasks_per_s=%.1f n=%ld first_seen=%ld "
           "drain_seconds=%.3f date_done_span=%.3f first_commit_rows=%ld wait_seconds=%.3f\n",
           poll_rate, span_rate, cur, first_n, end_t - first_t, span, first_rows, end_t - start);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        bench_die("usage: bench-admin purge Q... | depth Q | truncate | wait-results N [--timeout S]");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "purge") || !strcmp(cmd, "depth")) {
        if (argc < 3)
            bench_die("%s: queue name missing", cmd);
        amqp_connection_state_t conn = bench_connect(NULL);
        for (int i = 2; i < argc; i++) {
            amqp_bytes_t q = amqp_cstring_bytes(argv[i]);
            if (!strcmp(cmd, "purge")) {
                /* A fresh sandbox may not have the queue yet: declare it as kombu does. */
                amqp_queue_declare(conn, 1, q, 0, 1, 0, 0, amqp_empty_table);
                bench_check_reply(amqp_get_rpc_reply(conn), "queue.declare");
                amqp_queue_purge_ok_t *ok = amqp_queue_purge(conn, 1, q);
                bench_check_reply(amqp_get_rpc_reply(conn), "queue.purge");
                printf("purged %s %u\n", argv[i], ok->message_count);
            } else {
                amqp_queue_declare_ok_t *ok = amqp_queue_declare(conn, 1, q, 1, 0, 0, 0, amqp_empty_table);
                bench_check_reply(amqp_get_rpc_reply(conn), "passive queue.declare");
                printf("%u\n", ok->message_count);
            }
        }
        bench_close(conn);
        return 0;
    }
    if (!strcmp(cmd, "truncate")) {
        PGconn *db = db_open();
        PQclear(db_exec(db, "TRUNCATE celery_taskmeta", PGRES_COMMAND_OK));
        PQfinish(db);
        return 0;
    }
    if (!strcmp(cmd, "wait-results"))
        return cmd_wait(argc - 2, argv + 2);
    bench_die("unknown command %s", cmd);
}
