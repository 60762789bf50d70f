/*
 * copy.h - export-worker's database side: safe SQL for a table export, the
 * fixed named queries, and streaming `COPY ... TO STDOUT (FORMAT csv, HEADER)`
 * into an export_writer inside a read-only transaction.
 */
#ifndef EXPORT_COPY_H
#define EXPORT_COPY_H

#include <libpq-fe.h>
#include <stdint.h>

#include "files.h"
#include "toolbox/worker.h"

/* Connect to the data database (url borrowed; db+ prefix allowed). On success
 * *out is owned by the caller (PQfinish). ConnectionError on failure. */
int export_connect(const char *url, PGconn **out, export_err *e);

/* "COPY (SELECT <cols> FROM [<schema>.]<table>) TO STDOUT (FORMAT csv, HEADER)"
 * with every identifier quoted by PQescapeIdentifier; cols NULL (ncols 0)
 * means every column. malloc'd (caller frees) or NULL with e filled. */
char *export_table_sql(PGconn *c, const char *schema, const char *table, const char *const *cols,
                       size_t ncols, export_err *e);

/* The COPY statement of a named read-only query, or NULL if name is unknown.
 * Static. */
const char *export_named_query(const char *name);
/* "a, b, c": the names export_named_query knows. Static. */
const char *export_named_query_list(void);

/* Run copy_sql in a read-only REPEATABLE READ transaction, streaming its
 * output into w. *rows is the server's row count. The soft time limit of t (if
 * it passes) cancels the query: SoftTimeLimitExceeded. Database errors are
 * mapped to Python builtins by SQLSTATE (undefined table/column -> ValueError,
 * insufficient privilege -> PermissionError, ...). On failure the connection
 * should be closed, not reused. 0 ok, -1. */
int export_copy(PGconn *c, const char *copy_sql, export_writer *w, tbx_task *t, uint64_t *rows,
                export_err *e);

#endif
