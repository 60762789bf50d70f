/* monitor_parse_test.c - the platform monitor's reading of deliveries, its family rule and row ids. */
#include <amqp.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_db.h"
#include "wire.h"

/* A delivery of an encoded message. */
typedef struct fixture {
    tbx_wire_msg w;
    tbx_mon_delivery d;
} fixture;

static void encoded(fixture *f, const char *task, const char *args, const char *kwargs, const tbx_send_opts *o)
{
    json_t *a = json_loads(args, 0, NULL), *k = json_loads(kwargs, 0, NULL);
    ck_assert_int_eq(tbx_wire_encode(&f->w, task, a, k, o, 0, NULL), TBX_OK);
    json_decref(a);
    json_decref(k);
    memset(&f->d, 0, sizeof f->d);
    f->d.props = &f->w.props;
    f->d.body = f->w.body.data;
    f->d.len = f->w.body.len;
    f->d.exchange = amqp_cstring_bytes("task_exchange");
    f->d.routing_key = amqp_cstring_bytes(f->w.routing_key);
    f->d.tag = 7;
}

static json_t *parse_json(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(j);
    return j;
}

START_TEST(test_v2_message)
{
    tbx_send_opts o = TBX_SEND_OPTS_INIT;
    o.task_id = "4f0cd2f6-3a3b-4f4e-9c7e-0d6c1b2a9e10";
    o.creator_id = "u1";
    o.related_content_type_id = 7;
    o.related_object_id = "proj1";
    o.is_result = 1;
    o.time_limit = 60;
    o.soft_time_limit = 50;
    o.countdown = 30;
    o.parent_id = "parent-1";
    o.root_id = "root-1";
    fixture f;
    encoded(&f, "export.project", "[1]", "{\"a\": 2}", &o);
    tbx_mon_entry e;
    ck_assert_int_eq(tbx_mon_parse(&f.d, 0, &e, NULL), TBX_OK);
    ck_assert(e.has_task);
    ck_assert(!e.has_parked);
    ck_assert_int_eq(e.tag, 7);
    ck_assert_str_eq(e.task.task_id, o.task_id);
    ck_assert_str_eq(e.task.type, "export.project");
    ck_assert_str_eq(e.task.input, "{\"args\":[1],\"kwargs\":{\"a\":2}}");
    ck_assert_str_eq(e.task.parent_id, "parent-1");
    ck_assert_str_eq(e.task.root_id, "root-1");
    ck_assert_str_eq(e.task.creator_id, "u1");
    ck_assert_str_eq(e.task.related_object_id, "proj1");
    ck_assert(e.task.has_related_ct);
    ck_assert_int_eq(e.task.related_ct, 7);
    ck_assert_int_eq(strlen(e.task.id), TBX_MONITOR_ID_LEN);
    json_t *opt = parse_json(e.task.options);
    ck_assert_str_eq(json_string_value(json_object_get(opt, "content_type")), "application/json");
    ck_assert_int_eq(json_integer_value(json_object_get(opt, "delivery_mode")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(opt, "retries")), 0);
    ck_assert(json_is_true(json_object_get(opt, "is_result")));
    ck_assert(json_is_string(json_object_get(opt, "eta")));
    ck_assert_ptr_null(json_object_get(opt, "expires")); /* not set: not copied */
    json_t *tl = json_object_get(opt, "timelimit");
    ck_assert_int_eq(json_integer_value(json_array_get(tl, 0)), 60);
    ck_assert_int_eq(json_integer_value(json_array_get(tl, 1)), 50);
    json_t *h = json_object_get(opt, "application_headers");
    ck_assert_str_eq(json_string_value(json_object_get(h, "task")), "export.project");
    ck_assert_str_eq(json_string_value(json_object_get(h, "argsrepr")), "[1]");
    json_decref(opt);
    ck_assert_uint_eq(e.body_len, f.w.body.len);
    ck_assert(!memcmp(e.body, f.w.body.data, e.body_len));
    tbx_mon_entry_clear(&e);
    tbx_wire_free(&f.w);
}
END_TEST

START_TEST(test_defaults_not_copied)
{
    fixture f;
    encoded(&f, "msg.add", "[2, 3]", "{}", NULL);
    tbx_mon_entry e;
    ck_assert_int_eq(tbx_mon_parse(&f.d, 0, &e, NULL), TBX_OK);
    json_t *opt = parse_json(e.task.options);
    /* The platform copies retries 0 but not timelimit [null, null] nor null eta/expires. */
    ck_assert_ptr_nonnull(json_object_get(opt, "retries"));
    ck_assert_ptr_null(json_object_get(opt, "timelimit"));
    ck_assert_ptr_null(json_object_get(opt, "eta"));
    ck_assert_ptr_null(json_object_get(opt, "is_result"));
    ck_assert_ptr_null(e.task.parent_id);
    ck_assert_str_eq(e.task.root_id, e.task.task_id);
    ck_assert_ptr_null(e.task.creator_id);
    ck_assert(!e.task.has_related_ct);
    json_decref(opt);
    tbx_mon_entry_clear(&e);
    tbx_wire_free(&f.w);
}
END_TEST

START_TEST(test_no_headers_parked)
{
    static const unsigned char body[] = {0xff, 0xfe, 'x', 0, 'y'};
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes("application/octet-stream");
    unsigned char rk[] = {'a', 0xc3, 0x28, 0};
    tbx_mon_delivery d = {&p, body, sizeof body, amqp_cstring_bytes("task_exchange"), {3, rk}, 1, 9};
    tbx_mon_entry e;
    ck_assert_int_eq(tbx_mon_parse(&d, 0, &e, NULL), TBX_OK);
    ck_assert(!e.has_task);
    ck_assert(e.has_parked);
    ck_assert_ptr_nonnull(strstr(e.parked.reason, "no headers"));
    ck_assert_ptr_null(e.parked.task_id);
    ck_assert_ptr_null(e.parked.headers);
    ck_assert_str_eq(e.parked.routing_key, "a?("); /* the invalid byte is replaced */
    ck_assert_str_eq(e.parked.exchange, "task_exchange");
    ck_assert(e.parked.redelivered);
    ck_assert_int_eq(strlen(e.parked.digest), 16);
    ck_assert_uint_eq(e.body_len, sizeof body);
    ck_assert(!memcmp(e.body, body, sizeof body));
    json_t *props = parse_json(e.parked.properties);
    ck_assert_str_eq(json_string_value(json_object_get(props, "content_type")), "application/octet-stream");
    json_decref(props);
    tbx_mon_entry_clear(&e);
}
END_TEST

/* Headers from JSON (field types as py-amqp writes them). */
typedef struct raw {
    amqp_pool_t pool;
    amqp_basic_properties_t p;
    amqp_field_value_t table;
} raw;

static void raw_headers(raw *r, const char *headers, const char *content_type)
{
    memset(r, 0, sizeof *r);
    init_amqp_pool(&r->pool, 4096);
    json_t *h = parse_json(headers);
    ck_assert_int_eq(tbx_wire_json_to_field(&r->pool, h, &r->table, 0), TBX_OK);
    json_decref(h);
    r->p._flags = AMQP_BASIC_HEADERS_FLAG | (content_type ? AMQP_BASIC_CONTENT_TYPE_FLAG : 0);
    r->p.headers = r->table.value.table;
    if (content_type)
        r->p.content_type = amqp_cstring_bytes(content_type);
}

static void parse_raw(raw *r, const char *body, size_t len, tbx_mon_entry *e)
{
    tbx_mon_delivery d = {&r->p, body, len, amqp_cstring_bytes("task_exchange"), amqp_cstring_bytes("t"), 0, 1};
    ck_assert_int_eq(tbx_mon_parse(&d, 1 << 20, e, NULL), TBX_OK);
}

/* A message a worker moved aside: parked with the worker's reason, the first exchange and routing key,
 * and its headers without the aside ones; unreadable to the monitor too: only counted as a copy. */
START_TEST(test_moved_aside_by_a_worker)
{
    raw r;
    raw_headers(&r,
                "{\"task\": \"msg.nope\", \"id\": \"id-9\", \"lang\": \"py\","
                " \"x-toolbox-aside-reason\": \"NotRegistered: no handler\", \"x-toolbox-aside-worker\": \"w1@h\","
                " \"x-toolbox-aside-exchange\": \"task_exchange\", \"x-toolbox-aside-routing-key\": \"msg\"}",
                "application/json");
    tbx_mon_entry e;
    tbx_mon_delivery d = {&r.p, "[[1], {}, {}]", 13, amqp_cstring_bytes("task_exchange"),
                          amqp_cstring_bytes("toolbox.aside"), 0, 3};
    ck_assert_int_eq(tbx_mon_parse(&d, 1 << 20, &e, NULL), TBX_OK);
    ck_assert(e.has_task);
    ck_assert(e.has_parked);
    ck_assert_str_eq(e.task.task_id, "id-9");
    ck_assert_str_eq(e.task.input, "{\"args\":[1],\"kwargs\":{}}");
    ck_assert_str_eq(e.parked.reason, "set aside by worker w1@h: NotRegistered: no handler");
    ck_assert_str_eq(e.parked.task_id, "id-9");
    ck_assert_str_eq(e.parked.routing_key, "msg");
    ck_assert_str_eq(e.parked.exchange, "task_exchange");
    json_t *h = parse_json(e.parked.headers);
    ck_assert_int_eq(json_object_size(h), 3);
    ck_assert_ptr_null(json_object_get(h, "x-toolbox-aside-reason"));
    json_t *opt = parse_json(e.task.options);
    ck_assert_ptr_null(json_object_get(json_object_get(opt, "application_headers"), "x-toolbox-aside-worker"));
    json_decref(opt);
    json_decref(h);
    tbx_mon_entry_clear(&e);

    /* The same unreadable to the monitor: parked with both reasons, but only where the platform
     * queue's own copy (same digest) is not. */
    d.body = "[[1], {";
    d.len = 7;
    ck_assert_int_eq(tbx_mon_parse(&d, 1 << 20, &e, NULL), TBX_OK);
    ck_assert(e.has_task);
    ck_assert(e.has_parked);
    ck_assert(e.parked.dedupe);
    ck_assert(!e.parked.redelivered);
    ck_assert_ptr_nonnull(strstr(e.parked.reason, "body is not JSON"));
    ck_assert_ptr_nonnull(strstr(e.parked.reason, "(also set aside by worker w1@h: NotRegistered: no handler)"));
    ck_assert_str_eq(e.parked.routing_key, "msg");
    tbx_mon_entry tmp;
    tbx_mon_delivery plain = d;
    plain.props = &r.p;
    r.p.headers.num_entries = 3; /* the original: the aside headers were added last */
    plain.routing_key = amqp_cstring_bytes("msg");
    ck_assert_int_eq(tbx_mon_parse(&plain, 1 << 20, &tmp, NULL), TBX_OK);
    ck_assert_str_eq(tmp.parked.digest, e.parked.digest);
    ck_assert(!tmp.parked.dedupe);
    tbx_mon_entry_clear(&tmp);
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);
}
END_TEST

START_TEST(test_bad_body_recorded_and_parked)
{
    raw r;
    raw_headers(&r, "{\"task\": \"t.x\", \"id\": \"id-1\", \"root_id\": \"r\", \"parent_id\": null}", "application/json");
    tbx_mon_entry e;
    parse_raw(&r, "[[1], {", 7, &e);
    ck_assert(e.has_task);
    ck_assert(e.has_parked);
    ck_assert_ptr_null(e.task.input);
    ck_assert_str_eq(e.task.task_id, "id-1");
    ck_assert_str_eq(e.task.root_id, "r");
    ck_assert_str_eq(e.parked.task_id, "id-1");
    ck_assert_ptr_nonnull(strstr(e.parked.reason, "body is not JSON"));
    ck_assert_ptr_nonnull(strstr(e.parked.reason, "the task is recorded without its input"));
    json_t *h = parse_json(e.parked.headers);
    ck_assert_str_eq(json_string_value(json_object_get(h, "task")), "t.x");
    json_decref(h);
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);

    /* A header fault with a readable body: the input is recorded, the message parked. */
    raw_headers(&r, "{\"task\": \"t.x\", \"id\": \"id-2\", \"eta\": \"tomorrow\"}", "application/json");
    parse_raw(&r, "[[1], {}, {}]", 13, &e);
    ck_assert_str_eq(e.task.input, "{\"args\":[1],\"kwargs\":{}}");
    ck_assert_ptr_nonnull(strstr(e.parked.reason, "bad eta"));
    ck_assert_str_eq(e.task.root_id, "id-2"); /* absent root: own id */
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);
}
END_TEST

START_TEST(test_pickle_v1_and_json_params_complete)
{
    raw r;
    /* pickle.dumps(((1, 'x'), {'k': 2}, {}), protocol=2) */
    static const unsigned char pk[] = {0x80, 0x02, 0x4b, 0x01, 0x58, 0x01, 0x00, 0x00, 0x00, 'x', 0x86, 0x7d,
                                       0x58, 0x01, 0x00, 0x00, 0x00, 'k', 0x4b, 0x02, 0x73, 0x7d, 0x87, 0x2e};
    raw_headers(&r, "{\"task\": \"t.p\", \"id\": \"id-p\"}", "application/x-python-serialize");
    tbx_mon_entry e;
    parse_raw(&r, (const char *)pk, sizeof pk, &e);
    ck_assert(e.has_task);
    ck_assert(!e.has_parked);
    ck_assert_str_eq(e.task.input, "{\"args\":[1,\"x\"],\"kwargs\":{\"k\":2}}");
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);

    raw_headers(&r, "{\"task\": \"t.j\", \"id\": \"id-j\"}", "application/json; charset=utf-8");
    parse_raw(&r, "[[], {\"a\": 1}, {}]", 18, &e);
    ck_assert(e.has_task);
    ck_assert(!e.has_parked);
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);

    /* Protocol v1: no headers at all, everything in the body. */
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    static const char v1[] = "{\"task\": \"t.v1\", \"id\": \"id-v1\", \"args\": [3], \"kwargs\": {}, \"retries\": 2, "
                             "\"eta\": null, \"timelimit\": [null, null]}";
    tbx_mon_delivery d = {&p, v1, strlen(v1), amqp_cstring_bytes("x"), amqp_cstring_bytes("t"), 0, 1};
    ck_assert_int_eq(tbx_mon_parse(&d, 0, &e, NULL), TBX_OK);
    ck_assert(e.has_task);
    ck_assert(!e.has_parked);
    ck_assert_str_eq(e.task.type, "t.v1");
    ck_assert_int_eq(e.task.retries, 2);
    json_t *opt = parse_json(e.task.options);
    ck_assert_int_eq(json_integer_value(json_object_get(opt, "retries")), 2);
    ck_assert_ptr_null(json_object_get(opt, "timelimit"));
    json_decref(opt);
    tbx_mon_entry_clear(&e);
}
END_TEST

START_TEST(test_nul_and_unusable_ids)
{
    raw r;
    raw_headers(&r, "{\"task\": \"t.n\", \"id\": \"id-n\"}", "application/json");
    tbx_mon_entry e;
    static const char body[] = "[[\"a\\u0000b\"], {}, {}]";
    parse_raw(&r, body, strlen(body), &e);
    ck_assert(e.has_task);
    ck_assert_str_eq(e.task.input, "{\"args\":[\"a\\ufffdb\"],\"kwargs\":{}}");
    ck_assert(e.has_parked); /* the original is kept */
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);

    /* An id that is not a string, or too long, cannot make a row. */
    raw_headers(&r, "{\"task\": \"t.n\", \"id\": 12}", "application/json");
    parse_raw(&r, "[[], {}, {}]", 12, &e);
    ck_assert(!e.has_task);
    ck_assert(e.has_parked);
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);
    char hdr[400];
    char longid[200];
    memset(longid, 'a', 199);
    longid[199] = '\0';
    snprintf(hdr, sizeof hdr, "{\"task\": \"t.n\", \"id\": \"%s\"}", longid);
    raw_headers(&r, hdr, "application/json");
    parse_raw(&r, "[[], {}, {}]", 12, &e);
    ck_assert(!e.has_task);
    ck_assert(e.has_parked);
    tbx_mon_entry_clear(&e);
    empty_amqp_pool(&r.pool);
}
END_TEST

START_TEST(test_family_status)
{
    const char *one[] = {"SUCCESS", "SUCCESS"};
    ck_assert_str_eq(tbx_family_status(one, 2), "SUCCESS");
    const char *none[] = {NULL, NULL};
    ck_assert_str_eq(tbx_family_status(none, 2), "PENDING");
    const char *mixed[] = {"SUCCESS", NULL};
    ck_assert_str_eq(tbx_family_status(mixed, 2), "STARTED");
    const char *failed[] = {"SUCCESS", "FAILURE", NULL};
    ck_assert_str_eq(tbx_family_status(failed, 3), "FAILURE");
    const char *retry[] = {"RETRY", "SUCCESS"};
    ck_assert_str_eq(tbx_family_status(retry, 2), "STARTED");
    const char *custom[] = {"PROGRESS"};
    ck_assert_str_eq(tbx_family_status(custom, 1), "PROGRESS");
    ck_assert_str_eq(tbx_family_status(NULL, 0), "PENDING");
}
END_TEST

START_TEST(test_random_ids)
{
    char a[TBX_MONITOR_ID_LEN + 1], b[TBX_MONITOR_ID_LEN + 1];
    for (int i = 0; i < 1000; i++) {
        tbx_monitor_random_id(a);
        tbx_monitor_random_id(b);
        ck_assert_int_eq(strlen(a), TBX_MONITOR_ID_LEN);
        ck_assert_str_ne(a, b);
        ck_assert_uint_eq(strspn(a, "abcdefghijkmnpqrstuvwxyz23456789"), TBX_MONITOR_ID_LEN);
    }
}
END_TEST

START_TEST(test_schema_sql)
{
    const char *sql = tbx_monitor_schema_sql();
    ck_assert_ptr_nonnull(strstr(sql, "CREATE TABLE IF NOT EXISTS tasks_backgroundtask"));
    ck_assert_ptr_nonnull(strstr(sql, "task_id VARCHAR(155) NOT NULL UNIQUE"));
    ck_assert_ptr_nonnull(strstr(sql, "CREATE TABLE IF NOT EXISTS tasks_parkedmessage"));
    ck_assert_ptr_null(strstr(sql, "REFERENCES")); /* no foreign keys */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("monitor");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_v2_message);
    tcase_add_test(tc, test_defaults_not_copied);
    tcase_add_test(tc, test_no_headers_parked);
    tcase_add_test(tc, test_bad_body_recorded_and_parked);
    tcase_add_test(tc, test_moved_aside_by_a_worker);
    tcase_add_test(tc, test_pickle_v1_and_json_params_complete);
    tcase_add_test(tc, test_nul_and_unusable_ids);
    tcase_add_test(tc, test_family_status);
    tcase_add_test(tc, test_random_ids);
    tcase_add_test(tc, test_schema_sql);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
