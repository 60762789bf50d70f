/*
 * export_files_test.c - unit tests of export-worker's file side
 * (workers/export/files.c): SHA-256 test vectors, RFC 4180 record counting,
 * paths confined to the export directory, atomic writes and read-back.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"

static char *hash_of(const void *p, size_t n, char hex[65])
{
    export_sha256 *h = export_sha256_new();
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(export_sha256_update(h, p, n), 0);
    ck_assert_int_eq(export_sha256_final(h, hex), 0);
    export_sha256_free(h);
    return hex;
}

START_TEST(sha256_vectors)
{
    char hex[65];
    /* FIPS 180-2 / NIST examples. */
    ck_assert_str_eq(hash_of("", 0, hex), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ck_assert_str_eq(hash_of("abc", 3, hex), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ck_assert_str_eq(hash_of(m, strlen(m), hex),
                     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* One million 'a', fed in uneven pieces. */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    export_sha256 *h = export_sha256_new();
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof chunk ? left : sizeof chunk;
        ck_assert_int_eq(export_sha256_update(h, chunk, k), 0);
        left -= k;
    }
    ck_assert_int_eq(export_sha256_final(h, hex), 0);
    export_sha256_free(h);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

static uint64_t count(const char *s)
{
    export_csv_count c = {0};
    export_csv_feed(&c, s, strlen(s));
    return export_csv_records(&c);
}

START_TEST(csv_records)
{
    ck_assert_uint_eq(count(""), 0);
    ck_assert_uint_eq(count("a,b\n"), 1);
    ck_assert_uint_eq(count("a,b\n1,2\n"), 2);
    ck_assert_uint_eq(count("a,b\n1,2"), 2);                     /* unterminated last record */
    ck_assert_uint_eq(count("a\n\"x\ny\"\n"), 2);                 /* newline inside quotes */
    ck_assert_uint_eq(count("a\n\"x\r\ny\"\n"), 2);               /* CRLF inside quotes */
    ck_assert_uint_eq(count("a\n\"say \"\"hi\"\"\nnow\"\n"), 2);  /* escaped quotes */
    ck_assert_uint_eq(count("a\r\nb\r\n"), 2);                    /* CRLF line breaks */
    ck_assert_uint_eq(count("a\n\n\n"), 3);                       /* empty records (zero columns) */
    ck_assert_uint_eq(count("a\n\"\"\n"), 2);                     /* empty string field */
    /* Byte by byte gives the same counts (quote and CRLF split across feeds). */
    const char *s = "h1,h2\r\n\"a\"\"\r\nb\",c\r\n\"\",\"\n\"\r\n";
    export_csv_count c = {0};
    for (size_t i = 0; s[i]; i++)
        export_csv_feed(&c, s + i, 1);
    ck_assert_uint_eq(export_csv_records(&c), 3);
    ck_assert_uint_eq(count(s), 3);
}
END_TEST

static char g_dir[PATH_MAX], g_real[PATH_MAX], g_out[PATH_MAX];

static void make_dir(void)
{
    char tmpl[] = "/tmp/export_files_test.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(g_dir, sizeof g_dir, "%s/exports/deep", tmpl);
    export_err e = {0};
    ck_assert_int_eq(export_dir_prepare(g_dir, g_real, &e), 0); /* creates the parents */
}

static void rm_rf(void)
{
    char cmd[PATH_MAX + 32];
    char *p = strstr(g_dir, "/exports/deep");
    if (p) {
        snprintf(cmd, sizeof cmd, "rm -rf '%.*s'", (int)(p - g_dir), g_dir);
        ck_assert_int_eq(system(cmd), 0);
    }
}

static int resolve(const char *path, export_err *e)
{
    return export_resolve(g_real, path, strlen(path), g_out, e);
}

START_TEST(paths_confined)
{
    make_dir();
    export_err e = {0};
    char want[PATH_MAX + 16];

    ck_assert_int_eq(resolve("a.csv", &e), 0);
    snprintf(want, sizeof want, "%s/a.csv", g_real);
    ck_assert_str_eq(g_out, want);
    ck_assert_int_eq(resolve(want, &e), 0); /* absolute, inside */
    ck_assert_str_eq(g_out, want);

    ck_assert_int_eq(mkdir(strcat(strcpy(want, g_real), "/sub"), 0700), 0);
    ck_assert_int_eq(resolve("sub/../sub/b.csv", &e), 0);
    ck_assert_ptr_nonnull(strstr(g_out, "/deep/sub/b.csv"));

    const char *bad[] = {"../a.csv", "/etc/passwd", "/tmp/a.csv", "sub/../../a.csv", "", ".", "..",
                         "sub/", "nodir/a.csv", "/", NULL};
    for (size_t i = 0; bad[i]; i++) {
        memset(&e, 0, sizeof e);
        ck_assert_msg(resolve(bad[i], &e) == -1, "accepted '%s'", bad[i]);
        ck_assert_str_eq(e.type, "ValueError");
    }
    /* A NUL byte inside the JSON string. */
    ck_assert_int_eq(export_resolve(g_real, "a.csv\0/../../x", 14, g_out, &e), -1);
    ck_assert_str_eq(e.type, "ValueError");

    /* A symbolic link inside the directory that points outside it. */
    snprintf(want, sizeof want, "%s/out", g_real);
    ck_assert_int_eq(symlink("/tmp", want), 0);
    ck_assert_int_eq(resolve("out/x.csv", &e), -1);
    ck_assert_str_eq(e.type, "ValueError");
    ck_assert_ptr_nonnull(strstr(e.msg, "outside"));

    /* A sibling whose name starts like the directory is outside too. */
    char sib[PATH_MAX + 16];
    snprintf(sib, sizeof sib, "%s2", g_real);
    ck_assert_int_eq(mkdir(sib, 0700), 0);
    strcat(sib, "/x.csv");
    ck_assert_int_eq(resolve(sib, &e), -1);
    rm_rf();
}
END_TEST

START_TEST(default_names)
{
    char n[160];
    export_default_name("public.items", "id-1", n, sizeof n);
    ck_assert_str_eq(n, "public.items_id-1.csv");
    export_default_name("../etc/pass wd", "x", n, sizeof n);
    ck_assert_str_eq(n, "_._etc_pass_wd_x.csv"); /* no slash, no leading dot */
    export_default_name("żółć", "x", n, sizeof n);
    ck_assert_str_eq(n, "_________x.csv"); /* 8 bytes of UTF-8, then the separator */
    export_default_name("", NULL, n, sizeof n);
    ck_assert_str_eq(n, "export_noid.csv");
}
END_TEST

static int count_entries(const char *dir)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir);
    return system(cmd) == 0 ? 1 : 0;
}

START_TEST(write_and_read_back)
{
    make_dir();
    export_err e = {0};
    ck_assert_int_eq(resolve("data.csv", &e), 0);
    export_writer w;
    ck_assert_int_eq(export_writer_open(&w, g_out, &e), 0);
    const char *part1 = "id,text\n1,\"a, \"\"b\"\"\n", *part2 = "c\"\n2,żółć\n";
    ck_assert_int_eq(export_writer_write(&w, part1, strlen(part1), &e), 0);
    ck_assert_int_eq(access(g_out, F_OK), -1); /* not visible before commit */
    ck_assert_int_eq(export_writer_write(&w, part2, strlen(part2), &e), 0);
    char hex[65], want[65], all[128];
    ck_assert_int_eq(export_writer_commit(&w, hex, &e), 0);
    snprintf(all, sizeof all, "%s%s", part1, part2);
    ck_assert_str_eq(hex, hash_of(all, strlen(all), want));
    ck_assert_uint_eq(w.bytes, strlen(all));
    ck_assert_uint_eq(export_csv_records(&w.csv), 3);
    ck_assert_int_eq(count_entries(g_real), 1); /* no temporary file left */

    export_digest d;
    ck_assert_int_eq(export_digest_file(g_out, &d, &e), 0);
    ck_assert_str_eq(d.sha256, hex);
    ck_assert_uint_eq(d.bytes, strlen(all));
    ck_assert_uint_eq(d.records, 3);

    /* An aborted write leaves the old file and no temporary file. */
    ck_assert_int_eq(export_writer_open(&w, g_out, &e), 0);
    ck_assert_int_eq(export_writer_write(&w, "x\n", 2, &e), 0);
    export_writer_abort(&w);
    export_writer_abort(&w);
    ck_assert_int_eq(count_entries(g_real), 1);
    ck_assert_int_eq(export_digest_file(g_out, &d, &e), 0);
    ck_assert_str_eq(d.sha256, hex);

    /* Missing file, symbolic link, directory. */
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/missing.csv", g_real);
    ck_assert_int_eq(export_digest_file(p, &d, &e), -1);
    ck_assert_str_eq(e.type, "FileNotFoundError");
    snprintf(p, sizeof p, "%s/link.csv", g_real);
    ck_assert_int_eq(symlink(g_out, p), 0);
    ck_assert_int_eq(export_digest_file(p, &d, &e), -1);
    ck_assert_str_eq(e.type, "ValueError");
    ck_assert_int_eq(export_digest_file(g_real, &d, &e), -1);
    ck_assert_str_eq(e.type, "ValueError");
    rm_rf();
}
END_TEST

START_TEST(write_errors)
{
    export_err e = {0};
    export_writer w;
    /* Directory gone: the temporary file cannot be created. */
    ck_assert_int_eq(export_writer_open(&w, "/nonexistent-dir-xyz/a.csv", &e), -1);
    ck_assert_str_eq(e.type, "FileNotFoundError");
    export_writer_abort(&w);
    /* A full device: the write fails with ENOSPC and nothing is left behind. */
    if (access("/dev/full", W_OK) == 0) {
        make_dir();
        ck_assert_int_eq(resolve("full.csv", &e), 0);
        ck_assert_int_eq(export_writer_open(&w, g_out, &e), 0);
        int full = open("/dev/full", O_WRONLY);
        ck_assert_int_ge(full, 0);
        ck_assert_int_ge(dup2(full, w.fd), 0); /* the temp file's descriptor now writes to /dev/full */
        close(full);
        ck_assert_int_eq(export_writer_write(&w, "a\n", 2, &e), -1);
        ck_assert_str_eq(e.type, "OSError");
        ck_assert_ptr_nonnull(strstr(e.msg, "[Errno 28]"));
        export_writer_abort(&w);
        ck_assert_int_eq(access(g_out, F_OK), -1);
        char cmd[PATH_MAX + 64];
        snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", g_real);
        ck_assert_int_eq(system(cmd), 0);
        rm_rf();
    }
    /* The export directory cannot be a file. */
    char real[PATH_MAX];
    ck_assert_int_eq(export_dir_prepare("/etc/hostname", real, &e), -1);
    ck_assert_int_eq(export_dir_prepare("", real, &e), -1);
    ck_assert_str_eq(e.type, "ValueError");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("export_files");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, sha256_vectors);
    tcase_add_test(tc, csv_records);
    tcase_add_test(tc, paths_confined);
    tcase_add_test(tc, default_names);
    tcase_add_test(tc, write_and_read_back);
    tcase_add_test(tc, write_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
