/*
 * tasks.c - export-worker's tasks. Each handler checks its arguments the way
 * a Python function would (TypeError), confines paths to the export directory
 * (ValueError), and turns every failure into a task failure with a builtin
 * Python exception; nothing here exits or crashes on bad input.
 */
#include "tasks.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "copy.h"
#include "internal.h"
#include "files.h"
#include "settings.h"
#include "toolbox/log.h"

#define MAX_COLUMNS 1600 /* PostgreSQL's own limit of columns per table */

static void raise_err(tbx_task *t, const export_err *e)
{
    const char *type = e->type ? e->type : "RuntimeError";
    const char *mod = strcmp(type, "SoftTimeLimitExceeded") ? "builtins" : "billiard.exceptions";
    tbx_task_raise(t, type, mod, "%s", e->msg);
}

/* The same, with what was being exported in front of the message. */
static void raise_ctx(tbx_task *t, const char *label, const export_err *e)
{
    export_err c = *e;
    snprintf(c.msg, sizeof c.msg, "cannot export %.150s: %.340s", label, e->msg);
    raise_err(t, &c);
}

/* Positional argument i, or keyword `name`; TypeError (returns -1) if both are given. */
static int arg(tbx_task *t, const json_t *args, const json_t *kwargs, size_t i, const char *name,
               const json_t **out)
{
    const json_t *p = json_array_get(args, i), *k = json_object_get(kwargs, name);
    if (p && k) {
        tbx_task_raise(t, "TypeError", "builtins", "%s() got multiple values for argument '%s'",
                       tbx_task_name(t), name);
        return -1;
    }
    *out = p ? p : k;
    return 0;
}

/* TypeError for more than maxpos positional arguments or a keyword not in names. */
static int check_call(tbx_task *t, const json_t *args, const json_t *kwargs, size_t maxpos,
                      const char *const *names)
{
    if (json_array_size(args) > maxpos) {
        tbx_task_raise(t, "TypeError", "builtins", "%s() takes at most %zu positional arguments (%zu given)",
                       tbx_task_name(t), maxpos, json_array_size(args));
        return -1;
    }
    const char *key;
    const json_t *v;
    json_object_foreach(TBX_UNCONST(kwargs), key, v) {
        size_t i = 0;
        while (names[i] && strcmp(names[i], key))
            i++;
        if (!names[i]) {
            tbx_task_raise(t, "TypeError", "builtins", "%s() got an unexpected keyword argument '%s'",
                           tbx_task_name(t), key);
            return -1;
        }
    }
    return 0;
}

/* A JSON string without NUL bytes, non-empty. */
static int good_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0 &&
           strlen(json_string_value(v)) == json_string_length(v);
}

/* The canonical export directory, created if missing. */
static int prepare_dir(char real[PATH_MAX], export_err *e)
{
    const char *dir = export_dir(e);
    return dir ? export_dir_prepare(dir, real, e) : -1;
}

/* Resolve a "path" argument (string, or NULL meaning default_name). */
static int resolve_path(tbx_task *t, const char *realdir, const json_t *path, const char *default_name,
                        char out[PATH_MAX], export_err *e)
{
    if (path && !json_is_null(path)) {
        if (!json_is_string(path)) {
            tbx_task_raise(t, "TypeError", "builtins", "%s(): path must be a string", tbx_task_name(t));
            return 1;
        }
        return export_resolve(realdir, json_string_value(path), json_string_length(path), out, e);
    }
    return export_resolve(realdir, default_name, strlen(default_name), out, e);
}

/* Export one COPY statement (fixed_sql) or one table (when fixed_sql is NULL)
 * to a file, and return {"path", "rows", "sha256", "bytes"}. */
static void run_export(tbx_task *t, const char *label, const json_t *path, const char *fixed_sql,
                       const char *schema, const char *table, const char *const *cols, size_t ncols)
{
    export_err e = {0};
    char realdir[PATH_MAX], out[PATH_MAX], name[160], hex[65];
    export_default_name(label, tbx_task_id(t), name, sizeof name);
    if (prepare_dir(realdir, &e)) {
        raise_err(t, &e);
        return;
    }
    int r = resolve_path(t, realdir, path, name, out, &e);
    if (r) {
        if (r < 0)
            raise_err(t, &e);
        return;
    }
    const char *url = export_data_url(&e);
    PGconn *c = NULL;
    if (!url || export_connect(url, &c, &e)) {
        raise_err(t, &e);
        return;
    }
    char *sql = fixed_sql ? NULL : export_table_sql(c, schema, table, cols, ncols, &e);
    if (!fixed_sql && !sql) {
        PQfinish(c);
        raise_ctx(t, label, &e);
        return;
    }
    export_writer w;
    uint64_t rows = 0;
    int failed = export_writer_open(&w, out, &e) ||
                 export_copy(c, fixed_sql ? fixed_sql : sql, &w, t, &rows, &e);
    PQfinish(c);
    free(sql);
    if (failed) {
        export_writer_abort(&w);
        raise_ctx(t, label, &e);
        return;
    }
    /* The file must hold the header plus one record per row the server sent. */
    uint64_t records = export_csv_records(&w.csv), bytes = w.bytes;
    if (records != rows + 1) {
        export_writer_abort(&w);
        tbx_task_raise(t, "RuntimeError", "builtins",
                       "export of %s: the server reported %" PRIu64 " rows but the CSV holds %" PRIu64
                       " records after the header", label, rows, records ? records - 1 : 0);
        return;
    }
    if (export_writer_commit(&w, hex, &e)) {
        raise_ctx(t, label, &e);
        return;
    }
    tbx_log(TBX_LOG_INFO, "%s %s: %" PRIu64 " rows, %" PRIu64 " bytes -> %s", tbx_task_name(t), label, rows,
            bytes, out);
    json_t *res = json_pack("{s:s, s:I, s:s, s:I}", "path", out, "rows", (json_int_t)rows, "sha256", hex,
                            "bytes", (json_int_t)bytes);
    if (!res) {
        tbx_task_raise(t, "MemoryError", "builtins", "cannot build the result");
        return;
    }
    tbx_task_return(t, res);
}

void export_table(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    static const char *const names[] = {"table", "path", "columns", "schema", "where", NULL};
    const json_t *table, *path, *cols = json_object_get(kwargs, "columns"),
                                 *schema = json_object_get(kwargs, "schema");
    if (check_call(t, args, kwargs, 2, names) || arg(t, args, kwargs, 0, "table", &table) ||
        arg(t, args, kwargs, 1, "path", &path))
        return;
    if (json_object_get(kwargs, "where")) {
        tbx_task_raise(t, "ValueError", "builtins",
                       "export.table(): 'where' is not supported (raw SQL is never accepted); "
                       "export a view, or choose columns with 'columns'");
        return;
    }
    if (!good_string(table)) {
        tbx_task_raise(t, "TypeError", "builtins", "export.table() needs 'table', a non-empty string");
        return;
    }
    if (schema && !json_is_null(schema) && !good_string(schema)) {
        tbx_task_raise(t, "TypeError", "builtins", "export.table(): 'schema' must be a non-empty string");
        return;
    }
    size_t ncols = 0;
    if (cols && !json_is_null(cols)) {
        ncols = json_array_size(cols);
        if (!json_is_array(cols) || ncols == 0 || ncols > MAX_COLUMNS) {
            tbx_task_raise(t, "TypeError", "builtins",
                           "export.table(): 'columns' must be a list of 1 to %d column names", MAX_COLUMNS);
            return;
        }
        for (size_t i = 0; i < ncols; i++)
            if (!good_string(json_array_get(cols, i))) {
                tbx_task_raise(t, "TypeError", "builtins",
                               "export.table(): column %zu is not a non-empty string", i);
                return;
            }
    }
    const char **colv = ncols ? calloc(ncols, sizeof *colv) : NULL;
    if (ncols && !colv) {
        tbx_task_raise(t, "MemoryError", "builtins", NULL);
        return;
    }
    for (size_t i = 0; i < ncols; i++)
        colv[i] = json_string_value(json_array_get(cols, i));

    /* "schema.table" splits at the first '.' unless the schema is given apart. */
    const char *tname = json_string_value(table), *sname = NULL;
    char *owned = NULL;
    char label[300];
    if (good_string(schema)) {
        sname = json_string_value(schema);
    } else if (strchr(tname, '.')) {
        if (!(owned = strdup(tname))) {
            free(colv);
            tbx_task_raise(t, "MemoryError", "builtins", NULL);
            return;
        }
        char *dot = strchr(owned, '.');
        *dot = '\0';
        sname = owned;
        tname = dot + 1;
        if (!*sname || !*tname) {
            free(owned);
            free(colv);
            tbx_task_raise(t, "ValueError", "builtins", "export.table(): bad table name '%s'",
                           json_string_value(table));
            return;
        }
    }
    snprintf(label, sizeof label, "%s%s%s", sname ? sname : "", sname ? "." : "", tname);
    run_export(t, label, path, NULL, sname, tname, colv, ncols);
    free(owned);
    free(colv);
}

void export_query(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    static const char *const names[] = {"name", "path", NULL};
    const json_t *name, *path;
    if (check_call(t, args, kwargs, 2, names) || arg(t, args, kwargs, 0, "name", &name) ||
        arg(t, args, kwargs, 1, "path", &path))
        return;
    if (!good_string(name)) {
        tbx_task_raise(t, "TypeError", "builtins", "export.query() needs 'name', one of: %s",
                       export_named_query_list());
        return;
    }
    const char *sql = export_named_query(json_string_value(name));
    if (!sql) {
        tbx_task_raise(t, "ValueError", "builtins", "export.query(): unknown query '%s' (known: %s)",
                       json_string_value(name), export_named_query_list());
        return;
    }
    run_export(t, json_string_value(name), path, sql, NULL, NULL, NULL, 0);
}

/* A non-negative integer field of an expected result, or -1 when absent; -2 if malformed. */
static json_int_t opt_count(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return -1;
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -2;
}

void export_checksum(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    static const char *const names[] = {"result", NULL};
    const json_t *prev;
    if (check_call(t, args, kwargs, 1, names) || arg(t, args, kwargs, 0, "result", &prev))
        return;
    const json_t *path = json_object_get(prev, "path"), *sha = json_object_get(prev, "sha256");
    json_int_t rows = opt_count(prev, "rows"), bytes = opt_count(prev, "bytes");
    if (!json_is_object(prev) || !good_string(path) || !json_is_string(sha) || rows == -2 || bytes == -2) {
        tbx_task_raise(t, "TypeError", "builtins",
                       "export.checksum() takes the result of export.table or export.query: "
                       "an object with 'path', 'sha256' and optionally 'rows' and 'bytes'");
        return;
    }
    const char *want = json_string_value(sha);
    size_t wl = json_string_length(sha);
    if (wl != 64 || strspn(want, "0123456789abcdefABCDEF") != 64) {
        tbx_task_raise(t, "ValueError", "builtins", "export.checksum(): 'sha256' is not 64 hex digits");
        return;
    }
    export_err e = {0};
    char realdir[PATH_MAX], out[PATH_MAX];
    if (prepare_dir(realdir, &e) || export_resolve(realdir, json_string_value(path), json_string_length(path),
                                                   out, &e)) {
        raise_err(t, &e);
        return;
    }
    export_digest d;
    if (export_digest_file(out, &d, &e)) {
        if (!strcmp(e.type, "FileNotFoundError")) /* nothing to verify: the export is not there */
            tbx_task_raise(t, "ValueError", "builtins", "cannot verify %s: the file does not exist", out);
        else
            raise_err(t, &e);
        return;
    }
    uint64_t got_rows = d.records ? d.records - 1 : 0;
    if (strcasecmp(want, d.sha256)) {
        tbx_task_raise(t, "ValueError", "builtins", "checksum mismatch for %s: expected sha256 %s, file has %s",
                       out, want, d.sha256);
        return;
    }
    if (bytes >= 0 && (uint64_t)bytes != d.bytes) {
        tbx_task_raise(t, "ValueError", "builtins", "size mismatch for %s: expected %lld bytes, file has %" PRIu64,
                       out, (long long)bytes, d.bytes);
        return;
    }
    if (rows >= 0 && (uint64_t)rows != got_rows) {
        tbx_task_raise(t, "ValueError", "builtins", "row count mismatch for %s: expected %lld, file has %" PRIu64,
                       out, (long long)rows, got_rows);
        return;
    }
    json_t *res = json_pack("{s:s, s:b, s:I, s:s, s:I}", "path", out, "verified", 1, "rows",
                            (json_int_t)got_rows, "sha256", d.sha256, "bytes", (json_int_t)d.bytes);
    if (!res) {
        tbx_task_raise(t, "MemoryError", "builtins", "cannot build the result");
        return;
    }
    tbx_task_return(t, res);
}

void export_cleanup(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud)
{
    (void)ud;
    static const char *const names[] = {"path", NULL};
    const json_t *path;
    if (check_call(t, args, kwargs, 1, names) || arg(t, args, kwargs, 0, "path", &path))
        return;
    if (json_is_object(path)) /* chained after export.table / export.checksum */
        path = json_object_get(path, "path");
    if (!good_string(path)) {
        tbx_task_raise(t, "TypeError", "builtins",
                       "export.cleanup() takes a path, or a result object with 'path'");
        return;
    }
    export_err e = {0};
    char realdir[PATH_MAX], out[PATH_MAX];
    if (prepare_dir(realdir, &e) || export_resolve(realdir, json_string_value(path), json_string_length(path),
                                                   out, &e)) {
        raise_err(t, &e);
        return;
    }
    struct stat st;
    int removed = 0;
    if (lstat(out, &st) == 0) {
        if (!S_ISREG(st.st_mode)) {
            tbx_task_raise(t, "ValueError", "builtins", "'%s' is not a regular file; not removed", out);
            return;
        }
        if (unlink(out) != 0) {
            int err = errno;
            tbx_task_raise(t, err == EACCES || err == EPERM ? "PermissionError" : "OSError", "builtins",
                           "[Errno %d] %s: '%s'", err, strerror(err), out);
            return;
        }
        removed = 1;
    } else if (errno != ENOENT) {
        int err = errno;
        tbx_task_raise(t, "OSError", "builtins", "[Errno %d] %s: '%s'", err, strerror(err), out);
        return;
    }
    /* Already gone is success (removed: false): a redelivered cleanup must not fail. */
    tbx_task_return(t, json_pack("{s:s, s:b}", "path", out, "removed", removed));
}
