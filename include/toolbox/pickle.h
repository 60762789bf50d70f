/*
 * toolbox/pickle.h - the Python pickle subset of Celery's result backend.
 *
 * Celery's database backend stores every result as a pickle (celery-wire.md §2.3-§2.6).
 * The encoder writes protocol 2 without memo opcodes, which pickle.loads and Django's
 * PickledObjectField read. The decoder reads what Python writes for plain data, protocols
 * 0 to 5, and refuses pickles of Python objects (datetime, Decimal, custom classes).
 *
 * Mapping (Python <-> JSON):
 *   None <-> null, bool <-> true/false, int <-> integer (int64 only), float <-> real
 *   (NaN and +-inf decode to null), str <-> string (UTF-8), list <-> array,
 *   dict with str keys <-> object (insertion order kept).
 *   Decode only: tuple, set, frozenset -> array; bytes, bytearray -> string when the
 *   bytes are valid UTF-8; dict keys that are int, float, bool or None -> their Python
 *   str() text (1 -> "1", 1.5 -> "1.5", True -> "True", None -> "None"; a later key with
 *   the same text replaces the earlier one).
 *
 * See toolbox/pyrepr.h for rendering JSON values as Python repr() text.
 */
#ifndef TBX_PICKLE_H
#define TBX_PICKLE_H

#include <jansson.h>
#include <stddef.h>

#include "toolbox/error.h"
#include "toolbox/pyrepr.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits applied by tbx_pickle_load (TBX_ELIMIT beyond them) and tbx_pickle_dump. */
#define TBX_PICKLE_MAX_DEPTH 200              /* nesting of containers */
#define TBX_PICKLE_MAX_ITEMS (1u << 20)       /* values in the decoded tree, counting each use of a
                                                 shared (memoized) value; also stack and memo size */
#define TBX_PICKLE_MAX_BYTES (64u << 20)      /* string bytes in the decoded tree, same counting */

/* Encode value as a protocol 2 pickle without memo opcodes.
   null -> N, true/false -> NEWTRUE/NEWFALSE, integer -> BININT1/BININT2/BININT or LONG1,
   real -> BINFLOAT, string -> BINUNICODE, array -> list, object -> dict with str keys.
   Items are batched by 1000 exactly as Python's pickler does, so for tree-shaped data the
   bytes equal pickletools.optimize(pickle.dumps(x, 2)).
   value is borrowed. On success *out is a malloc'd buffer of *outlen bytes that the caller
   frees with free(); on failure *out is NULL and *outlen 0.
   Errors: TBX_EINVAL (NULL argument), TBX_ELIMIT (nesting deeper than TBX_PICKLE_MAX_DEPTH,
   string over 4 GiB), TBX_ENOMEM. */
tbx_status tbx_pickle_dump(const json_t *value, unsigned char **out, size_t *outlen, tbx_error *err);

/* Encode Celery's exception dict
     {'exc_type': exc_type, 'exc_message': tuple(args), 'exc_module': exc_module}
   with the keys in that order. exc_type and exc_module are NUL-terminated UTF-8 (borrowed);
   args is a JSON array (borrowed; NULL means the empty tuple) whose elements are encoded
   as by tbx_pickle_dump inside a TUPLE. Output ownership as for tbx_pickle_dump.
   Example: ("ValueError", "builtins", ["bad"]) -> ValueError('bad') for Python's
   celery.backends.base.exception_to_python.
   Errors: TBX_EINVAL (NULL type/module, invalid UTF-8, args not an array), TBX_ELIMIT, TBX_ENOMEM. */
tbx_status tbx_pickle_dump_exception(const char *exc_type, const char *exc_module, const json_t *args,
                                     unsigned char **out, size_t *outlen, tbx_error *err);

/* Decode a pickle (protocols 0-5) into a new JSON value.
   data[0..len) is borrowed and only read; bytes after the STOP opcode are ignored, as
   pickle.loads ignores them. On success *out is a new reference the caller releases with
   json_decref(); on failure *out is NULL.
   Accepted: every opcode of celery-wire.md §2.6 (PROTO, FRAME, memo PUT/BINPUT/LONG_BINPUT/
   MEMOIZE and GET/BINGET/LONG_BINGET, MARK, POP, POP_MARK, DUP, the int, float, str, bytes,
   list, tuple, dict, set and frozenset opcodes, protocol 0 text forms), plus the protocol 0-3
   spellings of set, frozenset, bytes and bytearray (GLOBAL of builtins.set/frozenset/bytes/
   bytearray or _codecs.encode followed by REDUCE). A shared (memoized) container appears
   in the result as the same json_t referenced from each place.
   Errors:
     TBX_EDECODE      truncated or malformed input (unknown opcode, stack underflow, missing
                      MARK, bad length, bad text literal, memo key not found)
     TBX_EUNSUPPORTED valid pickle that has no JSON form: any other GLOBAL/STACK_GLOBAL,
                      REDUCE, NEWOBJ, NEWOBJ_EX, BUILD, INST, OBJ, EXT1-4, PERSID, out-of-band
                      buffers (the message names the opcode and, when known, the class);
                      ints outside int64; bytes that are not UTF-8; str with lone surrogates;
                      dict keys that are not str/int/float/bool/None; recursive structures
                      (a container that contains itself, or one changed after it was put
                      inside another); protocol > 5
     TBX_ELIMIT       deeper than TBX_PICKLE_MAX_DEPTH, more than TBX_PICKLE_MAX_ITEMS values
                      or TBX_PICKLE_MAX_BYTES string bytes (shared values count once per use)
     TBX_EINVAL       NULL out, or NULL data with len > 0
     TBX_ENOMEM */
tbx_status tbx_pickle_load(const unsigned char *data, size_t len, json_t **out, tbx_error *err);

#ifdef __cplusplus
}
#endif
#endif
