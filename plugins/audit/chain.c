/* chain.c - appending to a tenant's hash chain, signing its head, and
 * checking it.
 *
 * entry.hash = SHA-256("relay-audit-v1\n" prev_hash "\n" SHA-256(body)),
 * with prev_hash of the first entry all zeros.  Hashing the body's digest
 * rather than the body lets a bundle leave an entry out (redact it) and
 * still prove the chain around it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "audit.h"

static bool is_pgsql(relay_db *db) { return strcmp(relay_db_dialect(db), "pgsql") == 0; }

/* What an append needs to know, read with the head's lock. */
typedef struct head {
        int64_t seq, checkpoint_seq;
        char hash[65];
        bool recorded; /* the draft's event has an entry already */
} head;

/* Locks TENANT's head row for this transaction and reads it, and whether
 * EVENT_ID (may be NULL) is recorded: one round trip in the steady state,
 * which matters on PostgreSQL, where the outbox subscriber appends one
 * entry per event.  A tenant's first entry creates the row. */
static int head_lock(relay_db *db, const char *tenant, const char *event_id, head *h)
{
        const char *sql = is_pgsql(db) ? "SELECT h.seq, h.hash, h.checkpoint_seq, EXISTS (SELECT 1 FROM audit_entries e"
                                         " WHERE e.tenant = h.tenant AND e.event_id = ?) FROM audit_heads h"
                                         " WHERE h.tenant = ? FOR UPDATE OF h"
                                       : "SELECT h.seq, h.hash, h.checkpoint_seq, EXISTS (SELECT 1 FROM audit_entries e"
                                         " WHERE e.tenant = h.tenant AND e.event_id = ?) FROM audit_heads h"
                                         " WHERE h.tenant = ?";
        for (int round = 0; round < 2; round++) {
                relay_db_result *r;
                int rc = relay_db_query(db, &r, sql, "ss", event_id, tenant);
                bool found = rc == RELAY_DB_OK && relay_db_next(r);
                if (found) {
                        h->seq = relay_db_int(r, 0);
                        snprintf(h->hash, sizeof(h->hash), "%s", relay_db_text(r, 1));
                        h->checkpoint_seq = relay_db_int(r, 2);
                        h->recorded = relay_db_int(r, 3) != 0;
                }
                relay_db_free(r);
                if (rc != RELAY_DB_OK || found)
                        return rc;
                rc = relay_db_exec(db, NULL,
                                   "INSERT INTO audit_heads (tenant, seq, hash) VALUES (?, 0, ?) ON CONFLICT (tenant) "
                                   "DO NOTHING",
                                   "ss", tenant, AUDIT_ZERO_HASH);
                if (rc != RELAY_DB_OK)
                        return rc;
        }
        return RELAY_DB_ERROR;
}

/* Stores the entry and moves the head: one statement on PostgreSQL. */
static int store_entry(relay_db *db, const audit_draft *d, int64_t seq, const char *id, int64_t now, const char *body,
                       const char *prev, const char *hash)
{
#define INSERT_ENTRY                                                                                               \
        "INSERT INTO audit_entries (tenant, seq, id, time_ms, kind, type, actor, target, event_id, model, policy," \
        " body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#define MOVE_HEAD "UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant = ?"
        if (is_pgsql(db))
                return relay_db_exec(db, NULL, "WITH e AS (" INSERT_ENTRY " RETURNING 1) " MOVE_HEAD,
                                     "sisissssssssssiss", d->tenant, seq, id, now, d->kind, d->type, d->actor,
                                     d->target, d->event_id, d->model, d->policy, body, prev, hash, seq, hash,
                                     d->tenant);
        int rc = relay_db_exec(db, NULL, INSERT_ENTRY, "sisissssssssss", d->tenant, seq, id, now, d->kind, d->type,
                               d->actor, d->target, d->event_id, d->model, d->policy, body, prev, hash);
        return rc == RELAY_DB_OK ? relay_db_exec(db, NULL, MOVE_HEAD, "iss", seq, hash, d->tenant) : rc;
#undef INSERT_ENTRY
#undef MOVE_HEAD
}

/* The canonical body: D's fields plus the chain's, compact, keys sorted. */
static char *body_text(const audit_draft *d, const char *id, int64_t seq, int64_t now)
{
        char when[40];
        json_t *b = json_deep_copy(d->body ? d->body : json_object());
        if (!d->body) {
                json_decref(b);
                b = json_object();
        }
        json_object_set_new(b, "id", json_string(id));
        json_object_set_new(b, "tenant", json_string(d->tenant));
        json_object_set_new(b, "seq", json_integer(seq));
        json_object_set_new(b, "time", json_string(relay_time_format(now, when, sizeof(when))));
        json_object_set_new(b, "kind", json_string(d->kind));
        json_object_set_new(b, "type", json_string(d->type));
        json_object_set_new(b, "actor", d->actor ? json_string(d->actor) : json_null());
        json_object_set_new(b, "target", d->target ? json_string(d->target) : json_null());
        char *text = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(b);
        return text;
}

static int sign_checkpoint(relay_db *db, const char *tenant, int64_t seq, const char *hash)
{
        char stmt[256], sig[100];
        int64_t now = relay_now_ms();
        audit_checkpoint_statement(stmt, sizeof(stmt), tenant, seq, hash, now);
        audit_sign(stmt, strlen(stmt), sig, sizeof(sig));
        int rc = relay_db_exec(db, NULL,
                               "INSERT INTO audit_checkpoints (tenant, seq, hash, time_ms, key_id, signature) "
                               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, seq) DO NOTHING",
                               "sisiss", tenant, seq, hash, now, audit_signing_key.key_id, sig);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, NULL,
                                   "UPDATE audit_heads SET checkpoint_seq = ? WHERE tenant = ? AND checkpoint_seq < ?",
                                   "isi", seq, tenant, seq);
        return rc;
}

/* ------------------------------------------------------------ head cache
 *
 * PostgreSQL: the control thread (the only appender of a daemon) keeps each
 * tenant's head as it last wrote it.  An append then is one statement that
 * moves the head only if it is still what the cache says and the event is
 * not recorded, and inserts the entry only if the head moved.  Anything
 * else (another daemon appended, a transaction rolled back, the event is
 * a duplicate) inserts nothing and changes nothing; the append then takes
 * the slow path, which locks and rereads the head. */

static json_t *head_cache; /* tenant -> [seq, hash, checkpoint_seq] */

static bool cache_get(const char *tenant, head *h)
{
        json_t *v = head_cache ? json_object_get(head_cache, tenant) : NULL;
        if (!v)
                return false;
        h->seq = json_integer_value(json_array_get(v, 0));
        snprintf(h->hash, sizeof(h->hash), "%s", json_string_value(json_array_get(v, 1)));
        h->checkpoint_seq = json_integer_value(json_array_get(v, 2));
        h->recorded = false;
        return true;
}

static void cache_put(const char *tenant, int64_t seq, const char *hash, int64_t checkpoint_seq)
{
        if (!head_cache)
                head_cache = json_object();
        if (json_object_size(head_cache) > 100000)
                json_object_clear(head_cache); /* a bound, not an eviction policy: it refills */
        json_object_set_new(head_cache, tenant,
                            json_pack("[I,s,I]", (json_int_t)seq, hash, (json_int_t)checkpoint_seq));
}

void audit_head_cache_free(void)
{
        json_decref(head_cache);
        head_cache = NULL;
}

/* The one-statement append; *STORED false: nothing was written. */
static int store_if_head(relay_db *db, const audit_draft *d, const head *h, int64_t seq, const char *id, int64_t now,
                         const char *body, const char *hash, bool *stored)
{
        int64_t n = 0;
        int rc = relay_db_exec(
                db, &n,
                "WITH h AS (UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant = ? AND seq = ? AND hash = ?"
                " AND NOT EXISTS (SELECT 1 FROM audit_entries WHERE tenant = ? AND event_id = ?) RETURNING 1)"
                " INSERT INTO audit_entries (tenant, seq, id, time_ms, kind, type, actor, target, event_id, model,"
                " policy, body, prev_hash, hash) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS"
                " (SELECT 1 FROM h)",
                "ississs"
                "sisissssssssss",
                seq, hash, d->tenant, h->seq, h->hash, d->tenant, d->event_id, /* the head, if unchanged */
                d->tenant, seq, id, now, d->kind, d->type, d->actor, d->target, d->event_id, d->model, d->policy, body,
                h->hash, hash);
        *stored = rc == RELAY_DB_OK && n == 1;
        return rc;
}

int audit_append(relay_db *db, const audit_draft *d)
{
        head h;
        bool fast = is_pgsql(db) && cache_get(d->tenant, &h), stored = false;
        for (int round = 0; round < 2; round++) {
                int rc = RELAY_DB_OK;
                if (!fast) {
                        /* the head first: a second daemon appending the same event
                         * waits here, then finds the first one's entry (or, if its
                         * snapshot predates it, collides on the (tenant, event_id)
                         * index and the event is handed over again) */
                        rc = head_lock(db, d->tenant, d->event_id, &h);
                        if (rc != RELAY_DB_OK || h.recorded) {
                                if (rc == RELAY_DB_OK)
                                        cache_put(d->tenant, h.seq, h.hash, h.checkpoint_seq);
                                return rc;
                        }
                }
                int64_t seq = h.seq + 1, now = relay_now_ms();
                char id[48], body_sha[65], hash[65];
                relay_id_new("aud_", id, sizeof(id));
                char *body = body_text(d, id, seq, now);
                if (!body)
                        return RELAY_DB_ERROR;
                audit_sha256_hex(body, strlen(body), body_sha);
                audit_entry_hash(h.hash, body_sha, hash);
                if (fast) {
                        rc = store_if_head(db, d, &h, seq, id, now, body, hash, &stored);
                } else {
                        rc = store_entry(db, d, seq, id, now, body, h.hash, hash);
                        stored = rc == RELAY_DB_OK;
                }
                free(body);
                if (rc != RELAY_DB_OK) {
                        if (head_cache)
                                json_object_del(head_cache, d->tenant);
                        return rc;
                }
                if (!stored) { /* the cache was stale: the slow path decides */
                        fast = false;
                        continue;
                }
                int64_t every = audit_checkpoint_every, checkpoint_seq = h.checkpoint_seq;
                if (every > 0 && seq - h.checkpoint_seq >= every) {
                        rc = sign_checkpoint(db, d->tenant, seq, hash);
                        checkpoint_seq = seq;
                }
                if (rc == RELAY_DB_OK && is_pgsql(db))
                        cache_put(d->tenant, seq, hash, checkpoint_seq);
                if (rc == RELAY_DB_OK)
                        audit_stream_mark(d->tenant);
                return rc;
        }
        return RELAY_DB_ERROR;
}

int audit_checkpoint_at(relay_db *db, const char *tenant, int64_t seq, const char *hash)
{
        return sign_checkpoint(db, tenant, seq, hash);
}

void buf_add(buf_t *b, const void *data, size_t len)
{
        if (b->len + len + 1 > b->cap) {
                size_t cap = b->cap ? b->cap * 2 : 4096;
                while (cap < b->len + len + 1)
                        cap *= 2;
                char *d = realloc(b->data, cap);
                if (!d)
                        return;
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
}

void audit_checkpoint_due(relay_db *db)
{
        relay_db_result *r;
        if (relay_db_query(db, &r, "SELECT tenant, seq, hash FROM audit_heads WHERE seq > checkpoint_seq LIMIT 1000",
                           "") != RELAY_DB_OK)
                return;
        if (relay_db_begin(db) != RELAY_DB_OK) {
                relay_db_free(r);
                return;
        }
        int rc = RELAY_DB_OK;
        while (rc == RELAY_DB_OK && relay_db_next(r))
                rc = sign_checkpoint(db, relay_db_text(r, 0), relay_db_int(r, 1), relay_db_text(r, 2));
        relay_db_free(r);
        if (rc == RELAY_DB_OK)
                rc = relay_db_commit(db);
        else
                relay_db_rollback(db);
        if (rc != RELAY_DB_OK)
                relay_log(audit_self, RELAY_LOG_WARN, "cannot store checkpoints: %s", relay_db_errmsg(db));
}

/* ------------------------------------------------------------ verification */

static bool column_matches(json_t *body, const char *field, const char *column)
{
        json_t *v = json_object_get(body, field);
        if (!column)
                return !v || json_is_null(v);
        return json_is_string(v) && strcmp(json_string_value(v), column) == 0;
}

static bool bad(audit_verify_result *r, int64_t seq, const char *id, const char *why)
{
        r->ok = false;
        r->bad_seq = seq;
        snprintf(r->bad_id, sizeof(r->bad_id), "%s", id ? id : ""); /* "": not known (a missing entry) */
        snprintf(r->message, sizeof(r->message), "entry %lld (%s): %s", (long long)seq, id ? id : "?", why);
        return false;
}

/* One stored row: seq, id, time_ms, kind, type, actor, target, body, prev_hash, hash. */
static bool check_row(relay_db_result *r, int64_t want, const char *prev, audit_verify_result *res)
{
        int64_t seq = relay_db_int(r, 0);
        const char *id = relay_db_text(r, 1), *body = relay_db_text(r, 7);
        if (seq != want) /* ID is the entry after the gap's: the missing one's is not known */
                return bad(res, want, NULL, "missing (the sequence has a gap)");
        if (strcmp(relay_db_text(r, 8), prev) != 0)
                return bad(res, seq, id, "does not follow the entry before it (prev_hash differs)");
        char body_sha[65], hash[65];
        audit_sha256_hex(body, strlen(body), body_sha);
        audit_entry_hash(prev, body_sha, hash);
        if (strcmp(hash, relay_db_text(r, 9)) != 0)
                return bad(res, seq, id, "its hash does not match its contents");
        json_t *b = json_loads(body, 0, NULL);
        char when[40];
        bool same = b && json_integer_value(json_object_get(b, "seq")) == seq && column_matches(b, "id", id) &&
                    column_matches(b, "time", relay_time_format(relay_db_int(r, 2), when, sizeof(when))) &&
                    column_matches(b, "kind", relay_db_text(r, 3)) && column_matches(b, "type", relay_db_text(r, 4)) &&
                    column_matches(b, "actor", relay_db_text(r, 5)) && column_matches(b, "target", relay_db_text(r, 6));
        json_decref(b);
        if (!same)
                return bad(res, seq, id, "its columns differ from its hashed contents");
        return true;
}

/* Checkpoint signatures, and each checkpoint's hash against the entry's. */
static bool check_checkpoints(relay_db *db, const char *tenant, audit_verify_result *res)
{
        relay_db_result *r;
        if (relay_db_query(db, &r,
                           "SELECT c.seq, c.hash, c.time_ms, c.signature, e.hash, e.id FROM audit_checkpoints c "
                           "LEFT JOIN audit_entries e ON e.tenant = c.tenant AND e.seq = c.seq WHERE c.tenant = ? "
                           "ORDER BY c.seq",
                           "s", tenant) != RELAY_DB_OK) {
                snprintf(res->message, sizeof(res->message), "cannot read checkpoints");
                return res->ok = false;
        }
        bool ok = true;
        while (ok && relay_db_next(r)) {
                int64_t seq = relay_db_int(r, 0);
                char stmt[256];
                audit_checkpoint_statement(stmt, sizeof(stmt), tenant, seq, relay_db_text(r, 1), relay_db_int(r, 2));
                if (!audit_signature_ok(audit_signing_key.pk, stmt, strlen(stmt), relay_db_text(r, 3))) {
                        ok = res->ok = false;
                        snprintf(res->message, sizeof(res->message), "checkpoint at entry %lld: bad signature",
                                 (long long)seq);
                } else if (!relay_db_text(r, 4) || strcmp(relay_db_text(r, 4), relay_db_text(r, 1)) != 0) {
                        ok = bad(res, seq, relay_db_text(r, 5), "differs from the signed checkpoint at that position");
                } else {
                        res->checkpoints++;
                }
        }
        relay_db_free(r);
        return ok;
}

int audit_verify_chain(relay_db *db, const char *tenant, audit_verify_result *res)
{
        memset(res, 0, sizeof(*res));
        snprintf(res->key_id, sizeof(res->key_id), "%s", audit_signing_key.key_id);
        char prev[65] = AUDIT_ZERO_HASH;
        int64_t next = 1;
        for (;;) {
                relay_db_result *r;
                int rc = relay_db_query(db, &r,
                                        "SELECT seq, id, time_ms, kind, type, actor, target, body, prev_hash, hash "
                                        "FROM audit_entries WHERE tenant = ? AND seq >= ? ORDER BY seq LIMIT 1000",
                                        "si", tenant, next);
                if (rc != RELAY_DB_OK)
                        return rc;
                size_t rows = relay_db_rows(r);
                bool ok = true;
                while (ok && relay_db_next(r)) {
                        ok = check_row(r, next, prev, res);
                        if (ok) {
                                snprintf(prev, sizeof(prev), "%s", relay_db_text(r, 9));
                                next++;
                                res->entries++;
                        }
                }
                relay_db_free(r);
                if (!ok)
                        return RELAY_DB_OK;
                if (rows < 1000)
                        break;
        }
        res->first_seq = res->entries ? 1 : 0;
        res->last_seq = next - 1;
        if (!check_checkpoints(db, tenant, res))
                return RELAY_DB_OK;
        /* the head must be the last entry: rows deleted from the end show here */
        relay_db_result *h;
        int rc = relay_db_query(db, &h, "SELECT seq, hash FROM audit_heads WHERE tenant = ?", "s", tenant);
        if (rc != RELAY_DB_OK)
                return rc;
        bool head_ok = !relay_db_next(h)
                               ? res->entries == 0
                               : relay_db_int(h, 0) == res->last_seq && strcmp(relay_db_text(h, 1), prev) == 0;
        relay_db_free(h);
        if (!head_ok) {
                bad(res, res->last_seq + 1, NULL, "missing: the chain's head lies beyond the last stored entry");
                return RELAY_DB_OK;
        }
        res->ok = true;
        snprintf(res->message, sizeof(res->message), "%lld entries, %lld signed checkpoints", (long long)res->entries,
                 (long long)res->checkpoints);
        return RELAY_DB_OK;
}
