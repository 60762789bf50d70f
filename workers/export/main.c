/*
 * export-worker - a service worker doing real work: exports Postgres tables
 * and named queries to CSV files with their row count and SHA-256, verifies
 * them as a follow-up task (link / chain) and removes them. Consumes the
 * `export` queue; flags, consuming and results are the runner's.
 */
#include "settings.h"
#include "tasks.h"

int main(int argc, char **argv)
{
    export_settings_init(argc, argv); /* before the runner rewrites argv for the process title */
    tbx_worker *w = tbx_worker_new("export");
    tbx_worker_register(w, "export.table", export_table, NULL, NULL);
    tbx_worker_register(w, "export.query", export_query, NULL, NULL);
    tbx_worker_register(w, "export.checksum", export_checksum, NULL, NULL);
    tbx_worker_register(w, "export.cleanup", export_cleanup, NULL, NULL);
    return tbx_worker_main(w, argc, argv);
}
