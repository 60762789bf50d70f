/* pyrepr_test.c - tbx_pyrepr / tbx_pyrepr_tuple against Python 3.11's repr(). */
#include "toolbox/pyrepr.h"

#include "pytext.h"

#include <check.h>
#include <locale.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct rvec {
    const char *json, *repr, *tuple_repr;
};

/* Generated with python3: repr(json.loads(text)) and repr(tuple(json.loads(text))). */
static const struct rvec rvectors[] = {
    {"null", "None", NULL},
    {"true", "True", NULL},
    {"false", "False", NULL},
    {"0", "0", NULL},
    {"-17", "-17", NULL},
    {"9223372036854775807", "9223372036854775807", NULL},
    {"-9223372036854775808", "-9223372036854775808", NULL},
    {"1.0", "1.0", NULL},
    {"1.5", "1.5", NULL},
    {"-0.0", "-0.0", NULL},
    {"0.1", "0.1", NULL},
    {"1e20", "1e+20", NULL},
    {"1e16", "1e+16", NULL},
    {"1e15", "1000000000000000.0", NULL},
    {"1e-4", "0.0001", NULL},
    {"1e-5", "1e-05", NULL},
    {"123456.789", "123456.789", NULL},
    {"3.141592653589793", "3.141592653589793", NULL},
    {"5e-324", "5e-324", NULL},
    {"1.7976931348623157e308", "1.7976931348623157e+308", NULL},
    {"0.30000000000000004", "0.30000000000000004", NULL},
    {"2.5e-07", "2.5e-07", NULL},
    {"\"\"", "''", NULL},
    {"\"abc\"", "'abc'", NULL},
    {"\"it's\"", "\"it's\"", NULL},
    {"\"say \\\"hi\\\"\"", "'say \"hi\"'", NULL},
    {"\"both ' and \\\"\"", "'both \\' and \"'", NULL},
    {"\"back\\\\slash\"", "'back\\\\slash'", NULL},
    {"\"\\u00e9\\n\"", "'\303\251\\n'", NULL},
    {"\"tab\\tcr\\rnul\\u0000del\\u007f\"", "'tab\\tcr\\rnul\\x00del\\x7f'", NULL},
    {"\"\\u0080\\u009f\\u00a0\\u00ad\\u00ff\"", "'\\x80\\x9f\\xa0\\xad\303\277'", NULL},
    {"\"\\u2028\\u200b\\ufeff\\u00e9\\u4e2d\"", "'\\u2028\\u200b\\ufeff\303\251\344\270\255'", NULL},
    {"\"\\ud83d\\ude00\"", "'\360\237\230\200'", NULL},
    {"\"\\udb40\\udc01\"", "'\\U000e0001'", NULL},
    {"\"\\uffff\\ue000\"", "'\\uffff\\ue000'", NULL},
    {"[]", "[]", "()"},
    {"{}", "{}", NULL},
    {"[1, \"a\", null, true, 1.5, {\"k\": \"it's\"}]", "[1, 'a', None, True, 1.5, {'k': \"it's\"}]", "(1, 'a', None, True, 1.5, {'k': \"it's\"})"},
    {"{\"a\": 2}", "{'a': 2}", NULL},
    {"{\"a\": [1, {\"b\": null}], \"c\": \"d\"}", "{'a': [1, {'b': None}], 'c': 'd'}", NULL},
    {"[[], [[]], {}]", "[[], [[]], {}]", "([], [[]], {})"},
    {"{\"it's\": \"x\"}", "{\"it's\": 'x'}", NULL},
    {"[1]", "[1]", "(1,)"},
    {"[1, 2]", "[1, 2]", "(1, 2)"},
    {"[\"\\u00e9\"]", "['\303\251']", "('\303\251',)"},
};

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(v != NULL, "bad JSON %s: %s", text, jerr.text);
    return v;
}

START_TEST(test_repr_vectors)
{
    const struct rvec *t = &rvectors[_i];
    json_t *v = parse(t->json);
    char *s = tbx_pyrepr(v, 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, t->repr);
    free(s);
    if (t->tuple_repr) {
        s = tbx_pyrepr_tuple(v, 0);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_eq(s, t->tuple_repr);
        free(s);
    }
    json_decref(v);
}
END_TEST

START_TEST(test_repr_null_and_tuple_forms)
{
    char *s = tbx_pyrepr(NULL, 0);
    ck_assert_str_eq(s, "None");
    free(s);
    s = tbx_pyrepr_tuple(NULL, 0);
    ck_assert_str_eq(s, "()");
    free(s);
    json_t *v = json_integer(5);
    s = tbx_pyrepr_tuple(v, 0);
    ck_assert_str_eq(s, "(5,)");
    free(s);
    json_decref(v);
    v = parse("[\"bad value 7\"]");
    s = tbx_pyrepr_tuple(v, 0);
    ck_assert_str_eq(s, "('bad value 7',)");
    free(s);
    json_decref(v);
}
END_TEST

START_TEST(test_repr_truncation)
{
    json_t *v = parse("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]");
    char *s = tbx_pyrepr(v, 10);
    ck_assert_str_eq(s, "[0, 1, 2, ...");
    free(s);
    s = tbx_pyrepr(v, 1000);
    ck_assert_str_eq(s, "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]");
    free(s);
    json_decref(v);

    /* exactly max_len characters: not cut */
    v = json_string("abc");
    s = tbx_pyrepr(v, 5);
    ck_assert_str_eq(s, "'abc'");
    free(s);
    s = tbx_pyrepr(v, 4);
    ck_assert_str_eq(s, "'abc...");
    free(s);
    json_decref(v);

    /* cut counts characters, never splits a UTF-8 sequence */
    v = json_string("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    s = tbx_pyrepr(v, 3);
    ck_assert_str_eq(s, "'\xc3\xa9\xc3\xa9...");
    free(s);
    json_decref(v);

    /* a huge value is not rendered in full when a limit is given */
    json_t *big = json_array();
    for (int i = 0; i < 100000; i++)
        json_array_append_new(big, json_string("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
    s = tbx_pyrepr(big, 20);
    ck_assert_uint_eq(strlen(s), 23);
    ck_assert_str_eq(s + 20, "...");
    free(s);
    json_decref(big);
}
END_TEST

START_TEST(test_repr_deep)
{
    json_t *v = json_array();
    for (int i = 0; i < TBX_PYREPR_MAX_DEPTH + 50; i++) {
        json_t *w = json_array();
        json_array_append_new(w, v);
        v = w;
    }
    char *s = tbx_pyrepr(v, 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(strstr(s, "[...]"));
    free(s);
    json_decref(v);
}
END_TEST

/* Python repr(float) for values around the edges of the fixed/exponent switch,
   subnormals and powers of two (generated with python3: '%016x %r' % (bits, x)). */
static const struct {
    uint64_t bits;
    const char *repr;
} floats[] = {
    {0x0000000000000001ULL, "5e-324"},
    {0x000fffffffffffffULL, "2.225073858507201e-308"},
    {0x0010000000000000ULL, "2.2250738585072014e-308"},
    {0x7fefffffffffffffULL, "1.7976931348623157e+308"},
    {0x3fd5555555555555ULL, "0.3333333333333333"},
    {0x3fd3333333333334ULL, "0.30000000000000004"},
    {0x4340000000000000ULL, "9007199254740992.0"},
    {0x43e0000000000000ULL, "9.223372036854776e+18"},
    {0x4415af1d78b58c40ULL, "1e+20"},
    {0x44b52d02c7e14af6ULL, "1e+23"},
    {0x3f1a36e2eb1c432dULL, "0.0001"},
    {0x3ee4f8b588e368f1ULL, "1e-05"},
    {0x430c6bf526340000ULL, "1000000000000000.0"},
    {0x4341c37937e08000ULL, "1e+16"},
    {0x3ff0000000000001ULL, "1.0000000000000002"},
    {0xc00921fb54442d18ULL, "-3.141592653589793"},
    {0x3c00000000000000ULL, "1.0842021724855044e-19"},
    {0x7fe0000000000000ULL, "8.98846567431158e+307"},
    {0x7ff0000000000000ULL, "inf"},
    {0xfff0000000000000ULL, "-inf"},
    {0x7ff8000000000000ULL, "nan"},
};

START_TEST(test_float_repr)
{
    char out[TBX_PYFLOAT_BUFSZ];
    double d;
    memcpy(&d, &floats[_i].bits, sizeof d);
    tbx_pyfloat_repr(d, out);
    ck_assert_str_eq(out, floats[_i].repr);
    if (d == d) {
        double back;
        ck_assert_int_eq(tbx_pyfloat_parse(out, strlen(out), &back), 0);
        ck_assert(back == d);
    }
}
END_TEST

START_TEST(test_float_parse)
{
    double d;
    ck_assert_int_eq(tbx_pyfloat_parse(" 1.5\n", 5, &d), 0);
    ck_assert(d == 1.5);
    ck_assert_int_eq(tbx_pyfloat_parse("-Infinity", 9, &d), 0);
    ck_assert(d < 0 && d * 0 != 0);
    ck_assert_int_eq(tbx_pyfloat_parse("1e999", 5, &d), 0);
    ck_assert(d > 1e308);
    ck_assert_int_eq(tbx_pyfloat_parse(".5", 2, &d), 0);
    ck_assert(d == 0.5);
    ck_assert_int_eq(tbx_pyfloat_parse("5.", 2, &d), 0);
    ck_assert(d == 5.0);
    ck_assert_int_eq(tbx_pyfloat_parse("1,5", 3, &d), -1);
    ck_assert_int_eq(tbx_pyfloat_parse("0x10", 4, &d), -1);
    ck_assert_int_eq(tbx_pyfloat_parse("1e", 2, &d), -1);
    ck_assert_int_eq(tbx_pyfloat_parse(".", 1, &d), -1);
    ck_assert_int_eq(tbx_pyfloat_parse("", 0, &d), -1);
    ck_assert_int_eq(tbx_pyfloat_parse("infx", 4, &d), -1);
}
END_TEST

/* The process locale must not leak into Python's float text. */
START_TEST(test_float_locale)
{
    const char *locs[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "C.UTF-8"};
    for (size_t i = 0; i < sizeof locs / sizeof locs[0]; i++)
        if (setlocale(LC_ALL, locs[i]))
            break;
    char out[TBX_PYFLOAT_BUFSZ];
    tbx_pyfloat_repr(1.5, out);
    ck_assert_str_eq(out, "1.5");
    double d;
    ck_assert_int_eq(tbx_pyfloat_parse("2.25", 4, &d), 0);
    ck_assert(d == 2.25);
    setlocale(LC_ALL, "C");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tbx_pyrepr");
    TCase *tc = tcase_create("repr");
    tcase_add_loop_test(tc, test_repr_vectors, 0, (int)(sizeof rvectors / sizeof rvectors[0]));
    tcase_add_test(tc, test_repr_null_and_tuple_forms);
    tcase_add_test(tc, test_repr_truncation);
    tcase_add_test(tc, test_repr_deep);
    suite_add_tcase(s, tc);
    tc = tcase_create("float");
    tcase_add_loop_test(tc, test_float_repr, 0, (int)(sizeof floats / sizeof floats[0]));
    tcase_add_test(tc, test_float_parse);
    tcase_add_test(tc, test_float_locale);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
