/*
 * toolbox/error.h - the one status enum of libtoolbox and its detail record.
 *
 * Every fallible function returns a tbx_status and, when given a non-NULL
 * tbx_error *, fills it with the same code and a one-line human message.
 * The library never prints and never exits; callers decide what to show.
 */
#ifndef TOOLBOX_ERROR_H
#define TOOLBOX_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tbx_status {
    TBX_OK = 0,
    TBX_ENOMEM,        /* out of memory */
    TBX_EINVAL,        /* invalid argument or value */
    TBX_ECONFIG,       /* configuration error (file, key, type, value) */
    TBX_EIO,           /* file or socket I/O error */
    TBX_EBROKER,       /* broker connection or protocol error */
    TBX_EDB,           /* database error */
    TBX_EDECODE,       /* malformed input (message, pickle, JSON, YAML) */
    TBX_ELIMIT,        /* input exceeds a configured or built-in limit */
    TBX_ETIMEOUT,      /* an operation did not finish in time */
    TBX_ENOTFOUND,     /* no such task, key, queue or row */
    TBX_EUNROUTABLE,   /* the broker returned a mandatory publish */
    TBX_ENACK,         /* the broker refused a published message */
    TBX_EUNSUPPORTED,  /* valid input the library does not handle */
    TBX_ESTATE         /* operation not valid in the object's current state */
} tbx_status;

/* Static, never NULL, never to be freed. */
const char *tbx_strerror(tbx_status status);

/* Detail of the last failure of a call. Plain value type owned by the caller. */
typedef struct tbx_error {
    tbx_status code;
    char msg[512];
} tbx_error;

#ifdef __cplusplus
}
#endif
#endif
