/*
 * toolbox/log.h - where the library's log lines go.
 *
 * The library itself never prints: it hands each line to the handler set
 * here. Programs that want the standard console/file output call
 * tbx_log_open(); without a handler, lines are dropped.
 */
#ifndef TOOLBOX_LOG_H
#define TOOLBOX_LOG_H

#include "toolbox/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tbx_log_level {
    TBX_LOG_DEBUG = 10,
    TBX_LOG_INFO = 20,
    TBX_LOG_WARNING = 30,
    TBX_LOG_ERROR = 40
} tbx_log_level;

/* msg is a single line without a newline, valid only during the call. */
typedef void (*tbx_log_fn)(tbx_log_level level, const char *msg, void *userdata);

/* Replace the handler (NULL: drop everything) and the minimum level. Thread-safe. */
void tbx_log_set_handler(tbx_log_fn fn, void *userdata, tbx_log_level min_level);

/* The standard handler: "[time] LEVEL name[pid]: msg" to stderr and, if file
 * is non-NULL and non-empty, appended to file, rotated at max_bytes (0: never)
 * keeping `backups` old files (file.1 ... file.N). name is copied. */
tbx_status tbx_log_open(const char *name, tbx_log_level min_level, const char *file,
                        long long max_bytes, int backups, tbx_error *err);

/* Parse "debug", "info", "warning", "error" (case-insensitive). -1 if unknown. */
int tbx_log_level_parse(const char *text);

/* Emit one line through the current handler. */
void tbx_log(tbx_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
