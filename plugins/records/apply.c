/* apply.c - every change to a record goes through here: the routes
 * (POST, PATCH, DELETE) and the sync plugin's batch push alike.
 *
 * The caller runs each change in a savepoint of its own (the group commit
 * does, the batch push does): the row, its outbox event and, with an
 * Idempotency-Key, the stored answer commit together or not at all, and a
 * failed change is rolled back alone.  The record's change_seq is its event's
 * sequence number, which follows commit order (relay_event_emit_ex), so
 * the change feed never skips a change that commits late.  Optimistic
 * concurrency: an update names the causal token it saw, and the UPDATE
 * only matches while that token is current. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "records.h"

#define SELECT_RECORD "SELECT " RECORD_COLUMNS " FROM records_records WHERE tenant = ? AND id = ?"

static void set_result(records_result *out, records_outcome o, int status, json_t *body)
{
        out->outcome = o;
        out->status = status;
        json_decref(out->body);
        out->body = body;
}

static void fail(records_result *out, int status, const char *code, const char *message, json_t *extra)
{
        set_result(out, status == 409 ? RECORDS_CONFLICT : RECORDS_INVALID, status, error_body(code, message, extra));
}

/* The current row of ID into *RECORD (NULL when there is none). */
static int load(relay_db *db, const char *tenant, const char *id, json_t **record)
{
        relay_db_result *r;
        *record = NULL;
        int rc = relay_db_query(db, &r, SELECT_RECORD, "ss", tenant, id);
        if (rc == RELAY_DB_OK && relay_db_next(r))
                *record = record_json(r);
        relay_db_free(r);
        return rc;
}

static int64_t payload_size(const json_t *payload)
{
        char *text = json_dumps(payload, JSON_COMPACT);
        int64_t n = text ? (int64_t)strlen(text) : 0;
        free(text);
        return n;
}

/* Emits TYPE with RECORD; *SEQ gets its position.  A reference, not a
 * copy: the event's payload is written out before relay_event_emit_ex
 * returns, and nothing keeps it. */
static int emit(relay_db *db, const char *tenant, const char *type, const json_t *record, int64_t *seq)
{
        return relay_event_emit_ex(db, tenant, type, json_incref((json_t *)record), NULL, seq);
}

static const char *str(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static int insert(relay_db *db, const char *tenant, const records_change *c, records_result *out)
{
        char id[RECORD_ID_LEN], causal[CAUSAL_LEN], now_s[40];
        const char *given = str(c->fields, "id");
        if (given)
                snprintf(id, sizeof(id), "%s", given);
        else
                relay_id_new("rec_", id, sizeof(id));
        causal_next(NULL, causal);
        json_t *payload = json_object_get(c->fields, "payload");
        payload = payload ? json_incref(payload) : json_object();
        int64_t now = relay_now_ms(), size = payload_size(payload), seq = 0;
        const char *status = str(c->fields, "status") ? str(c->fields, "status") : "queued";
        relay_time_format(now, now_s, sizeof(now_s));
        json_t *record =
                json_pack("{s:s,s:s,s:s,s:s?,s:s,s:o,s:s,s:I,s:s,s:s,s:b,s:n,s:s?}", "id", id, "title",
                          str(c->fields, "title"), "type", str(c->fields, "type"), "site", str(c->fields, "site"),
                          "status", status, "payload", payload, "causal", causal, "size", (json_int_t)size,
                          "created_at", now_s, "updated_at", now_s, "deleted", 0, "deleted_at", "updated_by", c->actor);
        int rc = emit(db, tenant, "record.created", record, &seq);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(
                        db, NULL,
                        "INSERT INTO records_records (tenant, id, title, type, site, status, payload, causal,"
                        " size, created_ms, updated_ms, change_seq, created_by, updated_by)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        "ssssssjsiiiiss", tenant, id, str(record, "title"), str(record, "type"), str(record, "site"),
                        status, json_object_get(record, "payload"), causal, size, now, now, seq, c->actor, c->actor);
        if (rc == RELAY_DB_CONSTRAINT) {
                json_decref(record);
                return RELAY_DB_CONSTRAINT;
        }
        if (rc == RELAY_DB_OK && strcmp(status, "synced") == 0)
                rc = emit(db, tenant, "record.synced", record, NULL);
        set_result(out, RECORDS_APPLIED, 201, record);
        return rc;
}

/* A causal mismatch: 409 with the current record, and record.conflict. */
static int conflict(relay_db *db, const char *tenant, const char *given, json_t *current, records_result *out)
{
        json_t *ev = json_pack("{s:O,s:s?,s:O}", "id", json_object_get(current, "id"), "expected", given, "current",
                               json_object_get(current, "causal"));
        json_object_set(ev, "record", current);
        int rc = relay_event_emit(db, tenant, "record.conflict", ev, NULL);
        fail(out, 409, "record.conflict",
             "the record changed since the causal token you sent; current version included",
             json_pack("{s:O}", "current", current));
        return rc;
}

/* The record after applying the patch to CURRENT (a new object), changed
 * at NOW. */
static json_t *patched(const json_t *current, const json_t *patch, const char *causal, const char *actor,
                       int64_t now_ms)
{
        json_t *next = json_deep_copy(current);
        static const char *const plain[] = {"title", "type", "site", "status", NULL};
        for (int i = 0; plain[i]; i++)
                if (json_object_get(patch, plain[i]))
                        json_object_set(next, plain[i], json_object_get(patch, plain[i]));
        /* An edit needs syncing again, unless the client says otherwise. */
        if (!json_object_get(patch, "status"))
                json_object_set_new(next, "status", json_string("queued"));
        json_t *payload = json_object_get(patch, "payload");
        if (json_is_null(payload))
                json_object_set_new(next, "payload", json_object());
        else if (payload)
                json_merge_patch(json_object_get(next, "payload"), payload);
        char now[40];
        json_object_set_new(next, "causal", json_string(causal));
        json_object_set_new(next, "size", json_integer(payload_size(json_object_get(next, "payload"))));
        json_object_set_new(next, "updated_at", json_string(relay_time_format(now_ms, now, sizeof(now))));
        json_object_set_new(next, "updated_by", actor ? json_string(actor) : json_null());
        return next;
}

/* UPDATE guarded by the old token: 0 rows means someone else won.  NOW is
 * the time NEXT shows as updated_at (and deleted_at when DELETED). */
static int write_version(relay_db *db, const char *tenant, const json_t *next, const char *old_causal, int64_t now,
                         bool deleted, int64_t seq, int64_t *changes)
{
        int64_t deleted_ms = deleted ? now : 0;
        return relay_db_exec(
                db, changes,
                "UPDATE records_records SET title = ?, type = ?, site = ?, status = ?, payload = ?,"
                " causal = ?, size = ?, updated_ms = ?, deleted_ms = NULLIF(?, 0), change_seq = ?, updated_by = ?"
                " WHERE tenant = ? AND id = ? AND causal = ? AND deleted_ms IS NULL",
                "ssssjsiiiissss", str(next, "title"), str(next, "type"), str(next, "site"), str(next, "status"),
                json_object_get(next, "payload"), str(next, "causal"),
                (int64_t)json_integer_value(json_object_get(next, "size")), now, deleted_ms, seq,
                str(next, "updated_by"), tenant, str(next, "id"), old_causal);
}

static int update(relay_db *db, const char *tenant, const records_change *c, records_result *out)
{
        json_t *current;
        int rc = load(db, tenant, c->id, &current);
        if (rc != RELAY_DB_OK)
                return rc;
        if (!current)
                return fail(out, 404, "record.not_found", "no such record", NULL), RELAY_DB_OK;
        const char *now_causal = str(current, "causal");
        if (json_is_true(json_object_get(current, "deleted"))) {
                /* deleting a tombstone again changes nothing: same answer */
                if (c->op == RECORDS_DELETE && (!c->causal || strcmp(c->causal, now_causal) == 0))
                        return set_result(out, RECORDS_APPLIED, 200, current), RELAY_DB_OK;
                fail(out, 410, "record.deleted", "the record was deleted", json_pack("{s:O}", "current", current));
                json_decref(current);
                return RELAY_DB_OK;
        }
        if (c->causal && strcmp(c->causal, now_causal) != 0) {
                rc = conflict(db, tenant, c->causal, current, out);
                json_decref(current);
                return rc;
        }
        char causal[CAUSAL_LEN];
        causal_next(now_causal, causal);
        /* one clock reading: the answer, the event and the row agree */
        int64_t now = relay_now_ms();
        json_t *next = patched(current, c->op == RECORDS_UPDATE ? c->fields : NULL, causal, c->actor, now);
        bool deleting = c->op == RECORDS_DELETE;
        bool synced_now = !deleting && strcmp(str(next, "status"), "synced") == 0 &&
                          strcmp(str(current, "status"), "synced") != 0;
        if (deleting) {
                json_object_set_new(next, "status", json_string(str(current, "status")));
                json_object_set_new(next, "deleted", json_true());
                json_object_set_new(next, "deleted_at", json_string(str(next, "updated_at")));
        }
        int64_t seq = 0, changes = 0;
        rc = emit(db, tenant, deleting ? "record.deleted" : "record.updated", next, &seq);
        if (rc == RELAY_DB_OK && synced_now)
                rc = emit(db, tenant, "record.synced", next, &seq);
        if (rc == RELAY_DB_OK)
                rc = write_version(db, tenant, next, now_causal, now, deleting, seq, &changes);
        json_decref(current);
        if (rc == RELAY_DB_OK && changes == 0) {
                /* another writer got there between our read and our write */
                json_decref(next);
                return RELAY_DB_BUSY;
        }
        set_result(out, RECORDS_APPLIED, 200, next);
        return rc;
}

/* Checks what a change carries before anything is stored. */
static bool well_formed(const records_change *c, records_result *out)
{
        json_t *errors = NULL;
        if (c->op != RECORDS_CREATE && !record_id_valid(c->id)) {
                fail(out, 404, "record.not_found", "no such record", NULL);
                return false;
        }
        if (c->op != RECORDS_DELETE)
                record_validate(c->fields, c->op == RECORDS_UPDATE, &errors);
        /* A token from DELETE's query, If-Match or body, or from a push
         * item, is checked like PATCH's (record_validate, which reports a
         * body's own "causal"): a string that is no token is refused, not
         * taken for a stale one (a 409 and a record.conflict event
         * carrying whatever the client sent). */
        const char *in_body = json_string_value(json_object_get(c->fields, "causal"));
        if (c->causal && !causal_valid(c->causal) && !(in_body && strcmp(in_body, c->causal) == 0))
                relay_validation_add(&errors, "request", "causal", "causal must be a token this server gave",
                                     "value_error");
        if (errors) {
                const char *first = json_string_value(json_object_get(json_array_get(errors, 0), "msg"));
                fail(out, 422, "validation_failed", first ? first : "invalid record",
                     json_pack("{s:o}", "details", errors));
                return false;
        }
        if (c->op == RECORDS_UPDATE && !c->causal) {
                fail(out, 428, "causal_required", "an update must carry the causal token of the version it changes",
                     NULL);
                return false;
        }
        uint64_t max = relay_conf_size(records_self, "max_payload");
        json_t *payload = json_object_get(c->fields, "payload");
        if (payload && max && (uint64_t)payload_size(payload) > max) {
                char msg[96];
                snprintf(msg, sizeof(msg), "payload is larger than %llu bytes", (unsigned long long)max);
                fail(out, 413, "payload_too_large", msg, NULL);
                return false;
        }
        return true;
}

/* The Idempotency-Key step: false when the answer is already decided. */
static bool first_use(relay_db *db, const char *tenant, const records_change *c, records_result *out, int *rc)
{
        if (!c->idem_key)
                return true;
        if (!relay_idem_key_valid(c->idem_key)) {
                fail(out, 400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters",
                     NULL);
                return false;
        }
        char fp[65];
        change_fingerprint(c, fp);
        *rc = relay_idem_begin(db, tenant, "records", c->idem_key, fp, &out->idem);
        if (*rc != RELAY_DB_OK)
                return false;
        switch (relay_idem_state_of(out->idem)) {
        case RELAY_IDEM_NEW: return true;
        case RELAY_IDEM_REPLAY:
                set_result(out, RECORDS_REPLAYED, relay_idem_status(out->idem),
                           json_incref(relay_idem_body(out->idem)));
                return false;
        case RELAY_IDEM_MISMATCH:
                fail(out, 422, "idempotency_key_reused", "this Idempotency-Key was used for a different request", NULL);
                return false;
        default:
                fail(out, 409, "idempotency_key_in_flight",
                     "a request with this Idempotency-Key is still being processed", NULL);
                out->outcome = RECORDS_INVALID;
                return false;
        }
}

/* A create naming an id that exists: 409 with that record.  Writers are
 * serialised by the outbox lock, so nobody takes the id between this
 * look and the insert. */
static int id_taken(relay_db *db, const char *tenant, const records_change *c, records_result *out, bool *taken)
{
        json_t *current = NULL;
        const char *id = str(c->fields, "id");
        *taken = false;
        int rc = id ? load(db, tenant, id, &current) : RELAY_DB_OK;
        if (current) {
                *taken = true;
                fail(out, 409, "record.exists", "a record with this id exists", json_pack("{s:o}", "current", current));
        }
        return rc;
}

int records_apply(relay_db *db, const char *tenant, const records_change *c, records_result *out)
{
        memset(out, 0, sizeof(*out));
        int rc = RELAY_DB_OK;
        if (!well_formed(c, out) || !first_use(db, tenant, c, out, &rc))
                return rc == RELAY_DB_OK ? RELAY_DB_OK : (out->outcome = RECORDS_FAILED, rc);
        /* Writers of records queue here first, before reading what they
         * will change, so the read stays current until commit. */
        bool taken = false;
        rc = relay_event_order_lock(db);
        if (rc == RELAY_DB_OK && c->op == RECORDS_CREATE)
                rc = id_taken(db, tenant, c, out, &taken);
        if (rc == RELAY_DB_OK && !taken)
                rc = c->op == RECORDS_CREATE ? insert(db, tenant, c, out) : update(db, tenant, c, out);
        if (rc == RELAY_DB_OK && out->idem && out->outcome == RECORDS_APPLIED)
                rc = relay_idem_store(db, out->idem, out->status, out->body,
                                      (int64_t)relay_conf_duration_ms(records_self, "idempotency_ttl"));
        if (rc != RELAY_DB_OK)
                out->outcome = RECORDS_FAILED;
        return rc;
}

void records_result_clear(records_result *r)
{
        json_decref(r->body);
        relay_idem_release(r->idem);
        memset(r, 0, sizeof(*r));
}

int records_changes(relay_db *db, const char *tenant, int64_t after_seq, int limit, records_change_row *rows, int *n)
{
        relay_db_result *r;
        *n = 0;
        int rc = relay_db_query(db, &r,
                                "SELECT " RECORD_COLUMNS " FROM records_records WHERE tenant = ? AND change_seq > ?"
                                " ORDER BY change_seq LIMIT ?",
                                "sii", tenant, after_seq, (int64_t)limit);
        while (rc == RELAY_DB_OK && relay_db_next(r) && *n < limit) {
                rows[*n].seq = relay_db_int(r, RECORD_COL_CHANGE_SEQ);
                rows[*n].record = record_json(r);
                (*n)++;
        }
        relay_db_free(r);
        return rc;
}

int records_mark_synced(relay_db *db, const char *tenant, const char *id, const char *causal, bool *changed)
{
        json_t *current = NULL;
        *changed = false;
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_event_order_lock(db);
        if (rc == RELAY_DB_OK)
                rc = load(db, tenant, id, &current);
        if (rc != RELAY_DB_OK || !current || strcmp(str(current, "causal"), causal) != 0 ||
            json_is_true(json_object_get(current, "deleted")) || strcmp(str(current, "status"), "synced") == 0) {
                /* gone, edited since (a newer job will finish it), or done */
                if (rc == RELAY_DB_OK)
                        rc = relay_db_commit(db);
                else
                        relay_db_rollback(db);
                json_decref(current);
                return rc;
        }
        /* The server's status change is not a client edit: same causal
         * token (a client holding it can still update), new feed position. */
        json_object_set_new(current, "status", json_string("synced"));
        int64_t seq = 0, changes = 0;
        rc = emit(db, tenant, "record.synced", current, &seq);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, &changes,
                                   "UPDATE records_records SET status = 'synced', change_seq = ?"
                                   " WHERE tenant = ? AND id = ? AND causal = ? AND deleted_ms IS NULL",
                                   "isss", seq, tenant, id, causal);
        json_decref(current);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        *changed = rc == RELAY_DB_OK && changes > 0;
        return rc;
}
