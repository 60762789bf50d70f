/*
 * settings.h - export-worker's two settings, read from the same configuration
 * the runner loads (same --config/--env/--set, environment and file):
 *
 *   export.data_url  database exported from (libpq URI; empty: database_admin_url
 *                    if set, else result_backend)          env TOOLBOX_EXPORT_DATA_URL
 *   export.dir       directory the CSV files go to          env TOOLBOX_EXPORT_DIR
 *                    (default /tmp/toolbox-exports)
 */
#ifndef EXPORT_SETTINGS_H
#define EXPORT_SETTINGS_H

#include "files.h"

/* Remember the configuration flags of argv (copied) so that pool children can
 * load the configuration the runner loads. Call in main() before tbx_worker_main. */
void export_settings_init(int argc, char **argv);

/* The effective values. Strings are owned by the cached configuration and stay
 * valid for the life of the process. NULL with e filled (RuntimeError) when the
 * configuration cannot be loaded. */
const char *export_data_url(export_err *e);
const char *export_dir(export_err *e);

#endif
