/*
 * batch.h - result rows collected and committed in one statement.
 *
 * Rows are keyed by task id: a later state of the same task replaces the
 * earlier one in the batch (a STARTED row that has not been committed when
 * the task finishes is never written). One multi-row upsert per commit keeps
 * the worker far from the one-fsync-per-task ceiling. Internal.
 */
#ifndef TOOLBOX_BATCH_H
#define TOOLBOX_BATCH_H

#include <libpq-fe.h>

#include "internal.h"

typedef struct tbx_batch tbx_batch;

tbx_batch *tbx_batch_new(void);
void tbx_batch_free(tbx_batch *b);

/* Celery's result_extended columns of a row (all strings may be NULL). */
typedef struct tbx_row_ext {
    const char *name;
    const char *args_json;   /* stored as JSON bytes, as Celery's result_serializer writes them */
    const char *kwargs_json;
    const char *worker;
    int retries;
    const char *queue;       /* the delivery routing key, as Celery stores it */
} tbx_row_ext;

/* Add or replace the row of task_id. pickle may be NULL (SQL NULL); traceback
 * and ext may be NULL. Copies everything. 0 ok, -1 ENOMEM. */
int tbx_batch_put(tbx_batch *b, const char *task_id, const char *status, const unsigned char *pickle,
                  size_t pickle_len, const char *traceback, const tbx_row_ext *ext);
size_t tbx_batch_len(const tbx_batch *b);

/* Write every row in one upsert (never regressing a ready state, never
 * overwriting SUCCESS) and commit; with `extended`, also the name, args,
 * kwargs, worker, retries and queue columns. Waits at most `timeout` seconds
 * for the answer, calling idle(ud) meanwhile (tbx_pg_exec_bounded); TBX_ETIMEOUT
 * then, and conn must be dropped. On success the batch is emptied. */
tbx_status tbx_batch_commit(tbx_batch *b, PGconn *conn, int extended, double timeout, void (*idle)(void *),
                            void *ud, tbx_error *err);

#endif
