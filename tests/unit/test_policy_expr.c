/* test_policy_expr.c - sync policy `when` expressions and `then` actions. */
#include <stdbool.h>
#include <stdlib.h>
#include "expr.h"
#include "tap.h"

#define REC                                                                                                        \
        "{\"size\":6000,\"kind\":\"photo\",\"n\":5,\"r\":2.5,\"zero\":0,\"empty\":\"\",\"ok\":true,\"off\":false," \
        "\"none\":null,\"tags\":[\"a\",\"b\"],\"nums\":[1,2.0],\"payload\":{\"kind\":\"img\",\"a\":{\"b\":7}}}"

/* 1 or 0 for what SRC says about the record JSON, -1 when either does not parse. */
static int ev(const char *src, const char *json)
{
        json_error_t jerr;
        json_t *fields = json_loads(json, 0, &jerr);
        pexpr_error err;
        pexpr *e = pexpr_parse(src, &err);
        int r = -1;
        if (!fields)
                printf("#   bad test JSON: %s\n", jerr.text);
        else if (!e)
                printf("#   '%s' refused at %zu: %s\n", src, err.pos, err.message);
        else
                r = pexpr_eval(e, fields);
        pexpr_free(e);
        json_decref(fields);
        return r;
}

/* Whether SRC is refused at POS with a message containing WANT. */
static bool refused(const char *src, size_t pos, const char *want)
{
        pexpr_error err = {0};
        pexpr *e = pexpr_parse(src, &err);
        bool good = !e && err.pos == pos && strstr(err.message, want);
        if (!good)
                printf("#   '%.60s': %s at %zu: %s\n", src, e ? "parsed" : "refused", err.pos, err.message);
        pexpr_free(e);
        return good;
}

static bool then_refused(const char *src, size_t pos, const char *want)
{
        pexpr_error err = {0};
        paction a = {.queue = "junk", .defer_ms = 7, .drop = true};
        int rc = pparse_then(src, &a, &err);
        bool good = rc == -1 && err.pos == pos && strstr(err.message, want) && a.queue[0] == '\0' && a.defer_ms == 0 &&
                    !a.drop;
        if (!good)
                printf("#   '%.60s': rc %d at %zu: %s\n", src, rc, err.pos, err.message);
        return good;
}

static char *repeat(const char *head, size_t n, const char *tail)
{
        size_t hl = strlen(head), tl = strlen(tail);
        char *s = malloc(hl * n + tl + 1);
        for (size_t i = 0; i < n; i++)
                memcpy(s + i * hl, head, hl);
        memcpy(s + hl * n, tail, tl + 1);
        return s;
}

typedef struct seen {
        char names[4][32];
        size_t pos[4];
        int n, stop_at;
} seen;

static int collect(const char *name, size_t pos, void *data)
{
        seen *s = data;
        if (s->n < 4) {
                snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
                s->pos[s->n] = pos;
        }
        return ++s->n == s->stop_at ? 42 : 0;
}

static void test_doc_example_and_operators(void)
{
        ok(ev("size>5120", "{\"size\":6000}") == 1, "doc example: 6000 > 5120");
        ok(ev("size>5120", "{\"size\":100}") == 0, "doc example: 100 is not > 5120");
        ok(ev("size>5120", "{\"size\":5120}") == 0, "> is strict");
        ok(ev("size == 6000", REC) == 1, "==");
        ok(ev("size = 6000", REC) == 1, "= is ==");
        ok(ev("size != 6000", REC) == 0 && ev("size != 6001", REC) == 1, "!=");
        ok(ev("size < 6001", REC) == 1 && ev("size < 6000", REC) == 0, "<");
        ok(ev("size <= 6000", REC) == 1 && ev("size <= 5999", REC) == 0, "<=");
        ok(ev("size >= 6000", REC) == 1 && ev("size >= 6001", REC) == 0, ">=");
        ok(ev("size == 6000.0", REC) == 1 && ev("size > 5999.5", REC) == 1, "integer field against decimals");
        ok(ev("r == 2.5", REC) == 1 && ev("r < 3", REC) == 1 && ev("r > 2", REC) == 1, "real field against integers");
        ok(ev("n > -3", "{\"n\":-2}") == 1 && ev("n < -2.5", "{\"n\":-3}") == 1, "negative numbers");
        ok(ev("5120 < size", REC) == 1, "a literal on the left");
        ok(ev("kind == 'photo'", REC) == 1 && ev("kind == \"photo\"", REC) == 1, "strings in either quote");
        ok(ev("kind < 'video'", REC) == 1 && ev("kind > 'photos'", REC) == 0 && ev("kind >= 'photo'", REC) == 1,
           "strings compare byte-wise");
        ok(ev("kind < 'photos'", REC) == 1 && ev("kind == 'phot'", REC) == 0 && ev("kind == 'photos'", REC) == 0,
           "a prefix is smaller and not equal");
        ok(ev("ok == true", REC) == 1 && ev("ok == false", REC) == 0 && ev("off != true", REC) == 1, "booleans");
        ok(ev("none == null", REC) == 1 && ev("none != null", REC) == 0, "null");
        ok(ev("id == 9007199254740993", "{\"id\":9007199254740993}") == 1 &&
                   ev("id == 9007199254740992", "{\"id\":9007199254740993}") == 0,
           "integers above 2^53 compare exactly");
        ok(ev("id > 9007199254740992.0", "{\"id\":9007199254740993}") == 1, "integer against a decimal, exactly");
        ok(ev("a == -9223372036854775808", "{\"a\":-9223372036854775808}") == 1, "INT64_MIN literal");
        ok(ev("a == b", "{\"a\":[1,{\"x\":2}],\"b\":[1,{\"x\":2}]}") == 1, "two fields, arrays compared by value");
}

static void test_boolean_logic(void)
{
        ok(ev("false or true and false", REC) == 0, "and binds tighter than or");
        ok(ev("true or true and false", REC) == 1, "and binds tighter than or (other side)");
        ok(ev("not false and false", REC) == 0, "not binds tighter than and");
        ok(ev("not size > 5120", REC) == 0 && ev("not size < 5120", REC) == 1, "not negates a whole comparison");
        ok(ev("!ok", REC) == 0 && ev("!missing", REC) == 1 && ev("!!ok", REC) == 1, "! and !!");
        ok(ev("size > 5120 && kind == 'photo' || false", REC) == 1, "&& and ||");
        ok(ev("(false or true) and false", REC) == 0, "parentheses override precedence");
        ok(ev("not (false or true)", REC) == 0, "not of a group");
        ok(ev("((((size > 1))))", REC) == 1, "redundant parentheses");
        ok(ev("  size\t>\n5120  ", REC) == 1 && ev("(size>1)and(n<9)", REC) == 1, "whitespace optional anywhere");
        ok(ev("a and b and c and d or e", "{\"a\":1,\"b\":1,\"c\":1,\"d\":0,\"e\":0}") == 0 &&
                   ev("a and b and c and d or e", "{\"a\":1,\"b\":1,\"c\":1,\"d\":0,\"e\":1}") == 1,
           "longer chains");
}

static void test_values_and_fields(void)
{
        ok(ev("q == 'it\\'s'", "{\"q\":\"it's\"}") == 1, "escaped single quote");
        ok(ev("q == \"say \\\"hi\\\"\"", "{\"q\":\"say \\\"hi\\\"\"}") == 1, "escaped double quote");
        ok(ev("q == 'back\\\\slash'", "{\"q\":\"back\\\\slash\"}") == 1, "escaped backslash");
        ok(ev("q == \"it's\" and q != 'it\\\\s'", "{\"q\":\"it's\"}") == 1, "other quote needs no escape");
        ok(ev("q == ''", "{\"q\":\"\"}") == 1, "empty string literal");
        ok(ev("payload.kind == 'img'", REC) == 1 && ev("payload.a.b == 7", REC) == 1, "dotted fields");
        ok(ev("kind == 'img'", REC) == 0, "a dotted field is not the top-level one");
        ok(ev("payload.kind.x == null", REC) == 1 && ev("payload.missing.deep == null", REC) == 1,
           "walking through a non-object or a missing object gives null");
        ok(ev("missing == null", REC) == 1 && ev("missing != 5", REC) == 1, "missing field is null");
        ok(ev("missing > 3", REC) == 0 && ev("missing < 3", REC) == 0 && ev("missing", REC) == 0,
           "missing field orders as nothing and is falsy");
        ok(ev("size > 1", "[1,2]") == 0 && ev("x == null", "{}") == 1, "fields not an object: everything null");
        ok(ev("ok", REC) == 1 && ev("n", REC) == 1 && ev("r", REC) == 1 && ev("kind", REC) == 1, "truthy values");
        ok(ev("off", REC) == 0 && ev("zero", REC) == 0 && ev("empty", REC) == 0 && ev("none", REC) == 0,
           "falsy values");
        ok(ev("tags", REC) == 0 && ev("payload", REC) == 0, "arrays and objects are not truthy");
        ok(ev("ok and kind", REC) == 1 && ev("ok and empty", REC) == 0, "truthy operands of and");
        ok(ev("true", REC) == 1 && ev("null", REC) == 0 && ev("0.0", REC) == 0, "bare literals");
        ok(ev("_x1.y_2 == 1", "{\"_x1\":{\"y_2\":1}}") == 1, "underscores and digits in names");
}

static void test_mismatches(void)
{
        ok(ev("kind == 6000", REC) == 0 && ev("kind != 6000", REC) == 1, "string vs number: == false, != true");
        ok(ev("kind > 5", REC) == 0 && ev("kind < 5", REC) == 0 && ev("kind >= 5", REC) == 0, "no order across types");
        ok(ev("size > '5'", REC) == 0 && ev("size == '6000'", REC) == 0, "number vs numeric string");
        ok(ev("ok == 1", REC) == 0 && ev("ok > false", REC) == 0, "bool is not a number and has no order");
        ok(ev("none == 0", REC) == 0 && ev("none == false", REC) == 0 && ev("none == ''", REC) == 0,
           "null equals only null");
        ok(ev("tags == 'a'", REC) == 0 && ev("tags > 1", REC) == 0, "arrays against scalars");
}

static void test_in_and_contains(void)
{
        ok(ev("kind in ['video', 'photo']", REC) == 1, "in: string member");
        ok(ev("size in [1, 2, 6000.0]", REC) == 1 && ev("size in [6001]", REC) == 0, "in: numbers");
        ok(ev("kind in [1, 'x', null]", REC) == 0, "in: no member");
        ok(ev("none in [null]", REC) == 1 && ev("missing in [null]", REC) == 1, "in: null");
        ok(ev("kind contains 'hot'", REC) == 1 && ev("kind contains 'x'", REC) == 0, "contains: substring");
        ok(ev("kind contains ''", REC) == 1 && ev("empty contains 'a'", REC) == 0, "contains: empty");
        ok(ev("tags contains 'b'", REC) == 1 && ev("tags contains 'c'", REC) == 0, "contains: array member");
        ok(ev("nums contains 2", REC) == 1 && ev("nums contains '1'", REC) == 0, "contains: array, by value");
        ok(ev("size contains 6", REC) == 0 && ev("missing contains 'a'", REC) == 0, "contains: not a string/array");
        ok(ev("kind contains payload.kind", "{\"kind\":\"gimg\",\"payload\":{\"kind\":\"img\"}}") == 1,
           "contains: field on the right");
}

static void test_keywords(void)
{
        ok(ev("size > 1 AND NOT off Or FALSE", REC) == 1, "keywords in capitals");
        ok(ev("kind IN ['photo'] and kind CONTAINS 'ph' and none == NULL and ok == True", REC) == 1,
           "in, contains and literals in any case");
        ok(ev("SIZE > 1", REC) == 0 && ev("Kind == 'photo'", REC) == 0, "field names are case-sensitive");
        ok(ev("andy == 1 and notes == 2 and order == 3", "{\"andy\":1,\"notes\":2,\"order\":3}") == 1,
           "names that start with a keyword are fields");
}

static void test_fields_callback(void)
{
        pexpr_error err;
        pexpr *e = pexpr_parse("size > 1 and payload.kind == 'x' or 3 in [1]", &err);
        seen s = {.stop_at = 0};
        ok(e && pexpr_fields(e, collect, &s) == 0 && s.n == 2, "pexpr_fields visits each field");
        ok(s.n == 2 && strcmp(s.names[0], "size") == 0 && s.pos[0] == 0 && strcmp(s.names[1], "payload.kind") == 0 &&
                   s.pos[1] == 13,
           "with its full name and position");
        seen stop = {.stop_at = 1};
        ok(pexpr_fields(e, collect, &stop) == 42 && stop.n == 1, "stops at the first non-zero result");
        ok(pexpr_eval(e, NULL) == false, "NULL fields: all missing");
        pexpr_free(e);
        ok(pexpr_eval(NULL, NULL) == false && pexpr_fields(NULL, collect, &s) == 0, "NULL expression");
        pexpr_free(NULL);
}

static void test_errors(void)
{
        ok(refused("size >", 6, "expected a value after '>', found end of expression"), "missing value at the end");
        ok(refused("size > 'abc", 7, "unterminated string"), "unterminated string: at the opening quote");
        ok(refused("size > \"ab\\\"", 7, "unterminated string"), "an escaped quote does not close");
        ok(refused("size > 'ab\\", 7, "unterminated string"), "backslash at the end");
        ok(refused("q == 'a\\nb'", 7, "invalid escape"), "unknown escape: at the backslash");
        ok(refused("size >> 3", 6, "unknown operator '>>'"), "unknown operator '>>' at the second '>'");
        ok(refused("size => 3", 6, "unknown operator '=>'"), "unknown operator '=>'");
        ok(refused("a !== b", 4, "unknown operator '!=='") && refused("x & y", 2, "unknown operator '&'"),
           "unknown operators '!==' and '&'");
        ok(refused("size > 3 )", 9, "unmatched ')'"), "trailing ')'");
        ok(refused("(size > 3", 9, "expected ')'"), "unclosed '('");
        ok(refused("(a b)", 3, "expected ')' to close the '(' at 0, found 'b'"), "junk before ')'");
        ok(refused("", 0, "empty expression") && refused("   ", 3, "empty expression"), "empty expression");
        ok(refused("a b", 2, "expected 'and', 'or' or end of expression, found 'b'"), "trailing garbage");
        ok(refused("a == b == c", 7, "found '=='"), "comparisons do not chain");
        ok(refused("size > 1e999", 8, "exponents are not supported"), "exponent");
        ok(refused("size > 99999999999999999999", 7, "out of range") &&
                   refused("x == 9223372036854775808", 5, "out of range"),
           "integer overflow");
        ok(refused("size > 1.", 8, "invalid number '1.'") && refused("size > 12abc", 9, "invalid number '12abc'"),
           "malformed numbers");
        char *huge = repeat("9", 400, ".5");
        ok(refused(huge, 0, "out of range"), "decimal too large for a double");
        free(huge);
        ok(refused("payload.", 8, "expected a field name after '.'") && refused("a..b", 2, "field name"),
           "dangling dot");
        ok(refused("x in [1, 2", 10, "expected ',' or ']'"), "unclosed list");
        ok(refused("x in [a]", 6, "expected a literal") && refused("x in [1,]", 8, "expected a literal"),
           "list items must be literals");
        ok(refused("x in []", 6, "expected a literal"), "empty list");
        ok(refused("x in 3", 5, "expected '[' after 'in', found '3'"), "in without a list");
        ok(refused("x @ 1", 2, "unexpected character '@'") && refused("x == \x01", 5, "0x01"), "unexpected character");
        ok(refused("()", 1, "expected a value after '(', found ')'"), "empty group");
        ok(refused("size > 1 and", 12, "expected a value after 'and'") && refused("not", 3, "after 'not'"),
           "operator without an operand");
        ok(refused("and x", 0, "expected a value, found 'and'") && refused("x > and", 4, "found 'and'"),
           "keyword where a value belongs");
        ok(refused(NULL, 0, "empty expression"), "NULL source");
        ok(pexpr_parse("size >", NULL) == NULL, "NULL error pointer is allowed");
}

static void test_limits(void)
{
        char *deep = repeat("(", 10000, "");
        ok(refused(deep, PEXPR_MAX_SOURCE, "longer than"), "10000 '(' refused (too long), no crash");
        free(deep);
        deep = repeat("(", PEXPR_MAX_SOURCE, "");
        ok(refused(deep, PEXPR_MAX_DEPTH, "nested too deeply"), "4096 '(' refused at the 33rd");
        free(deep);
        char *bangs = repeat("!", PEXPR_MAX_SOURCE - 1, "x");
        ok(refused(bangs, PEXPR_MAX_DEPTH, "nested too deeply"), "4095 '!' refused at the 33rd");
        char *nots = repeat("not ", 40, "x");
        ok(refused(nots, 4 * PEXPR_MAX_DEPTH, "nested too deeply"), "'not ' x 40 refused at the 33rd");
        free(nots);
        char *open = repeat("(", PEXPR_MAX_DEPTH, "x"), *full = repeat(")", PEXPR_MAX_DEPTH, "");
        char src[2 * PEXPR_MAX_DEPTH + 2];
        snprintf(src, sizeof(src), "%s%s", open, full);
        ok(ev(src, "{\"x\":1}") == 1, "exactly PEXPR_MAX_DEPTH parentheses are fine");
        snprintf(src, sizeof(src), "%.*s(x)", PEXPR_MAX_DEPTH, bangs);
        ok(refused(src, PEXPR_MAX_DEPTH, "nested too deeply"), "'!' and '(' count together");
        free(open), free(full), free(bangs);

        char *longest = repeat(" ", PEXPR_MAX_SOURCE - 1, "");
        longest[0] = 'x';
        ok(ev(longest, "{\"x\":1}") == 1, "a source of exactly PEXPR_MAX_SOURCE bytes is accepted");
        free(longest);
        char *chain = repeat("a or ", (PEXPR_MAX_SOURCE - 1) / 5, "a");
        ok(ev(chain, "{\"a\":1}") == 1, "an or-chain filling the whole source");
        free(chain);
        char *lst = repeat("1,", (PEXPR_MAX_SOURCE - 10) / 2, "2]");
        memcpy(lst, "x in [1,1,", 10);
        ok(ev(lst, "{\"x\":2}") == 1, "a list filling the whole source");
        free(lst);
        char *toolong = repeat("x", 5000, "");
        ok(refused(toolong, PEXPR_MAX_SOURCE, "longer than 4096"), "5000 bytes refused at PEXPR_MAX_SOURCE");
        free(toolong);
}

static void test_then(void)
{
        paction a;
        pexpr_error err;
        ok(pparse_then("queue=wifi", &a, &err) == 0 && strcmp(a.queue, "wifi") == 0 && a.defer_ms == 0 && !a.drop,
           "queue=");
        ok(pparse_then("queue=wifi, defer=5m", &a, &err) == 0 && strcmp(a.queue, "wifi") == 0 && a.defer_ms == 300000,
           "two actions");
        ok(pparse_then(" defer = 250ms ;queue=bulk.low-1_x ", &a, &err) == 0 && strcmp(a.queue, "bulk.low-1_x") == 0 &&
                   a.defer_ms == 250,
           "spaces, ';' and every queue character");
        ok(pparse_then("defer=90", &a, &err) == 0 && a.defer_ms == 90000 && a.queue[0] == '\0',
           "bare duration is seconds");
        ok(pparse_then("defer=2h", &a, &err) == 0 && a.defer_ms == 7200000, "hours");
        ok(pparse_then("defer=30d", &a, &err) == 0 && a.defer_ms == 2592000000LL, "30d is the maximum");
        ok(pparse_then("defer=720h", &a, &err) == 0 && a.defer_ms == 2592000000LL, "720h is 30d");
        ok(pparse_then("drop", &a, &err) == 0 && a.drop && a.queue[0] == '\0' && a.defer_ms == 0, "drop");
        ok(pparse_then("DROP", &a, &err) == 0 && a.drop && pparse_then("Queue=x", &a, &err) == 0,
           "action names are case-insensitive");
        char name[80];
        snprintf(name, sizeof(name), "queue=%.63s",
                 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnop");
        ok(pparse_then(name, &a, &err) == 0 && strlen(a.queue) == 63, "63-character queue name");
        ok(pparse_then("drop", NULL, NULL) == 0, "NULL out and error are allowed");

        snprintf(name, sizeof(name), "queue=%.64s",
                 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnop");
        ok(then_refused(name, 6 + 63, "longer than 63"), "64-character queue name");
        ok(then_refused("", 0, "empty action list") && then_refused("  ", 2, "empty action list"), "empty");
        ok(then_refused(NULL, 0, "empty action list"), "NULL");
        ok(then_refused("foo=1", 0, "unknown action 'foo'"), "unknown action");
        ok(then_refused("queue=a,queue=b", 8, "duplicate action 'queue'") &&
                   then_refused("defer=1s; defer=2s", 10, "duplicate action 'defer'") &&
                   then_refused("drop,drop", 5, "duplicate action 'drop'"),
           "duplicate actions");
        ok(then_refused("drop;queue=x", 5, "'drop' cannot be combined") &&
                   then_refused("defer=1m, drop", 10, "'drop' cannot be combined"),
           "drop with another action");
        ok(then_refused("queue=", 6, "expected a queue name") && then_refused("queue=a@b", 7, "invalid character '@'"),
           "bad queue names");
        ok(then_refused("queue wifi", 6, "expected '=' after 'queue'") && then_refused("drop=1", 4, "takes no value"),
           "'=' where it belongs and nowhere else");
        ok(then_refused("defer=0", 6, "must be positive") && then_refused("defer=-5s", 6, "expected a duration"),
           "zero and negative durations");
        ok(then_refused("defer=31d", 6, "maximum of 30d") && then_refused("defer=721h", 6, "maximum") &&
                   then_refused("defer=99999999999999999999999ms", 6, "maximum"),
           "too long a duration, without overflow");
        ok(then_refused("defer=5x", 7, "unknown duration unit 'x'") && then_refused("defer=1.5h", 7, "'.'"),
           "bad units and fractions");
        ok(then_refused("defer=", 6, "expected a duration") && then_refused("defer=s", 6, "expected a duration"),
           "missing number");
        ok(then_refused("queue=wifi,", 11, "expected an action after ','") &&
                   then_refused(",drop", 0, "expected an action"),
           "stray separators");
        ok(then_refused("queue=wifi defer=1", 11, "expected ',' or ';'"), "spaces alone do not separate");
}

int main(void)
{
        test_doc_example_and_operators();
        test_boolean_logic();
        test_values_and_fields();
        test_mismatches();
        test_in_and_contains();
        test_keywords();
        test_fields_callback();
        test_errors();
        test_limits();
        test_then();
        return tap_done();
}
