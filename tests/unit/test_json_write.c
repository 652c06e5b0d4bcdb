/* test_json_write.c - the reply serializer writes what json_dumps writes:
 * fixed cases for every escape and type, then random documents (random
 * bytes as strings and keys, nesting, reals, extreme integers) compared
 * byte for byte, and the failures (invalid UTF-8, too deep) leave the
 * buffer as it was. */
#include <stdint.h>
#include <stdlib.h>
#include "buf.h"
#include "json_write.h"
#include "tap.h"

/* json_write's bytes equal json_dumps's (NULL: both fail). */
static int same(const json_t *v, char **got_out)
{
        buf o = {0};
        buf_append(&o, "x", 1); /* something before: appends, does not overwrite */
        int rc = json_write(&o, v);
        char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        buf_terminate(&o);
        int eq = want ? rc == 0 && strcmp(o.data + 1, want) == 0 : rc == -1 && o.len == 1;
        if (got_out)
                *got_out = strdup(o.data + 1);
        free(want);
        buf_free(&o);
        return eq;
}

static unsigned seed = 12345;
static unsigned rnd(void) { return seed = seed * 1103515245u + 12345u, (seed >> 8) & 0xffffff; }

/* Random bytes: mostly ASCII with control characters and quotes, some
 * UTF-8 sequences, valid and not. */
static json_t *random_string(void)
{
        static const char *const pieces[] = {"a",
                                             "\"",
                                             "\\",
                                             "\n",
                                             "\x01",
                                             "\x1f",
                                             "\x7f",
                                             "/",
                                             "\xc3\xa9",
                                             "\xe2\x82\xac",
                                             "\xf0\x9f\x98\x80",
                                             "\xed\xa0\x80",
                                             "\xc0\xaf",
                                             "\xff",
                                             "\t",
                                             "\b",
                                             "\f",
                                             "\r",
                                             " ",
                                             "z"};
        char s[64];
        size_t n = 0;
        for (unsigned k = rnd() % 8; k-- > 0;) {
                const char *p = pieces[rnd() % (sizeof(pieces) / sizeof(*pieces))];
                size_t len = strlen(p);
                if (n + len >= sizeof(s))
                        break;
                memcpy(s + n, p, len), n += len;
        }
        return json_stringn_nocheck(s, n); /* as the database's text may come */
}

static json_t *random_value(int depth)
{
        switch (rnd() % (depth > 4 ? 5 : 7)) {
        case 0: return random_string();
        case 1: return json_integer((json_int_t)rnd() - (json_int_t)rnd() * 1000003);
        case 2: return json_real((double)rnd() / ((rnd() % 1000) + 1) * (rnd() % 2 ? 1e-7 : 1e22));
        case 3: return rnd() % 2 ? json_true() : json_false();
        case 4: return json_null();
        case 5: {
                json_t *o = json_object();
                for (unsigned k = rnd() % 5; k-- > 0;) {
                        /* keys valid UTF-8: jansson writes an invalid key as a broken
                         * document ({":1}) where json_write fails; checked below */
                        json_t *key = random_string();
                        const char *name = json_string_value(key);
                        size_t len = json_string_length(key);
                        json_t *check = json_stringn(name, len);
                        json_object_setn_new_nocheck(o, check ? name : "k", check ? len : 1, random_value(depth + 1));
                        json_decref(check);
                        json_decref(key);
                }
                return o;
        }
        default: {
                json_t *a = json_array();
                for (unsigned k = rnd() % 5; k-- > 0;)
                        json_array_append_new(a, random_value(depth + 1));
                return a;
        }
        }
}

/* A key that is not UTF-8 fails: the reply becomes a 500, not the broken
 * document ({":1}) json_dumps writes for it. */
static void o_check(const json_t *v)
{
        buf o = {0};
        ok(json_write(&o, v) == -1 && o.len == 0, "a key that is not UTF-8 fails, leaving the buffer as it was");
        buf_free(&o);
}

int main(void)
{
        char *got = NULL;
        struct {
                const char *what;
                json_t *v;
                const char *want;
        } fixed[] = {
                {"empty object", json_object(), "{}"},
                {"empty array", json_array(), "[]"},
                {"escapes", json_string("q\" b\\ /\b\f\n\r\t\x01\x1f\x7f"),
                 "\"q\\\" b\\\\ /\\b\\f\\n\\r\\t\\u0001\\u001F\x7f\""},
                {"UTF-8 verbatim", json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
                 "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
                {"integers", json_pack("[I,I,i]", (json_int_t)INT64_MIN, (json_int_t)INT64_MAX, 0),
                 "[-9223372036854775808,9223372036854775807,0]"},
                {"reals as jansson", json_pack("[f,f,f,f]", 1.0, 0.1, 1e300, -2.5e-9), NULL},
                {"insertion order", json_pack("{s:i,s:i,s:i}", "z", 1, "a", 2, "m", 3), "{\"z\":1,\"a\":2,\"m\":3}"},
                {"nested", json_pack("{s:[{s:n,s:b},[]]}", "k", "x", "y", 1), "{\"k\":[{\"x\":null,\"y\":true},[]]}"},
        };
        for (size_t i = 0; i < sizeof(fixed) / sizeof(*fixed); i++) {
                ok(same(fixed[i].v, &got), "%s: as json_dumps", fixed[i].what);
                if (fixed[i].want)
                        is_str(got, fixed[i].want, "%s: the bytes", fixed[i].what);
                free(got);
                json_decref(fixed[i].v);
        }

        json_t *bad = json_stringn_nocheck("ok \xc3", 4);
        ok(same(bad, NULL), "invalid UTF-8 fails, as in json_dumps, and leaves the buffer as it was");
        json_decref(bad);
        json_t *bad_key = json_object();
        json_object_setn_new_nocheck(bad_key, "a\xff", 2, json_integer(1));
        o_check(bad_key);
        json_decref(bad_key);
        json_t *deep = json_array(), *inner = deep;
        for (int i = 0; i < 5000; i++) {
                json_t *next = json_array();
                json_array_append_new(inner, next);
                inner = next;
        }
        json_t *parsed_max = json_array(), *in = parsed_max;
        for (int i = 0; i < 2050; i++) { /* what the parser allows, wrapped in a reply */
                json_t *next = json_array();
                json_array_append_new(in, next);
                in = next;
        }
        ok(same(parsed_max, NULL), "2050 levels, more than any parsed body: written");
        json_decref(parsed_max);
        buf o = {0};
        ok(json_write(&o, deep) == -1 && o.len == 0, "5000 levels deep: refused, not a stack overflow");
        buf_free(&o);
        json_decref(deep);

        int all = 1, n = 0, failed_alike = 0;
        for (int i = 0; i < 20000; i++) {
                json_t *v = random_value(0);
                char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                failed_alike += !want;
                if (!same(v, &got)) {
                        if (all)
                                printf("# differs: got %s want %s\n", got, want ? want : "(failure)");
                        all = 0;
                }
                n++;
                free(got);
                free(want);
                json_decref(v);
        }
        ok(all, "%d random documents written as json_dumps writes them (%d of them failing alike)", n, failed_alike);
        ok(failed_alike > 100 && failed_alike < n - 100, "the random documents hold both valid and invalid strings");
        return tap_done();
}
