/* error.c - status strings and error detail helpers. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

const char *tbx_strerror(tbx_status status)
{
    switch (status) {
    case TBX_OK: return "success";
    case TBX_ENOMEM: return "out of memory";
    case TBX_EINVAL: return "invalid argument";
    case TBX_ECONFIG: return "configuration error";
    case TBX_EIO: return "I/O error";
    case TBX_EBROKER: return "broker error";
    case TBX_EDB: return "database error";
    case TBX_EDECODE: return "malformed input";
    case TBX_ELIMIT: return "limit exceeded";
    case TBX_ETIMEOUT: return "timed out";
    case TBX_ENOTFOUND: return "not found";
    case TBX_EUNROUTABLE: return "message unroutable";
    case TBX_ENACK: return "message refused by broker";
    case TBX_EUNSUPPORTED: return "unsupported";
    case TBX_ESTATE: return "invalid state";
    }
    return "unknown error";
}

tbx_status tbx_seterr(tbx_error *err, tbx_status code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        if (fmt) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err->msg, sizeof err->msg, fmt, ap);
            va_end(ap);
        } else {
            snprintf(err->msg, sizeof err->msg, "%s", tbx_strerror(code));
        }
    }
    return code;
}
