/*
 * fuzz_url - the URL handling of the configuration: masking secrets for
 * display, Celery's db+ prefix to a libpq conninfo, and the parsers that
 * then read them (libpq's and rabbitmq-c's).
 */
#include <amqp.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toolbox/config.h"
#include "toolbox/setup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    char *masked = tbx_mask_url(url);
    free(masked);
    char *ci = tbx_pg_conninfo(url);
    if (ci) {
        char *errmsg = NULL;
        PQconninfoOption *o = PQconninfoParse(ci, &errmsg);
        PQconninfoFree(o);
        PQfreemem(errmsg);
        free(ci);
    }
    struct amqp_connection_info info;
    amqp_parse_url(url, &info); /* modifies url in place */
    free(url);
    return 0;
}
