/* push.c - POST /v1/sync/push: a client back online sends what it did
 * offline, in order.
 *
 *   {"changes":[
 *     {"op":"create","idempotency_key":"k1","record":{"title":...}},
 *     {"op":"update","idempotency_key":"k2","id":"rec_...","causal":"01...","patch":{...}},
 *     {"op":"delete","idempotency_key":"k3","id":"rec_...","causal":"01..."}]}
 *
 * Each change goes through the records service exactly as its single
 * route would (idempotency, causal tokens, events), in its own savepoint
 * of one transaction, and gets its own answer: applied, replayed,
 * conflict (with the current record) or invalid (with the error).  One
 * bad item does not stop the others; a storage failure stops them all
 * (nothing is kept, the client sends the batch again). */
#include <stdlib.h>
#include <string.h>
#include "sync.h"

static const char *const item_fields[] = {"op", "idempotency_key", "id", "causal", "record", "patch", NULL};

static json_t *invalid(long index, const char *code, const char *message)
{
        return json_pack("{s:i,s:s,s:i,s:{s:s,s:s}}", "index", (int)index, "outcome", "invalid", "http_status", 422,
                         "error", "code", code, "message", message);
}

/* Reads item I into C; NULL when it is well formed, else its answer. */
static json_t *parse_item(const json_t *item, long i, records_change *c, const char *actor)
{
        memset(c, 0, sizeof(*c));
        if (!json_is_object(item))
                return invalid(i, "invalid_change", "each change must be a JSON object");
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)item, key, v)
        {
                bool ok = false;
                for (int k = 0; item_fields[k]; k++)
                        ok = ok || strcmp(key, item_fields[k]) == 0;
                if (!ok)
                        return invalid(i, "invalid_change", "unknown member in a change");
        }
        const char *op = json_string_value(json_object_get(item, "op"));
        const json_t *idem = json_object_get(item, "idempotency_key"), *causal = json_object_get(item, "causal");
        if (idem && !json_is_string(idem))
                return invalid(i, "invalid_change", "idempotency_key must be a string");
        if (causal && !json_is_string(causal))
                return invalid(i, "invalid_change", "causal must be a string");
        c->idem_key = json_string_value(idem);
        c->causal = json_string_value(causal);
        c->id = json_string_value(json_object_get(item, "id"));
        c->actor = actor;
        if (op && strcmp(op, "create") == 0) {
                c->op = RECORDS_CREATE;
                c->fields = json_object_get(item, "record");
                if (!json_is_object(c->fields))
                        return invalid(i, "invalid_change", "a create carries the record as an object");
        } else if (op && strcmp(op, "update") == 0) {
                c->op = RECORDS_UPDATE;
                c->fields = json_object_get(item, "patch");
                if (!json_is_object(c->fields))
                        return invalid(i, "invalid_change", "an update carries a patch object");
        } else if (op && strcmp(op, "delete") == 0) {
                c->op = RECORDS_DELETE;
        } else {
                return invalid(i, "invalid_change", "op must be create, update or delete");
        }
        if (c->op != RECORDS_CREATE && !c->id)
                return invalid(i, "invalid_change", "an update or delete names the record's id");
        return NULL;
}

static const char *outcome_name(records_outcome o)
{
        switch (o) {
        case RECORDS_APPLIED: return "applied";
        case RECORDS_REPLAYED: return "replayed";
        case RECORDS_CONFLICT: return "conflict";
        default: return "invalid";
        }
}

static json_t *answer(long i, const records_result *res)
{
        bool ok = res->outcome == RECORDS_APPLIED || res->outcome == RECORDS_REPLAYED;
        json_t *a = json_pack("{s:i,s:s,s:i}", "index", (int)i, "outcome", outcome_name(res->outcome), "http_status",
                              res->status);
        json_object_set(a, ok ? "record" : "error", res->body);
        return a;
}

/* An earlier item of the batch with ITEM's idempotency key: its index, or -1. */
static long same_key_before(const json_t *changes, size_t i)
{
        const char *key = json_string_value(json_object_get(json_array_get(changes, i), "idempotency_key"));
        for (size_t j = 0; key && j < i; j++)
                if (json_equal(json_object_get(json_array_get(changes, j), "idempotency_key"),
                               json_object_get(json_array_get(changes, i), "idempotency_key")))
                        return (long)j;
        return -1;
}

/* A key used twice in one batch: the first answer again for the same
 * change (the first still holds the key, it commits with the batch), 422
 * for another change, as across requests. */
static json_t *repeat(const json_t *changes, json_t *answers, size_t i, long j)
{
        if (!json_equal(json_array_get(changes, i), json_array_get(changes, (size_t)j)))
                return json_pack("{s:i,s:s,s:i,s:{s:s,s:s}}", "index", (int)i, "outcome", "invalid", "http_status", 422,
                                 "error", "code", "idempotency_key_reused", "message",
                                 "this Idempotency-Key was used for a different change");
        json_t *a = json_deep_copy(json_array_get(answers, (size_t)j));
        json_object_set_new(a, "index", json_integer((json_int_t)i));
        if (json_object_get(a, "record"))
                json_object_set_new(a, "outcome", json_string("replayed"));
        return a;
}

static int push(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        json_t *changes = json_object_get(body, "changes");
        long max = (long)relay_conf_int(sync_self, "max_batch");
        if (!json_is_array(changes) || json_array_size(changes) == 0)
                return relay_error(req, 422, "validation_failed", "changes must be a non-empty array");
        if ((long)json_array_size(changes) > max)
                return relay_error(req, 413, "batch_too_large", "at most %ld changes per push", max);
        relay_db *db = relay_db_of(req);
        const relay_principal *who = relay_principal_of(req);
        size_t n = json_array_size(changes);
        records_result *res = calloc(n, sizeof(*res));
        json_t *answers = json_array();
        int rc = relay_db_begin(db);
        for (size_t i = 0; rc == RELAY_DB_OK && i < n; i++) {
                records_change c;
                long first = same_key_before(changes, i);
                if (first >= 0) {
                        json_array_append_new(answers, repeat(changes, answers, i, first));
                        continue;
                }
                json_t *bad = parse_item(json_array_get(changes, i), (long)i, &c, who->subject);
                if (bad) {
                        json_array_append_new(answers, bad);
                        continue;
                }
                rc = relay_db_begin(db); /* a savepoint per item */
                if (rc == RELAY_DB_OK) {
                        rc = sync_records->apply(db, who->tenant, &c, &res[i]);
                        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
                }
                if (rc == RELAY_DB_OK)
                        json_array_append_new(answers, answer((long)i, &res[i]));
        }
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        for (size_t i = 0; i < n; i++) /* after the commit: keys leave "in flight" */
                sync_records->result_clear(&res[i]);
        free(res);
        if (rc != RELAY_DB_OK) {
                json_decref(answers);
                return relay_db_reply_error(req, rc);
        }
        return relay_reply_json(req, 200, json_pack("{s:o}", "results", answers));
}

int sync_push_register(relay_plugin *p) { return relay_route_role(p, "POST", "/v1/sync/push", push, "admin operator"); }
