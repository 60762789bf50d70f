/*
 * toolbox/result.h - Celery's database result backend (celery_taskmeta).
 *
 * Rows are written and read exactly as Celery 5.2's SQLAlchemy backend does
 * (celery-wire.md §2): `result` is a pickle, exceptions are the dict
 * {exc_type, exc_message(tuple), exc_module}, date_done is set only for the
 * ready states. A tbx_backend owns one libpq connection; one thread at a time.
 */
#ifndef TOOLBOX_RESULT_H
#define TOOLBOX_RESULT_H

#include <jansson.h>
#include <stddef.h>

#include "toolbox/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tbx_backend tbx_backend;

/* url: result_backend (postgresql://, or Celery's db+postgresql://). *out is
 * owned by the caller. */
tbx_status tbx_backend_open(tbx_backend **out, const char *url, tbx_error *err);
void tbx_backend_close(tbx_backend *b); /* NULL ok */

/* One stored task state. Strings are owned by the struct; tbx_result_clear frees them. */
typedef struct tbx_result {
    int found;          /* 0: no row (the task is PENDING) */
    char *status;       /* SUCCESS, FAILURE, STARTED, RETRY, REVOKED, ... */
    json_t *result;     /* the unpickled value; NULL if absent or not representable */
    char *result_error; /* why result is NULL although the column is set, or NULL */
    char *traceback;    /* NULL when none */
    char *date_done;    /* "YYYY-MM-DD HH:MM:SS.ffffff" UTC, NULL when not ready */
} tbx_result;

void tbx_result_clear(tbx_result *r);

/* 1 for SUCCESS, FAILURE, REVOKED. */
int tbx_state_is_ready(const char *status);

/* Read the row of task_id. A missing row is TBX_OK with found = 0. */
tbx_status tbx_backend_get(tbx_backend *b, const char *task_id, tbx_result *out, tbx_error *err);

/* Poll until the task is ready or timeout seconds pass (timeout <= 0: forever).
 * TBX_ETIMEOUT leaves the last seen state in *out. */
tbx_status tbx_backend_wait(tbx_backend *b, const char *task_id, double timeout, double interval,
                            tbx_result *out, tbx_error *err);

/* Write one state change (upsert on task_id). result/len is a pickle (NULL:
 * SQL NULL); traceback may be NULL. date_done is set for ready states and NULL
 * otherwise. A ready state is never overwritten by a non-ready one, and
 * SUCCESS is never overwritten. *applied (if non-NULL) is 0 when the guard
 * kept the existing row. */
tbx_status tbx_backend_store(tbx_backend *b, const char *task_id, const char *status,
                             const unsigned char *result, size_t len, const char *traceback,
                             int *applied, tbx_error *err);

/* Convenience: the result as one JSON object {task_id, status, result,
 * traceback, date_done} (new reference). */
json_t *tbx_result_to_json(const char *task_id, const tbx_result *r);

#ifdef __cplusplus
}
#endif
#endif
