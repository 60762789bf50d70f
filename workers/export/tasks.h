/*
 * tasks.h - the export service's task handlers (routing key `export`).
 *
 *   export.table(table, [path]; columns=[...], schema=NAME)
 *       -> {"path", "rows", "sha256", "bytes"}    CSV (RFC 4180 quoting, header row)
 *   export.query(name, [path])                    same, for a fixed named query
 *   export.checksum(result)                       -> {"path", "verified": true, "rows", "sha256", "bytes"}
 *                                                 or ValueError; meant as a link / chain step
 *   export.cleanup(path | result)                 -> {"path", "removed": true|false}
 */
#ifndef EXPORT_TASKS_H
#define EXPORT_TASKS_H

#include "toolbox/worker.h"

void export_table(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void export_query(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void export_checksum(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);
void export_cleanup(tbx_task *t, const json_t *args, const json_t *kwargs, void *ud);

#endif
