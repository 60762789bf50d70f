/*
 * conformance_http.c - the smallest HTTP(S) GET the conformance suite needs to read RabbitMQ's management API.
 *
 * HTTP/1.0 with "Connection: close", so the server neither keeps the connection nor chunks the body (chunked
 * bodies are decoded anyway). Basic authentication from the URL's user info. HTTPS through OpenSSL (which
 * librabbitmq already uses) with peer and host-name verification. One deadline bounds the whole exchange.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "conformance_internal.h"

#define HTTP_MAX_RESPONSE (64u * 1024u * 1024u)

typedef struct http_url {
    int tls;
    char *user, *password; /* decoded; NULL when absent */
    char *host;            /* without brackets */
    char port[8];
    char *prefix;          /* path prefix without trailing '/', may be "" */
} http_url;

static void url_free(http_url *u)
{
    free(u->user);
    free(u->password);
    free(u->host);
    free(u->prefix);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char *pct_decode(const char *s, size_t n)
{
    char *o = malloc(n + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            *p++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return o;
}

static tbx_status parse_url(const char *url, http_url *u, tbx_error *err)
{
    memset(u, 0, sizeof *u);
    const char *p;
    if (!strncasecmp(url, "http://", 7)) {
        p = url + 7;
    } else if (!strncasecmp(url, "https://", 8)) {
        p = url + 8;
        u->tls = 1;
    } else {
        return tbx_seterr(err, TBX_ECONFIG, "management URL must start with http:// or https://");
    }
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    const char *h = p;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            u->user = pct_decode(p, (size_t)(colon - p));
            u->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
        } else {
            u->user = pct_decode(p, (size_t)(at - p));
        }
        h = at + 1;
    }
    const char *port = NULL, *hend = end;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return tbx_seterr(err, TBX_ECONFIG, "management URL has an unterminated [IPv6] host");
        u->host = strndup(h + 1, (size_t)(rb - h - 1));
        if (rb + 1 < end && rb[1] == ':')
            port = rb + 2;
    } else {
        const char *colon = memchr(h, ':', (size_t)(end - h));
        if (colon) {
            hend = colon;
            port = colon + 1;
        }
        u->host = strndup(h, (size_t)(hend - h));
    }
    if (port && (size_t)(end - port) >= 1 && (size_t)(end - port) < sizeof u->port)
        snprintf(u->port, sizeof u->port, "%.*s", (int)(end - port), port);
    else
        snprintf(u->port, sizeof u->port, "%s", u->tls ? "443" : "80");
    size_t plen = strcspn(end, "?#");
    while (plen && end[plen - 1] == '/')
        plen--;
    u->prefix = strndup(end, plen);
    if (!u->host || !u->prefix || (at && !u->user)) {
        url_free(u);
        return tbx_seterr(err, TBX_ENOMEM, NULL);
    }
    if (!*u->host) {
        url_free(u);
        return tbx_seterr(err, TBX_ECONFIG, "management URL has no host");
    }
    return TBX_OK;
}

int tbx_http_path_segment(tbx_buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
            *p == '.' || *p == '_' || *p == '~') {
            if (tbx_buf_putc(b, *p))
                return -1;
        } else if (tbx_buf_printf(b, "%%%02X", *p)) {
            return -1;
        }
    }
    return 0;
}

static void base64(tbx_buf *b, const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        tbx_buf_putc(b, (unsigned char)tab[(v >> 18) & 63]);
        tbx_buf_putc(b, (unsigned char)tab[(v >> 12) & 63]);
        tbx_buf_putc(b, i + 1 < n ? (unsigned char)tab[(v >> 6) & 63] : '=');
        tbx_buf_putc(b, i + 2 < n ? (unsigned char)tab[v & 63] : '=');
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Connect to host:port within the deadline; the socket is left blocking with send/receive timeouts. */
static tbx_status dial(const http_url *u, double deadline, int *out, tbx_error *err)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(u->host, u->port, &hints, &ai);
    if (rc != 0)
        return tbx_seterr(err, TBX_EIO, "cannot resolve %s: %s", u->host, gai_strerror(rc));
    int fd = -1, last = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                last = errno;
                close(fd);
                fd = -1;
                continue;
            }
            struct pollfd pfd = {fd, POLLOUT, 0};
            double left = deadline - now_s();
            int pr = left > 0 ? poll(&pfd, 1, (int)(left * 1000) + 1) : 0;
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
                last = pr == 0 ? ETIMEDOUT : (soerr ? soerr : errno);
                close(fd);
                fd = -1;
                continue;
            }
        }
        fcntl(fd, F_SETFL, fl);
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return tbx_seterr(err, TBX_EIO, "cannot connect to %s:%s: %s", u->host, u->port, strerror(last));
    double left = deadline - now_s();
    if (left < 0.001)
        left = 0.001;
    struct timeval tv = {(time_t)left, (suseconds_t)((left - (double)(time_t)left) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    *out = fd;
    return TBX_OK;
}

typedef struct conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
} conn;

/* OpenSSL writes with write(2): a peer that has gone away would raise SIGPIPE, and a library must not
 * change the process's signal handling. Block it in this thread around TLS writes, and swallow one that the
 * write raised. */
typedef struct pipe_guard {
    sigset_t old;
    int was_pending;
} pipe_guard;

static void pipe_block(pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void pipe_restore(pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static void conn_close(conn *c)
{
    if (c->ssl) {
        pipe_guard g;
        pipe_block(&g);
        SSL_shutdown(c->ssl);
        pipe_restore(&g);
        SSL_free(c->ssl);
    }
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
}

static const char *ssl_reason(void)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "TLS error";
}

static tbx_status tls_start(conn *c, const http_url *u, tbx_error *err)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx)
        return tbx_seterr(err, TBX_ENOMEM, "cannot create a TLS context");
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    const char *ca = getenv("TOOLBOX_BROKER_CA_FILE");
    if (ca && *ca) {
        if (SSL_CTX_load_verify_locations(c->ctx, ca, NULL) != 1)
            return tbx_seterr(err, TBX_ECONFIG, "cannot load CA file %s: %s", ca, ssl_reason());
    } else {
        SSL_CTX_set_default_verify_paths(c->ctx);
    }
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl)
        return tbx_seterr(err, TBX_ENOMEM, "cannot create a TLS session");
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, u->host) != 1) {
        SSL_set_tlsext_host_name(c->ssl, u->host);
        X509_VERIFY_PARAM_set1_host(param, u->host, 0);
    }
    SSL_set_fd(c->ssl, c->fd);
    pipe_guard g;
    pipe_block(&g);
    int ok = SSL_connect(c->ssl) == 1;
    pipe_restore(&g);
    if (!ok) {
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK)
            return tbx_seterr(err, TBX_EIO, "TLS handshake with %s:%s failed: certificate: %s", u->host, u->port,
                              X509_verify_cert_error_string(vr));
        return tbx_seterr(err, TBX_EIO, "TLS handshake with %s:%s failed: %s", u->host, u->port, ssl_reason());
    }
    return TBX_OK;
}

static int conn_write(conn *c, const void *p, size_t n)
{
    const char *s = p;
    pipe_guard g;
    if (c->ssl)
        pipe_block(&g);
    int rc = 0;
    while (n) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, s, (int)n) : send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (!c->ssl && w < 0 && errno == EINTR)
                continue;
            rc = -1;
            break;
        }
        s += w;
        n -= (size_t)w;
    }
    if (c->ssl)
        pipe_restore(&g);
    return rc;
}

/* Bytes read, 0 at the end, -1 on error or timeout. */
static ssize_t conn_read(conn *c, void *p, size_t n)
{
    for (;;) {
        if (c->ssl) {
            int r = SSL_read(c->ssl, p, (int)n);
            if (r > 0)
                return r;
            int e = SSL_get_error(c->ssl, r);
            return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
        }
        ssize_t r = recv(c->fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

/* Decode a chunked body in place; returns its length or -1 if malformed. */
static long dechunk(char *b, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *eol = memchr(b + in, '\n', n - in);
        if (!eol)
            return -1;
        unsigned long sz = strtoul(b + in, NULL, 16);
        in = (size_t)(eol - b) + 1;
        if (sz == 0)
            return (long)out;
        if (sz > n - in)
            return -1;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz;
        if (in < n && b[in] == '\r')
            in++;
        if (in < n && b[in] == '\n')
            in++;
    }
}

tbx_status tbx_http_get(const char *base_url, const char *path, double timeout, int *status, char **body,
                        size_t *len, tbx_error *err)
{
    *body = NULL;
    *len = 0;
    *status = 0;
    double deadline = now_s() + (timeout > 0 ? timeout : 10.0);
    http_url u;
    tbx_status st = parse_url(base_url, &u, err);
    if (st)
        return st;
    conn c = {-1, NULL, NULL};
    tbx_buf req = {0}, resp = {0};
    if ((st = dial(&u, deadline, &c.fd, err)))
        goto out;
    if (u.tls && (st = tls_start(&c, &u, err)))
        goto out;
    int v6 = strchr(u.host, ':') != NULL;
    tbx_buf_printf(&req, "GET %s%s HTTP/1.0\r\nHost: %s%s%s:%s\r\nUser-Agent: toolbox-conformance\r\n"
                         "Accept: application/json\r\nConnection: close\r\n",
                   u.prefix, path, v6 ? "[" : "", u.host, v6 ? "]" : "", u.port);
    if (u.user) {
        tbx_buf cred = {0};
        tbx_buf_printf(&cred, "%s:%s", u.user, u.password ? u.password : "");
        tbx_buf_printf(&req, "Authorization: Basic ");
        base64(&req, cred.data ? cred.data : (const unsigned char *)"", cred.len);
        tbx_buf_printf(&req, "\r\n");
        if (cred.data)
            memset(cred.data, 0, cred.len);
        tbx_buf_free(&cred);
    }
    if (tbx_buf_printf(&req, "\r\n")) {
        st = tbx_seterr(err, TBX_ENOMEM, NULL);
        goto out;
    }
    if (conn_write(&c, req.data, req.len)) {
        st = tbx_seterr(err, TBX_EIO, "sending to %s:%s failed", u.host, u.port);
        goto out;
    }
    for (;;) {
        if (tbx_buf_reserve(&resp, 16384)) {
            st = tbx_seterr(err, TBX_ENOMEM, NULL);
            goto out;
        }
        ssize_t r = conn_read(&c, resp.data + resp.len, resp.cap - resp.len - 1);
        if (r == 0)
            break;
        if (r < 0 || now_s() > deadline) {
            st = tbx_seterr(err, TBX_ETIMEOUT, "reading from %s:%s failed or timed out", u.host, u.port);
            goto out;
        }
        resp.len += (size_t)r;
        if (resp.len > HTTP_MAX_RESPONSE) {
            st = tbx_seterr(err, TBX_ELIMIT, "response from %s:%s exceeds %u bytes", u.host, u.port,
                            HTTP_MAX_RESPONSE);
            goto out;
        }
    }
    if (tbx_buf_putc(&resp, '\0')) {
        st = tbx_seterr(err, TBX_ENOMEM, NULL);
        goto out;
    }
    resp.len--;
    char *text = (char *)resp.data;
    char *hdr_end = strstr(text, "\r\n\r\n");
    if (strncmp(text, "HTTP/1.", 7) != 0 || strlen(text) < 12 || !hdr_end) {
        st = tbx_seterr(err, TBX_EDECODE, "%s:%s did not answer in HTTP", u.host, u.port);
        goto out;
    }
    *status = atoi(text + 9);
    int chunked = 0;
    for (char *line = strstr(text, "\r\n") + 2; line < hdr_end; line = strstr(line, "\r\n") + 2)
        if (!strncasecmp(line, "transfer-encoding:", 18) && strstr(line, "chunked") &&
            strstr(line, "chunked") < strstr(line, "\r\n"))
            chunked = 1;
    char *b = hdr_end + 4;
    size_t blen = resp.len - (size_t)(b - text);
    if (chunked) {
        long n = dechunk(b, blen);
        if (n < 0) {
            st = tbx_seterr(err, TBX_EDECODE, "%s:%s sent a malformed chunked body", u.host, u.port);
            goto out;
        }
        blen = (size_t)n;
    }
    *body = malloc(blen + 1);
    if (!*body) {
        st = tbx_seterr(err, TBX_ENOMEM, NULL);
        goto out;
    }
    memcpy(*body, b, blen);
    (*body)[blen] = '\0';
    *len = blen;
out:
    if (req.data)
        memset(req.data, 0, req.len); /* it holds the credentials */
    tbx_buf_free(&req);
    tbx_buf_free(&resp);
    conn_close(&c);
    url_free(&u);
    return st;
}
