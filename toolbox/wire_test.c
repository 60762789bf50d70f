/* wire_test.c - the Celery v2 encoder against Celery 5.2's captured message, and the decoder. */
#include <amqp.h>
#include <amqp_framing.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* celery-wire.md §1.5: the property block py-amqp wrote for
 * app.send_task('export.project', args=[1], kwargs={'a': 2}). */
static const char CELERY_PROPS_HEX[] =
    "fe00106170706c69636174696f6e2f6a736f6e057574662d3800000124046c61"
    "6e6753000000027079047461736b530000000e6578706f72742e70726f6a6563"
    "74026964530000002434663063643266362d336133622d346634652d39633765"
    "2d30643663316232613965313006736861646f77560365746156076578706972"
    "6573560567726f7570560b67726f75705f696e64657856077265747269657349"
    "000000000974696d656c696d69744100000002565607726f6f745f6964530000"
    "002434663063643266362d336133622d346634652d396337652d306436633162"
    "32613965313009706172656e745f69645608617267737265707253000000035b"
    "315d0a6b77617267737265707253000000087b2761273a20327d066f72696769"
    "6e530000000b67656e313234383340766d0d69676e6f72655f726573756c7474"
    "0002002434663063643266362d336133622d346634652d396337652d30643663"
    "31623261396531302438313237623962622d363762392d336561612d38356263"
    "2d346636366262306363343130";

static const char CELERY_BODY[] =
    "[[1], {\"a\": 2}, {\"callbacks\": null, \"errbacks\": null, \"chain\": null, \"chord\": null}]";

static size_t unhex(const char *hex, unsigned char *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

START_TEST(test_matches_celery_capture)
{
    json_t *args = json_pack("[i]", 1), *kwargs = json_pack("{s:i}", "a", 2);
    tbx_send_opts o = TBX_SEND_OPTS_INIT;
    o.task_id = "4f0cd2f6-3a3b-4f4e-9c7e-0d6c1b2a9e10";
    o.origin = "gen12483@vm";
    tbx_wire_msg m;
    tbx_error err = {0};
    ck_assert_int_eq(tbx_wire_encode(&m, "export.project", args, kwargs, &o, 0, &err), TBX_OK);
    ck_assert_str_eq(m.routing_key, "export");
    /* The reply_to is a per-process oid; use the captured one to compare bytes. */
    m.props.reply_to = amqp_cstring_bytes("8127b9bb-67b9-3eaa-85bc-4f66bb0cc410");
    unsigned char want[1024], got[1024];
    size_t wn = unhex(CELERY_PROPS_HEX, want);
    ck_assert_uint_eq(wn, 397);
    amqp_bytes_t enc = {sizeof got, got};
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, &m.props, enc);
    ck_assert_int_eq(n, (int)wn);
    for (size_t i = 0; i < wn; i++)
        ck_assert_msg(got[i] == want[i], "property byte %zu: got %02x want %02x", i, got[i], want[i]);
    ck_assert_uint_eq(m.body.len, strlen(CELERY_BODY));
    ck_assert(memcmp(m.body.data, CELERY_BODY, m.body.len) == 0);
    tbx_wire_free(&m);
    json_decref(args);
    json_decref(kwargs);
}
END_TEST

static const amqp_table_entry_t *find(const tbx_wire_msg *m, const char *key)
{
    for (int i = 0; i < m->nheaders; i++)
        if (m->headers[i].key.len == strlen(key) && !memcmp(m->headers[i].key.bytes, key, strlen(key)))
            return &m->headers[i];
    return NULL;
}

START_TEST(test_options)
{
    tbx_send_opts o = TBX_SEND_OPTS_INIT;
    o.countdown = 30;
    o.expires_in = 3600;
    o.time_limit = 60;
    o.soft_time_limit = 50;
    o.priority = 5;
    o.creator_id = "u1";
    o.related_content_type_id = 7;
    o.related_object_id = "proj1";
    o.is_result = 1;
    tbx_wire_msg m;
    ck_assert_int_eq(tbx_wire_encode(&m, "msg.add", NULL, NULL, &o, 0, NULL), TBX_OK);
    ck_assert(m.props._flags & AMQP_BASIC_EXPIRATION_FLAG);
    long long exp = atoll(m.expiration);
    ck_assert(exp > 3599000 && exp <= 3600000);
    ck_assert_int_eq(m.props.priority, 5);
    const amqp_table_entry_t *tl = find(&m, "timelimit");
    ck_assert_ptr_nonnull(tl);
    ck_assert_int_eq(tl->value.kind, AMQP_FIELD_KIND_ARRAY);
    ck_assert_int_eq(tl->value.value.array.entries[0].value.i32, 60); /* [hard, soft] */
    ck_assert_int_eq(tl->value.value.array.entries[1].value.i32, 50);
    const amqp_table_entry_t *eta = find(&m, "eta");
    ck_assert_int_eq(eta->value.kind, AMQP_FIELD_KIND_UTF8);
    ck_assert_uint_eq(eta->value.value.bytes.len, strlen("2026-11-22T06:26:59.915085+00:00"));
    ck_assert(find(&m, "creator_id") && find(&m, "related_content_type_id") &&
              find(&m, "related_object_id") && find(&m, "is_result"));
    ck_assert_int_eq(find(&m, "related_content_type_id")->value.kind, AMQP_FIELD_KIND_I32);
    ck_assert_str_eq(m.routing_key, "msg");
    ck_assert_int_eq(m.id[14], '4');

    /* Decode what we encoded. */
    tbx_task_msg *d;
    ck_assert_int_eq(tbx_wire_decode(&m.props, m.body.data, m.body.len, 0, &d, NULL, NULL), TBX_OK);
    ck_assert_str_eq(d->task, "msg.add");
    ck_assert_str_eq(d->id, m.id);
    ck_assert_str_eq(d->root_id, m.id);
    ck_assert_ptr_null(d->parent_id);
    ck_assert(d->time_limit == 60 && d->soft_time_limit == 50);
    ck_assert_ptr_nonnull(d->eta);
    ck_assert_ptr_nonnull(d->expires);
    ck_assert_uint_eq(json_array_size(d->args), 0);
    ck_assert_str_eq(json_string_value(json_object_get(d->headers, "creator_id")), "u1");
    tbx_task_msg_free(d);
    tbx_wire_free(&m);
}
END_TEST

static amqp_basic_properties_t props_with(amqp_table_entry_t *e, int n)
{
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.headers.num_entries = n;
    p.headers.entries = e;
    return p;
}

#define S(k, v) {amqp_cstring_bytes(k), {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {sizeof(v) - 1, TBX_UNCONST(v)}}}

START_TEST(test_decode_rejects)
{
    amqp_table_entry_t full[] = {S("task", "msg.add"), S("id", "abc")};
    amqp_table_entry_t noid[] = {S("task", "msg.add")};
    amqp_table_entry_t notask[] = {S("id", "abc")};
    amqp_table_entry_t badeta[] = {S("task", "msg.add"), S("id", "abc"), S("eta", "tomorrow")};
    struct { amqp_table_entry_t *h; int n; const char *body; tbx_status want; } cases[] = {
        {full, 2, "[[1], {\"a\": 2}, {}]", TBX_OK},
        {full, 2, "[[1], {\"a\": 2}]", TBX_EDECODE},
        {full, 2, "{\"x\": 1}", TBX_EDECODE},
        {full, 2, "not json", TBX_EDECODE},
        {full, 2, "[[1], [], {}]", TBX_EDECODE},
        {noid, 1, "[[], {}, {}]", TBX_EDECODE},
        {notask, 1, "[[], {}, {}]", TBX_EUNSUPPORTED},
        {badeta, 3, "[[], {}, {}]", TBX_EDECODE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        amqp_basic_properties_t p = props_with(cases[i].h, cases[i].n);
        tbx_task_msg *d = NULL;
        tbx_error err = {0};
        tbx_status st = tbx_wire_decode(&p, cases[i].body, strlen(cases[i].body), 0, &d, NULL, &err);
        ck_assert_msg(st == cases[i].want, "case %zu: got %d (%s)", i, st, err.msg);
        tbx_task_msg_free(d);
    }
    /* Disallowed content type. */
    amqp_basic_properties_t p = props_with(full, 2);
    p.content_type = amqp_cstring_bytes("application/x-python-serialize");
    tbx_task_msg *d = NULL;
    ck_assert_int_eq(tbx_wire_decode(&p, "x", 1, 0, &d, NULL, NULL), TBX_EUNSUPPORTED);
    /* Nesting limit: 200 levels inside args. */
    char deep[512];
    memcpy(deep, "[", 1);
    memset(deep + 1, '[', 200);
    memset(deep + 201, ']', 200);
    memcpy(deep + 401, ", {}, {}]", 10);
    p = props_with(full, 2);
    ck_assert_int_eq(tbx_wire_decode(&p, deep, strlen(deep), 0, &d, NULL, NULL), TBX_ELIMIT);
    /* Brackets inside strings do not count. */
    const char *quoted = "[[\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"], {}, {}]";
    ck_assert_int_eq(tbx_wire_decode(&p, quoted, strlen(quoted), 0, &d, NULL, NULL), TBX_OK);
    tbx_task_msg_free(d);
    /* Size limit. */
    p = props_with(full, 2);
    ck_assert_int_eq(tbx_wire_decode(&p, "[[], {}, {}]", 12, 4, &d, NULL, NULL), TBX_ELIMIT);
}
END_TEST

START_TEST(test_iso)
{
    char buf[40];
    tbx_iso_utc(1795328819.915085, buf);
    ck_assert_str_eq(buf, "2026-11-22T06:26:59.915085+00:00");
    tbx_iso_utc(1795328819.0, buf);
    ck_assert_str_eq(buf, "2026-11-22T06:26:59+00:00");
    double e;
    ck_assert_int_eq(tbx_iso_parse("2026-11-22T06:26:59.915085+00:00", &e, NULL), TBX_OK);
    ck_assert(e > 1795328819.915 && e < 1795328819.916);
    ck_assert_int_eq(tbx_iso_parse("2026-11-22T07:26:59+01:00", &e, NULL), TBX_OK);
    ck_assert(e == 1795328819.0);
    ck_assert_int_eq(tbx_iso_parse("2020-01-01T00:00:00Z", &e, NULL), TBX_OK);
    ck_assert(e == 1577836800.0);
    ck_assert_int_eq(tbx_iso_parse("2020-01-01T00:00:00.5", &e, NULL), TBX_OK); /* 5 us, as Celery */
    ck_assert(e > 1577836800.0 && e < 1577836800.0001);
    ck_assert_int_eq(tbx_iso_parse("2020-01-01T00:00:00.1234567Z", &e, NULL), TBX_EDECODE);
    ck_assert_int_eq(tbx_iso_parse("tomorrow", &e, NULL), TBX_EDECODE);
}
END_TEST

START_TEST(test_routing_key)
{
    char rk[16];
    tbx_routing_key("export.project", rk, sizeof rk);
    ck_assert_str_eq(rk, "export");
    tbx_routing_key("celery.chord_unlock", rk, sizeof rk);
    ck_assert_str_eq(rk, "celery");
    tbx_routing_key("plain", rk, sizeof rk);
    ck_assert_str_eq(rk, "plain");
    char a[37], b[37];
    tbx_uuid4(a);
    tbx_uuid4(b);
    ck_assert_uint_eq(strlen(a), 36);
    ck_assert_str_ne(a, b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_matches_celery_capture);
    tcase_add_test(tc, test_options);
    tcase_add_test(tc, test_decode_rejects);
    tcase_add_test(tc, test_iso);
    tcase_add_test(tc, test_routing_key);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
