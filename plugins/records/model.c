/* model.c - what a record is: its fields and their limits, its JSON shape,
 * its causal tokens.
 *
 * A record: id ("rec_" + ULID), title, type, site, status, a free JSON
 * payload, and `causal`, the token of its current version.  Every change
 * a client makes gets a new token, greater than the last (ULID layout:
 * time then randomness), so tokens sort in version order. */
#include <stdlib.h>
#include <string.h>
#include "records.h"

#define TITLE_MAX 200
#define WORD_MAX 64

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
static const char *const statuses[] = {"draft", "queued", "synced", "failed", NULL};
static const char *const create_fields[] = {"id", "title", "type", "site", "status", "payload", NULL};
static const char *const patch_fields[] = {"title", "type", "site", "status", "payload", "causal", NULL};

bool record_id_valid(const char *s) { return relay_id_valid("rec_", s); }

bool causal_valid(const char *s) { return relay_id_valid("", s); }

bool record_status_valid(const char *s)
{
        for (int i = 0; s && statuses[i]; i++)
                if (strcmp(s, statuses[i]) == 0)
                        return true;
        return false;
}

/* What a record looks like in every answer and event: the columns of
 * RECORD_COLUMNS, in the order the API document shows them. */
const relay_row_field record_fields[] = {{"id", 0, RELAY_FIELD_TEXT},
                                         {"title", 1, RELAY_FIELD_TEXT},
                                         {"type", 2, RELAY_FIELD_TEXT},
                                         {"site", 3, RELAY_FIELD_TEXT},
                                         {"status", 4, RELAY_FIELD_TEXT},
                                         {"payload", 5, RELAY_FIELD_JSON},
                                         {"causal", 6, RELAY_FIELD_TEXT},
                                         {"size", 7, RELAY_FIELD_INT},
                                         {"created_at", 8, RELAY_FIELD_TIME},
                                         {"updated_at", 9, RELAY_FIELD_TIME},
                                         {"deleted", RECORD_COL_DELETED_MS, RELAY_FIELD_SET},
                                         {"deleted_at", RECORD_COL_DELETED_MS, RELAY_FIELD_TIME},
                                         {"updated_by", 12, RELAY_FIELD_TEXT},
                                         {NULL}};

json_t *record_json(relay_db_result *r) { return relay_row_json(r, record_fields); }

static bool listed(const char *name, const char *const *names)
{
        for (int i = 0; names[i]; i++)
                if (strcmp(name, names[i]) == 0)
                        return true;
        return false;
}

/* Characters (code points) in the N bytes of UTF-8 at S: jansson only
 * holds valid UTF-8, so every byte that does not continue a sequence
 * starts a character. */
static size_t utf8_chars(const char *s, size_t n)
{
        size_t chars = 0;
        for (size_t i = 0; i < n; i++)
                chars += ((unsigned char)s[i] & 0xC0) != 0x80;
        return chars;
}

/* FIELD, when present, must be a string of 1..MAX characters (NULL_OK: or
 * null). */
static void check_string(const json_t *fields, const char *field, size_t max, bool required, bool null_ok,
                         json_t **errors)
{
        const json_t *v = json_object_get(fields, field);
        char msg[96];
        if (!v) {
                if (required)
                        relay_validation_add(errors, "body", field, "field required", "missing");
                return;
        }
        if (json_is_null(v) && null_ok)
                return;
        size_t n = json_is_string(v) ? json_string_length(v) : 0;
        size_t chars = json_is_string(v) ? utf8_chars(json_string_value(v), n) : 0;
        if (!json_is_string(v) || chars == 0 || chars > max) {
                snprintf(msg, sizeof(msg), "%s must be a string of 1 to %zu characters", field, max);
                relay_validation_add(errors, "body", field, msg, "value_error");
        } else if (memchr(json_string_value(v), '\0', n)) {
                relay_validation_add(errors, "body", field, "must not contain NUL characters", "value_error");
        }
}

void record_validate(const json_t *fields, bool patch, json_t **errors)
{
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)fields, key, v)
        {
                if (!listed(key, patch ? patch_fields : create_fields)) {
                        char msg[160];
                        snprintf(msg, sizeof(msg), "unknown field '%.64s'%s", key,
                                 patch && strcmp(key, "id") == 0 ? ": a record's id cannot change" : "");
                        relay_validation_add(errors, "body", key, msg, "value_error");
                }
        }
        if (!patch && json_object_get(fields, "id") &&
            !record_id_valid(json_string_value(json_object_get(fields, "id"))))
                relay_validation_add(errors, "body", "id", "id must be rec_ followed by 26 Crockford base32 characters",
                                     "value_error");
        check_string(fields, "title", TITLE_MAX, !patch, false, errors);
        check_string(fields, "type", WORD_MAX, !patch, false, errors);
        check_string(fields, "site", WORD_MAX, false, true, errors);
        const json_t *status = json_object_get(fields, "status");
        if (status && !record_status_valid(json_string_value(status)))
                relay_validation_add(errors, "body", "status", "status must be draft, queued, synced or failed",
                                     "value_error");
        const json_t *payload = json_object_get(fields, "payload");
        if (payload && !json_is_object(payload) && !(patch && json_is_null(payload)))
                relay_validation_add(errors, "body", "payload", "payload must be a JSON object", "type_error");
        if (patch && json_object_get(fields, "causal") &&
            !causal_valid(json_string_value(json_object_get(fields, "causal"))))
                relay_validation_add(errors, "body", "causal", "causal must be a token this server gave",
                                     "value_error");
}

/* Adds one to a base32 number in place (the token after PREV in the same ms). */
static void increment(char *s)
{
        for (int i = RELAY_ULID_LEN - 1; i >= 0; i--) {
                const char *at = strchr(crockford, s[i]);
                size_t d = at ? (size_t)(at - crockford) : 0;
                if (d < 31) {
                        s[i] = crockford[d + 1];
                        return;
                }
                s[i] = '0';
        }
}

void causal_next(const char *prev, char out[CAUSAL_LEN])
{
        relay_id_new("", out, CAUSAL_LEN);
        if (prev && causal_valid(prev) && strcmp(out, prev) <= 0) {
                memcpy(out, prev, CAUSAL_LEN);
                increment(out);
        }
}

void json_merge_patch(json_t *target, const json_t *patch)
{
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)patch, key, v)
        {
                json_t *cur = json_object_get(target, key);
                if (json_is_null(v))
                        json_object_del(target, key);
                else if (json_is_object(v) && json_is_object(cur))
                        json_merge_patch(cur, v);
                else if (json_is_object(v)) {
                        json_t *fresh = json_object();
                        json_merge_patch(fresh, v);
                        json_object_set_new(target, key, fresh);
                } else
                        json_object_set(target, key, v);
        }
}

void change_fingerprint(const records_change *c, char out[65])
{
        static const char *const ops[] = {"create", "update", "delete"};
        /* The change, not its envelope: a PATCH body carries the causal
         * token among the fields, a pushed update beside the patch; both
         * are the same change (c->causal) and must be one fingerprint. */
        json_t *fields = c->fields ? json_copy(c->fields) : NULL;
        if (c->op == RECORDS_UPDATE && fields)
                json_object_del(fields, "causal");
        json_t *doc =
                json_pack("{s:s,s:s?,s:s?,s:o?}", "op", ops[c->op], "id", c->id, "causal", c->causal, "fields", fields);
        char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        relay_hash_hex(text ? text : "", text ? strlen(text) : 0, out);
        free(text);
        json_decref(doc);
}

json_t *error_body(const char *code, const char *message, json_t *extra)
{
        json_t *e = json_pack("{s:s,s:s}", "code", code, "message", message);
        if (extra)
                json_object_update_new(e, extra);
        return e;
}
