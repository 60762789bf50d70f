/* fuzz_pickle.c - libFuzzer target for the pickle decoder (and, on success, the encoder).
 *
 * Whatever tbx_pickle_load accepts must dump, load again to an equal value, dump again to
 * the same bytes, and render with tbx_pyrepr. Seeds: fuzz/corpus/pickle/.
 */
#include "toolbox/pickle.h"
#include "toolbox/pyrepr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* json_equal, but keys may contain NUL (jansson 2.14's json_equal looks keys up with strlen). */
static int same(const json_t *a, const json_t *b)
{
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_t *o = (json_t *)(uintptr_t)a;
        for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
            const json_t *w = json_object_getn(b, json_object_iter_key(it), json_object_iter_key_len(it));
            if (!w || !same(json_object_iter_value(it), w))
                return 0;
        }
        return 1;
    }
    default:
        return json_equal(a, b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = NULL;
    tbx_error err;
    tbx_status st = tbx_pickle_load(data, size, &v, &err);
    if (st != TBX_OK) {
        if (v != NULL || err.code != st || err.msg[0] == '\0')
            abort();
        return 0;
    }

    unsigned char *out = NULL, *out2 = NULL;
    size_t n = 0, n2 = 0;
    json_t *back = NULL;
    if (tbx_pickle_dump(v, &out, &n, &err) != TBX_OK)
        abort(); /* the decoder's limits are within the encoder's */
    if (tbx_pickle_load(out, n, &back, &err) != TBX_OK || !same(v, back))
        abort();
    if (tbx_pickle_dump(back, &out2, &n2, &err) != TBX_OK || n2 != n || memcmp(out, out2, n) != 0)
        abort();

    if (n < (1u << 20)) /* unlimited repr of a huge shared tree is slow, not wrong */
        free(tbx_pyrepr(v, 0));
    free(tbx_pyrepr(v, 64));
    free(tbx_pyrepr_tuple(v, 16));

    free(out);
    free(out2);
    json_decref(back);
    json_decref(v);
    return 0;
}
