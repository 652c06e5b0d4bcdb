/* test_row_json.c - a row written straight into a reply (row_json_write)
 * is byte for byte what relay_row_json then json_write make of it: every
 * field kind, SQL NULLs, escapes, times before 1970, extreme integers,
 * stored JSON documents, and random rows; a text that is not UTF-8 fails
 * in both and leaves the buffer as it was. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "buf.h"
#include "db_result.h"
#include "json_write.h"
#include "row_json.h"
#include "tap.h"

static const relay_row_field fields[] = {{"id", 0, RELAY_FIELD_TEXT},        {"n", 1, RELAY_FIELD_INT},
                                         {"at", 2, RELAY_FIELD_TIME},        {"doc", 3, RELAY_FIELD_JSON},
                                         {"gone", 4, RELAY_FIELD_SET},       {"gone_at", 4, RELAY_FIELD_TIME},
                                         {"q\"uo\\te", 0, RELAY_FIELD_TEXT}, {NULL}};

/* Both ways of writing the current row of R: equal bytes (or both fail,
 * the direct one leaving O as it was). */
static int same(relay_db_result *r, int *failed)
{
        buf direct = {0}, via = {0};
        buf_append(&direct, "x", 1);
        int rc1 = row_json_write(&direct, r, fields);
        json_t *o = relay_row_json(r, fields);
        int rc2 = o ? json_write(&via, o) : -1;
        json_decref(o);
        buf_terminate(&direct), buf_terminate(&via);
        int eq = rc1 == 0 ? rc2 == 0 && strcmp(direct.data + 1, via.data) == 0 : rc2 == -1 && direct.len == 1;
        if (!eq)
                printf("#   direct %d '%s'\n#   via %d '%s'\n", rc1, direct.data ? direct.data + 1 : "", rc2,
                       via.data ? via.data : "");
        if (failed)
                *failed = rc1 != 0;
        buf_free(&direct), buf_free(&via);
        return eq;
}

/* A one-row result: TEXT, INT, TIME, JSON text, SET column; NULL pointers
 * (and INT64_MIN for the numbers) are SQL NULL. */
static relay_db_result *row(const char *text, int64_t n, int64_t at, const char *doc, int64_t gone)
{
        relay_db_result *r = db_result_new();
        relay_dbres_columns(r, 5);
        relay_dbres_row(r);
        text ? relay_dbres_text(r, 0, text, strlen(text)) : relay_dbres_null(r, 0);
        n != INT64_MIN ? relay_dbres_int(r, 1, n) : relay_dbres_null(r, 1);
        at != INT64_MIN ? relay_dbres_int(r, 2, at) : relay_dbres_null(r, 2);
        doc ? relay_dbres_text(r, 3, doc, strlen(doc)) : relay_dbres_null(r, 3);
        gone != INT64_MIN ? relay_dbres_int(r, 4, gone) : relay_dbres_null(r, 4);
        relay_db_next(r);
        return r;
}

static int check(const char *text, int64_t n, int64_t at, const char *doc, int64_t gone)
{
        relay_db_result *r = row(text, n, at, doc, gone);
        int ok = same(r, NULL);
        relay_db_free(r);
        return ok;
}

static unsigned seed = 4242;
static unsigned rnd(void) { return seed = seed * 1103515245u + 12345u, (seed >> 8) & 0xffffff; }

static void random_text(char *out, size_t cap)
{
        static const char *const pieces[] = {"a",    "\"", "\\",       "\n",           "\x01",
                                             "\x1f", "/",  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                             "\x7f", " ",  "\xc3",     "\xed\xa0\x80"};
        size_t len = 0, n = rnd() % 12;
        out[0] = '\0';
        for (size_t i = 0; i < n; i++) {
                /* mostly valid: the last two pieces (a cut sequence, a surrogate) are rare */
                unsigned k = rnd() % 100 < 97 ? rnd() % 12 : 12 + rnd() % 2;
                size_t pl = strlen(pieces[k]);
                if (len + pl + 1 > cap)
                        break;
                memcpy(out + len, pieces[k], pl + 1);
                len += pl;
        }
}

/* A random document, written as this daemon stores a 'j' parameter. */
static char *random_doc(int depth)
{
        json_t *d = json_object();
        size_t n = rnd() % 5;
        for (size_t i = 0; i < n; i++) {
                char key[64], s[64];
                random_text(key, sizeof(key));
                random_text(s, sizeof(s));
                json_t *v;
                switch (rnd() % 6) {
                case 0: v = json_integer((json_int_t)rnd() * (rnd() % 2 ? -1 : 1)); break;
                case 1: v = json_real((double)rnd() / 7.0); break;
                case 2: v = json_string(s); break; /* NULL (not UTF-8): null below */
                case 3: v = json_boolean(rnd() % 2); break;
                case 4: {
                        char *inner = depth < 3 ? random_doc(depth + 1) : NULL;
                        v = inner ? json_loads(inner, 0, NULL) : json_null();
                        free(inner);
                        break;
                }
                default: v = json_null();
                }
                json_object_set_new(d, key, v ? v : json_null());
        }
        buf o = {0};
        if (json_write(&o, d) != 0)
                buf_append(&o, "{}", 2);
        buf_terminate(&o);
        json_decref(d);
        return o.data;
}

int main(void)
{
        ok(check("rec_1", 42, 1795366601000, "{\"a\":[1,2.5,\"x\"],\"b\":{}}", INT64_MIN),
           "every kind, SET and its TIME NULL");
        ok(check(NULL, INT64_MIN, INT64_MIN, NULL, 1), "every column NULL but the SET one");
        ok(check("quote \" backslash \\ newline \n control \x01 slash / euro \xe2\x82\xac", INT64_MAX, -1, "[]",
                 INT64_MIN + 1),
           "escapes, the largest integer, a time before 1970");
        ok(check("", INT64_MIN + 1, 0, "\"just a string\"", 0), "empty text, the smallest integer, the epoch");
        int failed = 0;
        relay_db_result *r = row("cut \xc3", 1, 1, "{}", 1);
        ok(same(r, &failed) && failed, "a text that is not UTF-8 fails both ways, the buffer as it was");
        relay_db_free(r);
        int all = 1, fails = 0, rows = 0;
        for (int i = 0; i < 5000; i++) {
                char text[256];
                random_text(text, sizeof(text));
                char *doc = rnd() % 5 ? random_doc(0) : NULL;
                int64_t n = rnd() % 7 ? (int64_t)rnd() * (int64_t)rnd() * (rnd() % 2 ? -1 : 1) : INT64_MIN;
                int64_t at = rnd() % 5 ? ((int64_t)rnd() << 20) * (rnd() % 3 ? 1 : -1) : INT64_MIN;
                r = row(rnd() % 9 ? text : NULL, n, at, doc, rnd() % 2 ? (int64_t)rnd() : INT64_MIN);
                int f = 0;
                all = all && same(r, &f);
                fails += f;
                rows++;
                relay_db_free(r);
                free(doc);
        }
        ok(all, "%d random rows written alike", rows);
        ok(fails > 0 && fails < rows, "some random rows failed alike (%d), most did not", fails);
        /* an empty value may reach the result as a NULL pointer (SQLite's
         * zero-length blob): an empty string, no memcpy from NULL (UBSan) */
        r = db_result_new();
        relay_dbres_columns(r, 5);
        relay_dbres_row(r);
        relay_dbres_blob(r, 0, NULL, 0);
        relay_dbres_text(r, 3, "{}", 2);
        relay_db_next(r);
        ok(same(r, NULL) && relay_db_text(r, 0) && !*relay_db_text(r, 0), "an empty value given as NULL");
        relay_db_free(r);
        /* the arena: a row bigger than its first block */
        char big[20000];
        memset(big, 'z', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ok(check(big, 1, 1, "{}", INT64_MIN), "a 20 kB text");
        return tap_done();
}
