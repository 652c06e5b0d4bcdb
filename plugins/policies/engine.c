/* engine.c - compiled policy sets: what the sync plugin asks "where does
 * this record go?".  A set is the tenant's live policies parsed once, in
 * priority order; evaluation only reads it, so one set may serve a whole
 * feed page.  Loading per use (not caching across requests) means every
 * daemon on a shared database sees a policy change at its next request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "policies.h"

typedef struct compiled {
        char name[POLICY_NAME_MAX + 1];
        pexpr *when;
        paction then;
} compiled;

struct policies_set {
        size_t n;
        compiled *items;
        char version[17]; /* FNV-1a 64 of the compiled policies, hex; "" for none */
};

static uint64_t fnv(uint64_t h, const char *s)
{
        for (; s && *s; s++)
                h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
        return (h ^ 0x1f) * 0x100000001b3ULL; /* a separator, so "ab","c" differs from "a","bc" */
}

/* The fields a `when` may name: a record's, plus anything in its payload. */
static const char *const known_fields[] = {"id",     "title",   "type",       "site",       "status", "size",
                                           "causal", "deleted", "created_at", "updated_at", NULL};

int policies_load(relay_db *db, const char *tenant, policies_set **out)
{
        *out = NULL;
        relay_db_result *r;
#define LOAD_SQL "SELECT name, when_src, then_src FROM policies_policies WHERE tenant = ? AND deleted_ms IS NULL"
        int rc = relay_db_query(db, &r,
                                POLICIES_IS_PGSQL(db) ? LOAD_SQL POLICIES_ORDER_PGSQL : LOAD_SQL POLICIES_ORDER_BYTES,
                                "s", tenant);
#undef LOAD_SQL
        if (rc != RELAY_DB_OK)
                return rc;
        policies_set *set = calloc(1, sizeof(*set));
        uint64_t h = 0xcbf29ce484222325ULL;
        set->items = calloc(relay_db_rows(r) ? relay_db_rows(r) : 1, sizeof(compiled));
        while (relay_db_next(r)) {
                compiled *c = &set->items[set->n];
                pexpr_error err;
                c->when = pexpr_parse(relay_db_text(r, 1), &err);
                /* stored policies were checked on the way in; skip any that a
                 * newer parser would refuse rather than fail the whole set */
                if (!c->when || pparse_then(relay_db_text(r, 2), &c->then, &err) != 0) {
                        pexpr_free(c->when);
                        continue;
                }
                snprintf(c->name, sizeof(c->name), "%s", relay_db_text(r, 0));
                set->n++;
                h = fnv(fnv(fnv(h, relay_db_text(r, 0)), relay_db_text(r, 1)), relay_db_text(r, 2));
        }
        if (set->n)
                snprintf(set->version, sizeof(set->version), "%016llx", (unsigned long long)h);
        relay_db_free(r);
        *out = set;
        return RELAY_DB_OK;
}

bool policies_decide(const policies_set *set, const json_t *fields, paction *action, char *name, size_t name_len)
{
        memset(action, 0, sizeof(*action));
        if (name_len)
                name[0] = '\0';
        for (size_t i = 0; set && i < set->n; i++)
                if (pexpr_eval(set->items[i].when, fields)) {
                        *action = set->items[i].then;
                        if (name_len)
                                snprintf(name, name_len, "%s", set->items[i].name);
                        return true;
                }
        return false;
}

const char *policies_version(const policies_set *set) { return set ? set->version : ""; }

void policies_free(policies_set *set)
{
        if (!set)
                return;
        for (size_t i = 0; i < set->n; i++)
                pexpr_free(set->items[i].when);
        free(set->items);
        free(set);
}

static int known(const char *name, size_t pos, void *data)
{
        (void)pos;
        if (strncmp(name, "payload.", 8) == 0 || strcmp(name, "payload") == 0)
                return 0;
        for (int i = 0; known_fields[i]; i++)
                if (strcmp(name, known_fields[i]) == 0)
                        return 0;
        *(size_t *)data = pos;
        return 1;
}

/* Characters (code points) in the first POS bytes of SRC, which is valid
 * UTF-8 (it came from a JSON string): bytes that do not continue one. */
static size_t chars_before(const char *src, size_t pos)
{
        size_t n = 0;
        for (size_t i = 0; i < pos && src[i]; i++)
                n += ((unsigned char)src[i] & 0xC0) != 0x80;
        return n;
}

/* SRC with a caret under byte POS: what a person reads to find the fault.
 * The caret is one column per character, not per byte, so it stays under
 * the fault when non-ASCII text comes before it. */
static json_t *pointer(const char *src, size_t pos)
{
        size_t n = strlen(src);
        if (n > 200)
                return json_null();
        char *text = malloc(2 * n + 4);
        size_t at = chars_before(src, pos > n ? n : pos);
        memcpy(text, src, n);
        text[n] = '\n';
        memset(text + n + 1, ' ', at);
        text[n + 1 + at] = '^';
        text[n + 2 + at] = '\0';
        json_t *j = json_string(text);
        free(text);
        return j ? j : json_null();
}

static json_t *fault(const char *field, const char *src, size_t pos, const char *what)
{
        char msg[256];
        snprintf(msg, sizeof(msg), "%s: %s (at character %zu)", field, what, chars_before(src, pos) + 1);
        return json_pack("{s:s,s:s,s:s,s:I,s:o}", "code",
                         strcmp(field, "when") == 0 ? "policy.invalid_when" : "policy.invalid_then", "message", msg,
                         "field", field, "position", (json_int_t)pos, "pointer", pointer(src, pos));
}

bool policies_check(const char *when, const char *then, json_t **error)
{
        pexpr_error err;
        pexpr *e = pexpr_parse(when, &err);
        if (!e) {
                *error = fault("when", when, err.pos, err.message);
                return false;
        }
        size_t at = 0;
        const char *bad = NULL;
        if (pexpr_fields(e, known, &at)) {
                char what[160];
                size_t len = strcspn(when + at, " \t\r\n()=!<>,");
                snprintf(what, sizeof(what),
                         "unknown field '%.*s'; records have id, title, type, site, status, size,"
                         " causal, deleted, created_at, updated_at and payload.*",
                         (int)(len > 40 ? 40 : len), when + at);
                *error = fault("when", when, at, what);
                bad = when;
        }
        pexpr_free(e);
        if (bad)
                return false;
        paction act;
        if (pparse_then(then, &act, &err) != 0) {
                *error = fault("then", then, err.pos, err.message);
                return false;
        }
        return true;
}
