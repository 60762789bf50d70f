/* pg.c - libpq connection helpers. */
#include "pg.h"

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
    const char *keys[] = {"dbname", "connect_timeout", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "application_name", NULL};
    const char *vals[] = {ci, "10", "1", "10", "5", "3", app ? app : "toolbox", NULL};
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
