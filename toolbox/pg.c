/* pg.c - libpq connection helpers. */
#include "pg.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "toolbox/config.h"
#include "toolbox/setup.h"

char *tbx_pg_conninfo(const char *url)
{
    if (!url)
        return NULL;
    if (!strncmp(url, "db+", 3))
        url += 3;
    return strdup(url);
}

char *tbx_pg_url_user(const char *url)
{
    char *ci = tbx_pg_conninfo(url);
    if (!ci)
        return NULL;
    char *user = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "user") && o->val && *o->val)
            user = strdup(o->val);
    PQconninfoFree(opts);
    free(ci);
    return user;
}

static void one_line(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

tbx_status tbx_pg_connect(const char *url, const char *app, PGconn **out, tbx_error *err)
{
    *out = NULL;
    char *ci = tbx_pg_conninfo(url);
    if (!ci)
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    /* Defaults first: the URL (expanded at dbname's place) overrides them. Keepalives notice an idle
     * connection that died; tcp_user_timeout one that dies while a statement waits for its answer
     * (else TCP retransmits for many minutes while the worker's loop waits). */
    const char *keys[] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"10", "1", "10", "5", "3", "30000", app ? app : "toolbox", ci, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    free(ci);
    if (!c)
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        one_line(msg);
        char *masked = tbx_mask_url(url);
        tbx_seterr(err, TBX_EDB, "cannot connect to %s: %s", masked ? masked : "database", msg);
        free(masked);
        PQfinish(c);
        return TBX_EDB;
    }
    *out = c;
    return TBX_OK;
}

tbx_status tbx_pg_fail(PGconn *c, PGresult *r, const char *what, tbx_error *err)
{
    char msg[400];
    const char *m = r ? PQresultErrorMessage(r) : NULL;
    snprintf(msg, sizeof msg, "%s", (m && *m) ? m : PQerrorMessage(c));
    one_line(msg);
    return tbx_seterr(err, TBX_EDB, "%s: %s", what, msg);
}

tbx_status tbx_pg_exec(PGconn *c, const char *sql, const char *what, tbx_error *err)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    tbx_status st = TBX_OK;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        st = tbx_pg_fail(c, r, what, err);
    PQclear(r);
    return st;
}

PGresult *tbx_pg_last_result(PGconn *c)
{
    PGresult *last = NULL, *r;
    while ((r = PQgetResult(c)) != NULL) {
        if (last && PQresultStatus(last) != PGRES_TUPLES_OK && PQresultStatus(last) != PGRES_COMMAND_OK) {
            PQclear(r); /* keep the first error */
            continue;
        }
        PQclear(last);
        last = r;
    }
    return last;
}

PGresult *tbx_pg_exec_bounded(PGconn *c, const char *sql, int nparams, const char *const *params, double timeout,
                              void (*idle)(void *), void *ud, tbx_error *err)
{
    if (!PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0)) {
        tbx_pg_fail(c, NULL, "sending a statement", err);
        return NULL;
    }
    double deadline = tbx_mono() + timeout;
    for (;;) {
        if (!PQconsumeInput(c)) {
            tbx_pg_fail(c, NULL, "reading the database's answer", err);
            return NULL;
        }
        if (!PQisBusy(c))
            break;
        double left = deadline - tbx_mono();
        if (left <= 0) {
            tbx_seterr(err, TBX_ETIMEOUT, "the database did not answer within %.0f s (database_timeout): "
                       "connection given up", timeout);
            return NULL;
        }
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
        if (poll(&p, 1, (int)ceil(fmin(left, 0.25) * 1000)) < 0 && errno != EINTR) {
            tbx_seterr(err, TBX_EIO, "waiting for the database: %s", strerror(errno));
            return NULL;
        }
        if (idle)
            idle(ud);
    }
    PGresult *last = tbx_pg_last_result(c);
    if (!last)
        tbx_pg_fail(c, NULL, "reading the database's answer", err);
    return last;
}
