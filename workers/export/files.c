/*
 * files.c - the export directory, confined paths, atomic writes, SHA-256 and
 * CSV record counting for export-worker. See files.h.
 */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

void export_seterr(export_err *e, const char *type, const char *fmt, ...)
{
    if (!e)
        return;
    e->type = type;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

/* Python's OSError subclass for an errno value. */
static const char *errno_type(int err)
{
    switch (err) {
    case ENOENT:
        return "FileNotFoundError";
    case EACCES:
    case EPERM:
        return "PermissionError";
    case EEXIST:
        return "FileExistsError";
    case EISDIR:
        return "IsADirectoryError";
    case ENOTDIR:
        return "NotADirectoryError";
    default:
        return "OSError";
    }
}

/* Fill e the way Python prints an OSError: "[Errno 28] No space left on device: 'path'". */
static int oserr(export_err *e, int err, const char *what, const char *path)
{
    export_seterr(e, errno_type(err), "[Errno %d] %s: %s'%s'", err, strerror(err), what ? what : "",
                  path);
    return -1;
}

/* ---- SHA-256 ----------------------------------------------------------------------- */

struct export_sha256 {
    EVP_MD_CTX *ctx;
};

export_sha256 *export_sha256_new(void)
{
    export_sha256 *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    if (!(h->ctx = EVP_MD_CTX_new()) || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        export_sha256_free(h);
        return NULL;
    }
    return h;
}

int export_sha256_update(export_sha256 *h, const void *p, size_t n)
{
    return n == 0 || EVP_DigestUpdate(h->ctx, p, n) == 1 ? 0 : -1;
}

int export_sha256_final(export_sha256 *h, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(h->ctx, md, &len) != 1 || len != 32)
        return -1;
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    return 0;
}

void export_sha256_free(export_sha256 *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

/* ---- CSV records ------------------------------------------------------------------------ */

void export_csv_feed(export_csv_count *c, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        if (ch == '"') {
            c->in_quotes = !c->in_quotes; /* "" inside quotes toggles twice */
            c->partial = 1;
            c->last_cr = 0;
        } else if (!c->in_quotes && (ch == '\n' || ch == '\r')) {
            if (ch == '\n' && c->last_cr) { /* the LF of a CRLF */
                c->last_cr = 0;
                continue;
            }
            c->records++;
            c->partial = 0;
            c->last_cr = ch == '\r';
        } else {
            c->partial = 1;
            c->last_cr = 0;
        }
    }
}

uint64_t export_csv_records(const export_csv_count *c)
{
    return c->records + (c->partial ? 1 : 0);
}

/* ---- the export directory ---------------------------------------------------------------- */

int export_dir_prepare(const char *dir, char real[PATH_MAX], export_err *e)
{
    if (!dir || !*dir) {
        export_seterr(e, "ValueError", "the export directory (export.dir) is not set");
        return -1;
    }
    size_t n = strlen(dir);
    if (n >= PATH_MAX) {
        export_seterr(e, "ValueError", "the export directory name is too long");
        return -1;
    }
    char tmp[PATH_MAX];
    memcpy(tmp, dir, n + 1);
    /* mkdir -p: each prefix ending before a '/', then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char saved = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST) {
            int err = errno;
            tmp[i] = saved;
            return oserr(e, err, "cannot create the export directory ", dir);
        }
        tmp[i] = saved;
    }
    if (!realpath(dir, real))
        return oserr(e, errno, "export directory ", dir);
    struct stat st;
    if (stat(real, &st) != 0)
        return oserr(e, errno, "export directory ", dir);
    if (!S_ISDIR(st.st_mode))
        return oserr(e, ENOTDIR, "export directory ", dir);
    return 0;
}

static int inside(const char *realdir, const char *p)
{
    size_t n = strlen(realdir);
    if (n == 1 && realdir[0] == '/')
        return 1;
    return strncmp(p, realdir, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

int export_resolve(const char *realdir, const char *path, size_t len, char out[PATH_MAX], export_err *e)
{
    if (!path || len != strlen(path)) {
        export_seterr(e, "ValueError", "path contains a NUL byte");
        return -1;
    }
    if (len == 0) {
        export_seterr(e, "ValueError", "path is empty");
        return -1;
    }
    char cand[PATH_MAX];
    int w = path[0] == '/' ? snprintf(cand, sizeof cand, "%s", path)
                           : snprintf(cand, sizeof cand, "%s/%s", realdir, path);
    if (w < 0 || (size_t)w >= sizeof cand) {
        export_seterr(e, "ValueError", "path is too long");
        return -1;
    }
    char *slash = strrchr(cand, '/'); /* never NULL: cand is absolute */
    const char *base = slash + 1;
    if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) {
        export_seterr(e, "ValueError", "path '%s' does not name a file", path);
        return -1;
    }
    char parent[PATH_MAX], rparent[PATH_MAX];
    size_t plen = slash == cand ? 1 : (size_t)(slash - cand);
    memcpy(parent, cand, plen);
    parent[plen] = '\0';
    if (!realpath(parent, rparent)) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR)
            export_seterr(e, "ValueError", "path '%s': directory '%s' does not exist", path, parent);
        else
            export_seterr(e, "ValueError", "path '%s': [Errno %d] %s", path, err, strerror(err));
        return -1;
    }
    if (!inside(realdir, rparent)) {
        export_seterr(e, "ValueError", "path '%s' is outside the export directory '%s'", path, realdir);
        return -1;
    }
    w = snprintf(out, PATH_MAX, "%s%s%s", rparent, strcmp(rparent, "/") ? "/" : "", base);
    if (w < 0 || w >= PATH_MAX) {
        export_seterr(e, "ValueError", "path is too long");
        return -1;
    }
    return 0;
}

void export_default_name(const char *label, const char *id, char *out, size_t n)
{
    /* Keep room for "_<id>.csv": at most 60 bytes of label. */
    char lab[61];
    size_t i = 0;
    for (; label && label[i] && i < sizeof lab - 1; i++) {
        char c = label[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                 c == '-' || (c == '.' && i > 0);
        lab[i] = ok ? c : '_';
    }
    lab[i] = '\0';
    snprintf(out, n, "%s_%s.csv", i ? lab : "export", id && *id ? id : "noid");
}

/* ---- atomic writer ------------------------------------------------------------------------- */

int export_writer_open(export_writer *w, const char *path, export_err *e)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    const char *slash = strrchr(path, '/');
    if (!slash || strlen(path) >= sizeof w->path) {
        export_seterr(e, "ValueError", "bad output path '%s'", path);
        return -1;
    }
    memcpy(w->path, path, strlen(path) + 1);
    int n = snprintf(w->tmp, sizeof w->tmp, "%.*s/.%s.tmp.XXXXXX", (int)(slash - path), path, slash + 1);
    if (n < 0 || (size_t)n >= sizeof w->tmp) {
        export_seterr(e, "ValueError", "path '%s' is too long", path);
        w->tmp[0] = '\0';
        return -1;
    }
    if (!(w->sha = export_sha256_new())) {
        export_seterr(e, "MemoryError", "cannot start a SHA-256 digest");
        w->tmp[0] = '\0';
        return -1;
    }
    w->fd = mkstemp(w->tmp);
    if (w->fd < 0) {
        int err = errno;
        w->tmp[0] = '\0';
        export_writer_abort(w);
        return oserr(e, err, "cannot create a file beside ", path);
    }
    (void)fcntl(w->fd, F_SETFD, FD_CLOEXEC);
    if (fchmod(w->fd, 0640) != 0) {
        int err = errno;
        export_writer_abort(w);
        return oserr(e, err, "", path);
    }
    return 0;
}

int export_writer_write(export_writer *w, const void *p, size_t n, export_err *e)
{
    if (export_sha256_update(w->sha, p, n)) {
        export_seterr(e, "RuntimeError", "SHA-256 update failed");
        return -1;
    }
    export_csv_feed(&w->csv, p, n);
    const char *s = p;
    size_t left = n;
    while (left) {
        ssize_t k = write(w->fd, s, left);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return oserr(e, errno, "", w->path);
        }
        s += k;
        left -= (size_t)k;
    }
    w->bytes += n;
    return 0;
}

int export_writer_commit(export_writer *w, char hex[65], export_err *e)
{
    int err;
    if (export_sha256_final(w->sha, hex)) {
        export_writer_abort(w);
        export_seterr(e, "RuntimeError", "SHA-256 finalisation failed");
        return -1;
    }
    int rc = fsync(w->fd);
    err = errno;
    if (close(w->fd) != 0 && rc == 0) { /* a failed close has closed the fd anyway */
        rc = -1;
        err = errno;
    }
    w->fd = -1;
    if (rc != 0) {
        export_writer_abort(w);
        return oserr(e, err, "", w->path);
    }
    if (rename(w->tmp, w->path) != 0) {
        err = errno;
        export_writer_abort(w);
        return oserr(e, err, "", w->path);
    }
    w->tmp[0] = '\0'; /* now the target: never unlink it */
    char dir[PATH_MAX];
    const char *slash = strrchr(w->path, '/');
    size_t dl = slash == w->path ? 1 : (size_t)(slash - w->path);
    memcpy(dir, w->path, dl);
    dir[dl] = '\0';
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd); /* best effort: the rename is already visible */
        close(dfd);
    }
    export_sha256_free(w->sha);
    w->sha = NULL;
    return 0;
}

void export_writer_abort(export_writer *w)
{
    if (w->fd >= 0)
        (void)close(w->fd);
    w->fd = -1;
    if (w->tmp[0])
        (void)unlink(w->tmp);
    w->tmp[0] = '\0';
    export_sha256_free(w->sha);
    w->sha = NULL;
}

/* ---- reading back -------------------------------------------------------------------------- */

int export_digest_file(const char *path, export_digest *d, export_err *e)
{
    memset(d, 0, sizeof *d);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        if (err == ELOOP) {
            export_seterr(e, "ValueError", "'%s' is a symbolic link, not an exported file", path);
            return -1;
        }
        return oserr(e, err, "", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        export_seterr(e, "ValueError", "'%s' is not a regular file", path);
        return -1;
    }
    export_sha256 *h = export_sha256_new();
    if (!h) {
        close(fd);
        export_seterr(e, "MemoryError", "cannot start a SHA-256 digest");
        return -1;
    }
    export_csv_count csv = {0};
    enum { BUFSZ = 65536 };
    unsigned char *buf = malloc(BUFSZ);
    if (!buf) {
        close(fd);
        export_sha256_free(h);
        export_seterr(e, "MemoryError", "no memory for a read buffer");
        return -1;
    }
    int rc = 0;
    for (;;) {
        ssize_t k = read(fd, buf, BUFSZ);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            rc = oserr(e, errno, "", path);
            break;
        }
        if (k == 0)
            break;
        if (export_sha256_update(h, buf, (size_t)k)) {
            export_seterr(e, "RuntimeError", "SHA-256 update failed");
            rc = -1;
            break;
        }
        export_csv_feed(&csv, buf, (size_t)k);
        d->bytes += (uint64_t)k;
    }
    close(fd);
    free(buf);
    if (!rc && export_sha256_final(h, d->sha256)) {
        export_seterr(e, "RuntimeError", "SHA-256 finalisation failed");
        rc = -1;
    }
    export_sha256_free(h);
    d->records = export_csv_records(&csv);
    return rc;
}
