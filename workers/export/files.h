/*
 * files.h - export-worker's file side: the export directory, paths confined
 * to it, atomic CSV files with their SHA-256, and RFC 4180 record counting.
 *
 * Nothing here knows about tasks or JSON, so it is unit-tested on its own
 * (tests/export/export_files_test.c). Failures fill an export_err: the name of
 * the Python builtin exception the task should raise and a one-line message.
 */
#ifndef EXPORT_FILES_H
#define EXPORT_FILES_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* Why a step failed, as the task will report it. Plain value, caller-owned. */
typedef struct export_err {
    const char *type; /* static Python builtin exception name: "ValueError", "OSError", ... */
    char msg[512];
} export_err;

void export_seterr(export_err *e, const char *type, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- SHA-256 (OpenSSL libcrypto EVP) ----------------------------------------- */

typedef struct export_sha256 export_sha256; /* opaque; one hash in progress */

export_sha256 *export_sha256_new(void); /* NULL on ENOMEM; free with export_sha256_free */
int export_sha256_update(export_sha256 *h, const void *p, size_t n); /* 0 ok, -1 failure */
/* Finish and write 64 lower-case hex digits and a NUL to hex[65]. 0 ok, -1 failure. */
int export_sha256_final(export_sha256 *h, char hex[65]);
void export_sha256_free(export_sha256 *h); /* NULL ok */

/* ---- CSV records ---------------------------------------------------------------- */

/* Streaming count of RFC 4180 records: a line break ends a record unless it is
 * inside a quoted field ("" inside quotes is an escaped quote). Zero-initialise. */
typedef struct export_csv_count {
    uint64_t records;  /* complete records seen so far */
    int in_quotes;
    int partial;       /* bytes seen since the last record break */
    int last_cr;       /* previous byte was a CR outside quotes (CRLF counts once) */
} export_csv_count;

void export_csv_feed(export_csv_count *c, const void *p, size_t n);
/* Records including an unterminated last one; the header row is one of them. */
uint64_t export_csv_records(const export_csv_count *c);

/* ---- the export directory and paths in it --------------------------------------- */

/* Create dir (and its parents, mode 0750) if missing and write its canonical
 * absolute path to real[PATH_MAX]. 0 ok, -1 with e filled (OSError). */
int export_dir_prepare(const char *dir, char real[PATH_MAX], export_err *e);

/* Resolve path (absolute, or relative to the export directory realdir, which
 * export_dir_prepare produced) to out[PATH_MAX]: the canonical directory it
 * lands in, which must exist and be realdir or below it, plus its last
 * component (not "", "." or ".."; the file itself need not exist). Anything
 * else, including a NUL byte (len != strlen), is a ValueError. 0 ok, -1. */
int export_resolve(const char *realdir, const char *path, size_t len, char out[PATH_MAX], export_err *e);

/* A default file name from a label (table or query name) and the task id:
 * "<label>_<id>.csv" with every byte outside [A-Za-z0-9_.-] replaced by '_'
 * and a leading '.' replaced too. Truncated to fit n bytes (n >= 16). */
void export_default_name(const char *label, const char *id, char *out, size_t n);

/* ---- writing a file atomically ----------------------------------------------------- */

/* A file being written: a hidden temporary file beside the target, renamed
 * over it on commit; abort (or a failed commit) unlinks it. */
typedef struct export_writer {
    int fd;
    char tmp[PATH_MAX];
    char path[PATH_MAX];
    export_sha256 *sha;
    export_csv_count csv;
    uint64_t bytes;
} export_writer;

/* path as export_resolve produced it. 0 ok, -1 (OSError / MemoryError). */
int export_writer_open(export_writer *w, const char *path, export_err *e);
/* Append n bytes (retries short writes and EINTR). 0 ok, -1 (OSError, e.g. ENOSPC). */
int export_writer_write(export_writer *w, const void *p, size_t n, export_err *e);
/* fsync, rename over the target, fsync the directory; hex[65] gets the digest.
 * On failure the temporary file is gone. 0 ok, -1. */
int export_writer_commit(export_writer *w, char hex[65], export_err *e);
/* Drop the temporary file. Safe after a failed open or commit, and twice. */
void export_writer_abort(export_writer *w);

/* ---- reading a file back ------------------------------------------------------------ */

typedef struct export_digest {
    uint64_t bytes;
    uint64_t records; /* CSV records including the header */
    char sha256[65];
} export_digest;

/* Hash and count an existing regular file, never following a symbolic link.
 * A missing file is FileNotFoundError; a link or non-regular file is ValueError. 0 ok, -1. */
int export_digest_file(const char *path, export_digest *d, export_err *e);

#endif
