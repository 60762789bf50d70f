/*
 * toolbox/config.h - typed, table-driven configuration (YAML file, environment, command line).
 *
 * Every key is declared once in the library's key table (name, type, default, validation, secret flag, doc).
 * A configuration is built in layers; a value set by a layer of higher precedence is never replaced by one of
 * lower precedence, whatever the order of the calls:
 *
 *     command line (tbx_config_set)  >  environment (TOOLBOX_<KEY>)  >  file (YAML)  >  built-in default
 *
 * The environment variable of a key is TOOLBOX_ followed by the key upper-cased with '.' replaced by '_'
 * (worker.concurrency -> TOOLBOX_WORKER_CONCURRENCY).
 *
 * YAML files hold one mapping. Nested mappings flatten to dotted keys ("worker:\n  concurrency: 4" sets
 * worker.concurrency); the dotted form may also be written flat ("worker.concurrency: 4"). A null value
 * ("key:" or "key: ~") resets the key to its default. Unknown keys, wrong types, bad values, duplicate keys,
 * aliases, several documents, a document that is not a mapping, unreadable, malformed or oversized
 * (> TBX_CONFIG_MAX_FILE bytes) files are errors.
 *
 * Errors are TBX_ECONFIG (or TBX_ENOMEM) with a one-line message that names where the bad value came from:
 *     config/dev.yaml:12: worker.concurrency: expected an integer between 1 and 256, got 'abc'
 *     TOOLBOX_WORKER_CONCURRENCY: expected an integer between 1 and 256, got 'abc'
 *     worker.concurrency: expected an integer between 1 and 256, got 'abc'        (command line)
 * Secret values (URLs with passwords) are masked in messages. A failed load leaves the configuration unchanged.
 *
 * Value syntax in the environment and on the command line: integers in decimal; numbers as decimal or
 * exponent notation; booleans true/false/yes/no/on/off/1/0 (any case); enum choices in any case (stored in
 * the canonical lower case); lists as a comma-separated string ("msg, export"; "" is the empty list).
 *
 * Threads: a tbx_config may be read from several threads at once; changing it needs exclusive access.
 */
#ifndef TOOLBOX_CONFIG_H
#define TOOLBOX_CONFIG_H

#include "toolbox/error.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest configuration file accepted, in bytes (1 MiB). */
#define TBX_CONFIG_MAX_FILE (1024u * 1024u)

/* Opaque configuration: one value (and its source) for every key of the table. */
typedef struct tbx_config tbx_config;

/* Where a key's current value came from. Ordered by precedence. */
typedef enum tbx_config_source { TBX_SRC_DEFAULT, TBX_SRC_FILE, TBX_SRC_ENV, TBX_SRC_CLI } tbx_config_source;

/* A new configuration holding every key's default. NULL on ENOMEM. Free with tbx_config_free. */
tbx_config *tbx_config_new(void);

/* Free cfg and every string it owns. NULL is allowed. */
void tbx_config_free(tbx_config *cfg);

/* File layer: read the YAML file at path (borrowed) and apply it. On success tbx_config_file() returns a copy
 * of path. On failure cfg is unchanged. */
tbx_status tbx_config_load_file(tbx_config *cfg, const char *path, tbx_error *err);

/* File layer from memory: text (len bytes, need not be NUL-terminated; borrowed) is parsed as YAML; name is
 * only used in error messages. Does not change tbx_config_file(). On failure cfg is unchanged. */
tbx_status tbx_config_load_yaml(tbx_config *cfg, const char *name, const char *text, size_t len,
                                tbx_error *err);

/* Environment layer: apply every "TOOLBOX_<KEY>=value" entry of envp (a NULL-terminated array such as
 * environ; borrowed). Entries that name no key are ignored; if a variable appears twice, the first wins (as
 * getenv). On failure cfg is unchanged. */
tbx_status tbx_config_load_env(tbx_config *cfg, char *const *envp, tbx_error *err);

/* Command-line layer: set key to the text value (both borrowed). */
tbx_status tbx_config_set(tbx_config *cfg, const char *key, const char *value, tbx_error *err);

/* One call for programs. The file is `file` (--config) if non-NULL; else `envname` (--env NAME) if non-NULL,
 * meaning <confdir>/NAME.yaml; else $TOOLBOX_ENV if set and non-empty, likewise; else no file (defaults).
 * confdir is $TOOLBOX_CONFIG_DIR, or "config" when unset or empty. Environment names must match
 * [A-Za-z0-9_-]+. Then the process environment (environ) is applied, then `overrides`, a NULL-terminated
 * array of "key=value" strings (NULL for none). All arguments are borrowed. On success *out is a new
 * configuration the caller frees with tbx_config_free; on failure *out is NULL. */
tbx_status tbx_config_load(tbx_config **out, const char *file, const char *envname,
                           const char *const *overrides, tbx_error *err);

/* Getters. key must be a known key of the matching type, otherwise they return NULL / 0 / 0.0 / 0 (a
 * programmer error). Returned strings are owned by cfg and stay valid until that key changes or cfg is freed.
 * tbx_config_str serves string, url and enum keys (enums give their canonical lower-case choice). */
const char *tbx_config_str(const tbx_config *cfg, const char *key);
long long tbx_config_int(const tbx_config *cfg, const char *key);
double tbx_config_double(const tbx_config *cfg, const char *key);
int tbx_config_bool(const tbx_config *cfg, const char *key);
size_t tbx_config_list_len(const tbx_config *cfg, const char *key);
const char *tbx_config_list_at(const tbx_config *cfg, const char *key, size_t i); /* NULL if i >= len */

/* Source of key's current value (TBX_SRC_DEFAULT for an unknown key). */
tbx_config_source tbx_config_source_of(const tbx_config *cfg, const char *key);

/* Path of the last file loaded by tbx_config_load_file / tbx_config_load, or NULL. Owned by cfg. */
const char *tbx_config_file(const tbx_config *cfg);

/* Key table iteration (for `toolbox config show`). Names and docs are static strings; NULL if i is out of
 * range. */
size_t tbx_config_key_count(void);
const char *tbx_config_key_name(size_t i);
const char *tbx_config_key_doc(size_t i);

/* Display text of key's value, malloc'd (caller frees with free()): strings as is, numbers in decimal,
 * booleans "true"/"false", lists comma-separated (the environment syntax). With masked non-zero, the password
 * of a secret URL is replaced by "****". NULL for an unknown key or on ENOMEM. */
char *tbx_config_value_text(const tbx_config *cfg, const char *key, int masked);

/* Copy of url with its password masked: "amqp://u:p@h//" -> "amqp://u:****@h//"; a "password=" query
 * parameter (libpq) is masked too. Text without a password is copied unchanged. malloc'd (caller frees with
 * free()); NULL if url is NULL or on ENOMEM. */
char *tbx_mask_url(const char *url);

#ifdef __cplusplus
}
#endif
#endif
