/* pg.h - opening libpq connections with bounded waits. Internal. */
#ifndef TOOLBOX_PG_H
#define TOOLBOX_PG_H

#include <libpq-fe.h>

#include "internal.h"

/* Connect to url (db+ prefix allowed) with connect_timeout, TCP keepalives and
 * application_name. On success *out is owned by the caller (PQfinish). */
tbx_status tbx_pg_connect(const char *url, const char *app, PGconn **out, tbx_error *err);

/* Map a failed result to a status with "what: server message" (one line). */
tbx_status tbx_pg_fail(PGconn *c, PGresult *r, const char *what, tbx_error *err);

/* The login role of a database URL (db+ prefix allowed), or NULL. malloc'd. */
char *tbx_pg_url_user(const char *url);

/* A statement whose answer may take long or never come (a silent link: TCP keeps ACKing, no error
 * ever arrives): wait at most `timeout` seconds, calling idle(ud) (may be NULL) about every 0.25 s
 * meanwhile. Returns the last result (caller PQclears), or NULL when the connection failed or the
 * answer did not come in time (err says which; the connection is then unusable: PQfinish it and
 * retry on a new one - the statement may or may not have been run). Text parameters. */
PGresult *tbx_pg_exec_bounded(PGconn *c, const char *sql, int nparams, const char *const *params, double timeout,
                              void (*idle)(void *), void *ud, tbx_error *err);

/* Drain the results of a statement sent with PQsend*: the first error, else the last result (caller
 * PQclears), NULL when there was none. */
PGresult *tbx_pg_last_result(PGconn *c);

/* Run a parameterless command; TBX_EDB with the server's message on failure. */
tbx_status tbx_pg_exec(PGconn *c, const char *sql, const char *what, tbx_error *err);

#endif
