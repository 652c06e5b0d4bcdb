/* feed.c - GET /v1/sync/changes?since=<cursor>&network=<class>&limit=<n>
 *
 * The change feed of offline clients: the tenant's records whose last
 * change comes after the cursor, tombstones included, in commit order
 * (records' change_seq is the outbox sequence).  The feed is compacted: a
 * record appears once, at its latest state, so applying the changes in
 * order from any cursor converges to the server's state.
 *
 * Sync policies route it.  A change whose policy says queue=<class> is
 * held back from a client pulling on another network class, and one with
 * defer=<duration> until its time has come; drop hides it from everyone.
 * The cursor remembers where held-back changes start:
 *   p  low-water mark: everything at or before p has been delivered
 *   s  scan position: everything at or before s was looked at, under n
 *   n  the network class the cursor was made for ("" for any)
 *   d  when the earliest deferred change falls due (ms, 0 none)
 *   v  the version of the tenant's policies it was made under
 * A pull on the same network goes on from s; a pull on another network,
 * after d, or once the policies changed, goes back to p and delivers what
 * is no longer held back
 * (changes already delivered come again: applying one twice is harmless).
 * Pages are bounded by rows looked at, so a page may deliver nothing and
 * still say has_more. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sync.h"

typedef struct position {
        int64_t p, s, d;
        char n[33];
        char v[17];
} position;

static bool network_valid(const char *s)
{
        size_t n = strlen(s);
        return n <= 32 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* The cursor's position; false (after replying 400) when it is bad. */
static bool read_position(relay_req *req, position *pos)
{
        json_t *c;
        memset(pos, 0, sizeof(*pos));
        if (relay_query_cursor(req, "since", &c) != RELAY_OK)
                return false;
        if (!c)
                return true;
        const json_t *p = json_object_get(c, "p"), *s = json_object_get(c, "s"), *d = json_object_get(c, "d");
        const char *n = json_string_value(json_object_get(c, "n"));
        const json_t *v = json_object_get(c, "v"); /* absent in cursors older than it */
        if (!json_is_integer(p) || !json_is_integer(s) || !json_is_integer(d) || !n || !network_valid(n) ||
            json_integer_value(p) < 0 || json_integer_value(p) > json_integer_value(s) ||
            (v && (!json_is_string(v) || json_string_length(v) >= sizeof(pos->v)))) {
                relay_error(req, 400, "invalid_cursor", "since is not a cursor this server gave");
                return false;
        }
        pos->p = json_integer_value(p), pos->s = json_integer_value(s), pos->d = json_integer_value(d);
        snprintf(pos->n, sizeof(pos->n), "%s", n);
        snprintf(pos->v, sizeof(pos->v), "%s", v ? json_string_value(v) : "");
        return true;
}

typedef enum { DELIVER, HOLD, HIDE } verdict;

/* What the policies say about RECORD for a client on NETWORK at NOW. */
static verdict route(const policies_set *set, const json_t *record, const char *network, int64_t now, int64_t *due)
{
        paction act;
        char name[64];
        *due = 0;
        if (!sync_policies->decide(set, record, &act, name, sizeof(name)))
                return DELIVER;
        if (act.drop)
                return HIDE;
        if (act.queue[0] && *network && strcmp(act.queue, network) != 0)
                return HOLD;
        int64_t updated = 0;
        if (act.defer_ms &&
            relay_time_parse(json_string_value(json_object_get(record, "updated_at")), &updated) == RELAY_OK &&
            updated + act.defer_ms > now) {
                *due = updated + act.defer_ms;
                return HOLD;
        }
        return DELIVER;
}

static json_t *change_json(const records_change_row *row)
{
        bool gone = json_is_true(json_object_get(row->record, "deleted"));
        return json_pack("{s:I,s:s,s:O,s:O}", "seq", (json_int_t)row->seq, "op", gone ? "delete" : "upsert", "id",
                         json_object_get(row->record, "id"), "record", row->record);
}

static int get_changes(relay_req *req)
{
        const char *network = relay_query(req, "network");
        long max = (long)relay_conf_int(sync_self, "max_page_size");
        long def = (long)relay_conf_int(sync_self, "page_size");
        bool bad = false;
        long limit = relay_query_limit(req, "limit", def < max ? def : max, max, &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to %ld", max);
        if (network && !network_valid(network))
                return relay_error(req, 400, "invalid_network", "network must be a word like wifi or cellular");
        network = network ? network : "";
        position pos;
        if (!read_position(req, &pos))
                return RELAY_OK;
        int64_t now = relay_now_ms();
        const char *tenant = relay_principal_of(req)->tenant;
        relay_db *db = relay_db_of(req);
        policies_set *set = NULL;
        records_change_row *rows = calloc((size_t)limit, sizeof(*rows));
        int n = 0;
        int rc = sync_policies->load(db, tenant, &set);
        /* what was held back under other policies may go out now */
        const char *version = rc == RELAY_DB_OK ? sync_policies->version(set) : "";
        bool rescan = strcmp(pos.n, network) != 0 || (pos.d && now >= pos.d) || strcmp(pos.v, version) != 0;
        int64_t start = rescan ? pos.p : pos.s;
        if (rc == RELAY_DB_OK)
                rc = sync_records->changes(db, tenant, start, (int)limit, rows, &n);
        json_t *changes = json_array();
        int64_t first_held = 0, next_due = 0, held = 0;
        for (int i = 0; rc == RELAY_DB_OK && i < n; i++) {
                int64_t due;
                verdict v = route(set, rows[i].record, network, now, &due);
                if (v == DELIVER)
                        json_array_append_new(changes, change_json(&rows[i]));
                else {
                        /* a dropped change is held too, for as long as the
                         * drop policy stands: the low-water mark stays before
                         * it, and a policy change delivers it */
                        held += v == HOLD;
                        first_held = first_held ? first_held : rows[i].seq;
                        if (due && (!next_due || due < next_due))
                                next_due = due;
                }
        }
        int64_t scanned = n ? rows[n - 1].seq : start;
        for (int i = 0; i < n; i++)
                json_decref(rows[i].record);
        free(rows);
        position next = {.s = scanned};
        snprintf(next.v, sizeof(next.v), "%s", version);
        sync_policies->free(set);
        if (rc != RELAY_DB_OK) {
                json_decref(changes);
                return relay_db_reply_error(req, rc);
        }
        snprintf(next.n, sizeof(next.n), "%s", network);
        bool older_held = !rescan && pos.p < pos.s;
        next.p = older_held ? pos.p : first_held ? first_held - 1 : scanned;
        next.d = !rescan && pos.d && (!next_due || pos.d < next_due) ? pos.d : next_due;
        json_t *state = json_pack("{s:I,s:I,s:s,s:I,s:s}", "p", (json_int_t)next.p, "s", (json_int_t)next.s, "n",
                                  next.n, "d", (json_int_t)next.d, "v", next.v);
        char cursor[RELAY_CURSOR_MAX];
        relay_cursor_encode(state, cursor, sizeof(cursor));
        json_decref(state);
        return relay_reply_json(req, 200,
                                json_pack("{s:o,s:s,s:b,s:I}", "changes", changes, "next_cursor", cursor, "has_more",
                                          n == (int)limit, "withheld", (json_int_t)held));
}

int sync_feed_register(relay_plugin *p)
{
        return relay_route(p, "GET", "/v1/sync/changes", get_changes, RELAY_AUTH_TENANT);
}
