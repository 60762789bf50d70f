/*
 * fuzz_config.c - libFuzzer target for the YAML configuration loader.
 *
 * Feeds arbitrary bytes to tbx_config_load_yaml, then checks the invariants: the error message is one line,
 * a failed load changed nothing, every value can be displayed. The same bytes also go through the
 * command-line layer and the URL masker.
 */
#include "toolbox/config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tbx_config *cfg = tbx_config_new();
    if (!cfg)
        return 0;
    tbx_error err;
    memset(&err, 0, sizeof err);
    tbx_status st = tbx_config_load_yaml(cfg, "fuzz.yaml", (const char *)data, size, &err);
    if (st != TBX_OK) {
        if (strchr(err.msg, '\n') || strchr(err.msg, '\r') || err.code != st)
            abort();
        for (size_t i = 0; i < tbx_config_key_count(); i++)
            if (tbx_config_source_of(cfg, tbx_config_key_name(i)) != TBX_SRC_DEFAULT)
                abort();
    }
    for (size_t i = 0; i < tbx_config_key_count(); i++) {
        char *t = tbx_config_value_text(cfg, tbx_config_key_name(i), 1);
        if (!t)
            abort();
        free(t);
    }

    /* the same bytes as a text value of every key, and as a URL to mask */
    char *text = malloc(size + 1);
    if (text) {
        memcpy(text, data, size);
        text[size] = '\0';
        for (size_t i = 0; i < tbx_config_key_count(); i++)
            if (tbx_config_set(cfg, tbx_config_key_name(i), text, &err) != TBX_OK && strchr(err.msg, '\n'))
                abort();
        free(tbx_mask_url(text));
        free(text);
    }
    tbx_config_free(cfg);
    return 0;
}
