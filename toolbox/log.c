/* log.c - the library's log sink: a handler hook plus the standard console/file handler. */
#include "toolbox/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static tbx_log_fn log_fn;
static void *log_ud;
static tbx_log_level log_min = TBX_LOG_INFO;

typedef struct std_sink {
    char name[64];
    char *file;
    FILE *fp;
    long long max_bytes;
    int backups;
} std_sink;
static std_sink sink;

void tbx_log_set_handler(tbx_log_fn fn, void *userdata, tbx_log_level min_level)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_ud = userdata;
    log_min = min_level;
    pthread_mutex_unlock(&log_lock);
}

int tbx_log_level_parse(const char *t)
{
    if (!t)
        return -1;
    if (!strcasecmp(t, "debug"))
        return TBX_LOG_DEBUG;
    if (!strcasecmp(t, "info"))
        return TBX_LOG_INFO;
    if (!strcasecmp(t, "warning") || !strcasecmp(t, "warn"))
        return TBX_LOG_WARNING;
    if (!strcasecmp(t, "error"))
        return TBX_LOG_ERROR;
    return -1;
}

static const char *level_name(tbx_log_level l)
{
    switch (l) {
    case TBX_LOG_DEBUG: return "DEBUG";
    case TBX_LOG_INFO: return "INFO";
    case TBX_LOG_WARNING: return "WARNING";
    case TBX_LOG_ERROR: return "ERROR";
    }
    return "?";
}

static void rotate(std_sink *s)
{
    if (s->fp)
        fclose(s->fp);
    s->fp = NULL;
    size_t n = strlen(s->file) + 16;
    char *from = malloc(n), *to = malloc(n);
    if (from && to) {
        for (int i = s->backups; i >= 1; i--) {
            snprintf(to, n, "%s.%d", s->file, i);
            if (i == 1)
                snprintf(from, n, "%s", s->file);
            else
                snprintf(from, n, "%s.%d", s->file, i - 1);
            rename(from, to);
        }
        if (s->backups == 0)
            unlink(s->file);
    }
    free(from);
    free(to);
    s->fp = fopen(s->file, "a");
}

/* Called with log_lock held. */
static void std_handler(tbx_log_level level, const char *msg, void *ud)
{
    std_sink *s = ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "[%s,%03ld] %s %s[%ld]: %s\n", when, ts.tv_nsec / 1000000, level_name(level),
            s->name, (long)getpid(), msg);
    if (s->fp) {
        fprintf(s->fp, "[%s,%03ld] %s %s[%ld]: %s\n", when, ts.tv_nsec / 1000000,
                level_name(level), s->name, (long)getpid(), msg);
        fflush(s->fp);
        if (s->max_bytes > 0 && ftell(s->fp) >= s->max_bytes)
            rotate(s);
    }
}

tbx_status tbx_log_open(const char *name, tbx_log_level min_level, const char *file,
                        long long max_bytes, int backups, tbx_error *err)
{
    pthread_mutex_lock(&log_lock);
    snprintf(sink.name, sizeof sink.name, "%s", name ? name : "toolbox");
    if (sink.fp)
        fclose(sink.fp);
    sink.fp = NULL;
    free(sink.file);
    sink.file = NULL;
    sink.max_bytes = max_bytes;
    sink.backups = backups < 0 ? 0 : backups;
    tbx_status st = TBX_OK;
    if (file && *file) {
        sink.file = strdup(file);
        sink.fp = sink.file ? fopen(file, "a") : NULL;
        if (!sink.fp)
            st = tbx_seterr(err, TBX_EIO, "cannot open log file %s: %s", file, strerror(errno));
    }
    log_fn = std_handler;
    log_ud = &sink;
    log_min = min_level;
    pthread_mutex_unlock(&log_lock);
    return st;
}

void tbx_log(tbx_log_level level, const char *fmt, ...)
{
    if (level < log_min || !log_fn)
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    pthread_mutex_lock(&log_lock);
    if (log_fn)
        log_fn(level, line, log_ud);
    pthread_mutex_unlock(&log_lock);
}
