/*
 * toolbox/pyrepr.h - render JSON values the way Python's repr() renders them.
 *
 * Celery's events and logs carry Python reprs of task arguments and results
 * ("args": "[1, 'x']", "result": "{'ok': True}"). These functions produce the same
 * text from the JSON equivalent: null -> None, true/false -> True/False, integers in
 * decimal, reals with Python's float repr (1.0, 0.1, 1e+20, 1e-05), strings quoted and
 * escaped as Python 3.11 does (non-ASCII printable characters kept, \xNN/\uNNNN/\UNNNNNNNN
 * for the rest), arrays as lists [1, 2], objects as dicts {'a': 2}.
 */
#ifndef TBX_PYREPR_H
#define TBX_PYREPR_H

#include <jansson.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Containers nested deeper than this are rendered as "[...]" / "{...}". */
#define TBX_PYREPR_MAX_DEPTH 200

/* repr() of value. value is borrowed; NULL renders as "None".
   If max_len > 0 and the text is longer than max_len characters (code points), it is cut
   after max_len characters and "..." is appended (an approximation of Celery's
   saferepr(value, maxlen)); max_len == 0 means no limit.
   Returns a malloc'd NUL-terminated UTF-8 string the caller frees with free(), or NULL
   on out-of-memory. */
char *tbx_pyrepr(const json_t *value, size_t max_len);

/* Like tbx_pyrepr, but renders an array as a Python tuple: () / (1,) / (1, 2).
   array is borrowed; NULL renders as "()", a non-array value v as the 1-tuple (v,). */
char *tbx_pyrepr_tuple(const json_t *array, size_t max_len);

#ifdef __cplusplus
}
#endif
#endif
