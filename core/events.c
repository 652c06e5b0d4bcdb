/* events.c - the transactional outbox (relay/events.h).
 *
 * relay_event_emit() inserts into relay_events with the caller's
 * connection, so the event commits or rolls back with the change.  On
 * PostgreSQL it first takes a transaction-scoped advisory lock: sequence
 * numbers are handed out at insert time, and without the lock a later
 * number could commit first and a reader past it would never see the
 * earlier one.  SQLite has one writer at a time, so commit order is
 * sequence order already.
 *
 * The dispatcher runs on the control thread: woken when a local
 * transaction with events commits, and every [events] poll_interval for
 * other daemons' events.  Each subscription stores the last sequence it
 * handled (relay_event_cursors), so delivery resumes after a restart. */
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "events_internal.h"
#include "log.h"
#include "settings.h"
#include "storage.h"

#define OUTBOX_LOCK "727001"

typedef struct subscription {
        struct subscription *next;
        relay_plugin *plugin;
        char *name, *pattern;
        relay_event_fn fn;
        void *data;
        int64_t cursor;    /* last sequence handled */
        int64_t saved;     /* the cursor as relay_event_cursors holds it */
        uint64_t save_at;  /* loop time from which a cursor moved by skipping is stored */
        bool loaded;       /* cursor read from the database */
        uint64_t retry_at; /* loop time before which a refused event waits */
        char *sql;         /* this subscription's read: its pattern in the WHERE */
        char *key;         /* ... and the value it compares with (NULL: every event) */
} subscription;

static subscription *subs;
static uv_async_t kick;
static uv_timer_t poll_timer;
static bool started;

/* Reads PATTERN: "*" matches every type, "a.b.*" every type beginning
 * "a.b." (its length, with the dot, in *PREFIX), anything else itself. */
typedef enum { MATCH_ALL, MATCH_PREFIX, MATCH_EXACT } match_kind;

static match_kind pattern_kind(const char *pattern, size_t *prefix)
{
        size_t n = strlen(pattern);
        *prefix = n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '.' ? n - 1 : 0;
        return strcmp(pattern, "*") == 0 ? MATCH_ALL : *prefix ? MATCH_PREFIX : MATCH_EXACT;
}

RELAY_API int relay_event_matches(const char *pattern, const char *type)
{
        if (!pattern || !type)
                return 0;
        size_t prefix;
        switch (pattern_kind(pattern, &prefix)) {
        case MATCH_ALL: return 1;
        case MATCH_PREFIX: return strncmp(pattern, type, prefix) == 0;
        default: return strcmp(pattern, type) == 0;
        }
}

/* The ordering lock, once per transaction (a round trip saved for every
 * further event or record of a group).  PostgreSQL only. */
static int outbox_lock(relay_db *db)
{
        if (db->outbox_locked || strcmp(relay_db_dialect(db), "pgsql") != 0)
                return RELAY_DB_OK;
        int rc = relay_db_exec(db, NULL, "SELECT pg_advisory_xact_lock(" OUTBOX_LOCK ")", "");
        db->outbox_locked = rc == RELAY_DB_OK;
        return rc;
}

/* SQLite carries out RETURNING through a temporary table opened and
 * dropped for each statement, which made the event's insert cost twice
 * the record's; its connection knows the new rowid anyway. */
static int insert_event(relay_db *db, const char *id, const char *tenant, const char *type, json_t *payload,
                        int64_t *seq)
{
        relay_db_result *r = NULL;
        int rc;
        if (strcmp(relay_db_dialect(db), "sqlite") == 0) {
                rc = relay_db_exec(
                        db, NULL,
                        "INSERT INTO relay_events (id, tenant, type, payload, created_ms) VALUES (?, ?, ?, ?, ?)",
                        "sssji", id, tenant, type, payload, relay_now_ms());
                if (rc == RELAY_DB_OK)
                        rc = relay_db_query(db, &r, "SELECT last_insert_rowid()", "");
        } else {
                rc = relay_db_query(db, &r,
                                    "INSERT INTO relay_events (id, tenant, type, payload, created_ms)"
                                    " VALUES (?, ?, ?, ?, ?) RETURNING seq",
                                    "sssji", id, tenant, type, payload, relay_now_ms());
        }
        *seq = rc == RELAY_DB_OK && relay_db_next(r) ? relay_db_int(r, 0) : 0;
        relay_db_free(r);
        return rc;
}

RELAY_API int relay_event_emit_ex(relay_db *db, const char *tenant, const char *type, json_t *payload, char *id_out,
                                  int64_t *seq_out)
{
        char id[40];
        relay_id_new("evt_", id, sizeof(id));
        if (!type || !*type) {
                json_decref(payload);
                return RELAY_DB_ERROR;
        }
        if (!payload)
                payload = json_object(); /* subscribers always get an object */
        bool own = !relay_db_in_transaction(db);
        int rc = own ? relay_db_begin(db) : RELAY_DB_OK;
        if (rc == RELAY_DB_OK)
                rc = outbox_lock(db);
        int64_t seq = 0;
        if (rc == RELAY_DB_OK)
                rc = insert_event(db, id, tenant, type, payload, &seq);
        json_decref(payload);
        if (rc == RELAY_DB_OK)
                db->emitted = true;
        if (own)
                rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc == RELAY_DB_OK && id_out)
                memcpy(id_out, id, strlen(id) + 1);
        if (rc == RELAY_DB_OK && seq_out)
                *seq_out = seq;
        return rc;
}

RELAY_API int relay_event_order_lock(relay_db *db)
{
        if (!relay_db_in_transaction(db))
                return RELAY_DB_ERROR;
        return outbox_lock(db);
}

RELAY_API int relay_event_emit(relay_db *db, const char *tenant, const char *type, json_t *payload, char *id_out)
{
        return relay_event_emit_ex(db, tenant, type, payload, id_out, NULL);
}

/* A subscription's read: the events past its cursor that match its
 * pattern (the database skips the others, payloads and all), beside the
 * highest sequence number there is, from the same snapshot.  Every
 * sequence number up to that one has committed or never will (the
 * ordering lock on PostgreSQL, the one writer on SQLite), so a read that
 * was not cut short lets the cursor pass the events it skipped.  Sets
 * S->sql, and S->key, the value its WHERE compares with (none for "*").
 * substr counts characters, so a prefix is given its length in them. */
static int read_query(subscription *s)
{
        char filter[64] = "";
        size_t prefix, chars = 0;
        match_kind kind = pattern_kind(s->pattern, &prefix);
        for (size_t i = 0; i < prefix; i++)
                chars += ((unsigned char)s->pattern[i] & 0xC0) != 0x80; /* UTF-8 lead bytes */
        if (kind == MATCH_PREFIX)
                snprintf(filter, sizeof(filter), " AND substr(type, 1, %zu) = ?", chars);
        else if (kind == MATCH_EXACT)
                snprintf(filter, sizeof(filter), " AND type = ?");
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT m.top, e.seq, e.id, e.tenant, e.type, e.payload, e.created_ms"
                 " FROM (SELECT COALESCE(MAX(seq), 0) AS top FROM relay_events) m LEFT JOIN"
                 " (SELECT seq, id, tenant, type, payload, created_ms FROM relay_events WHERE seq > ?%s"
                 " ORDER BY seq LIMIT ?) e ON 1 = 1 ORDER BY e.seq",
                 filter);
        s->sql = strdup(sql);
        s->key = kind == MATCH_ALL ? NULL : kind == MATCH_PREFIX ? strndup(s->pattern, prefix) : strdup(s->pattern);
        return s->sql && (s->key || kind == MATCH_ALL) ? RELAY_OK : RELAY_ERR;
}

RELAY_API int relay_event_subscribe(relay_plugin *p, const char *name, const char *pattern, relay_event_fn fn,
                                    void *data)
{
        if (relay_daemon.initialising != p || !name || !pattern || !fn)
                return RELAY_ERR;
        subscription *s = calloc(1, sizeof(*s));
        if (!s)
                return RELAY_ERR;
        size_t n = strlen(p->name) + strlen(name) + 2;
        s->name = malloc(n);
        s->pattern = strdup(pattern);
        if (!s->name || !s->pattern || read_query(s) != RELAY_OK) {
                free(s->name), free(s->pattern), free(s->sql), free(s->key), free(s);
                return RELAY_ERR;
        }
        snprintf(s->name, n, "%s/%s", p->name, name); /* cursors are per plugin */
        s->plugin = p;
        s->fn = fn;
        s->data = data;
        subscription **tail = &subs;
        while (*tail)
                tail = &(*tail)->next;
        *tail = s;
        return RELAY_OK;
}

/* ------------------------------------------------------------ dispatching */

static int load_cursor(relay_db *db, subscription *s)
{
        relay_db_result *r;
        int rc = relay_db_query(db, &r, "SELECT seq FROM relay_event_cursors WHERE name = ?", "s", s->name);
        if (rc != RELAY_DB_OK)
                return rc;
        if (relay_db_next(r)) {
                s->cursor = relay_db_int(r, 0);
        } else {
                /* A new subscriber starts at the present, not at the beginning of time. */
                relay_db_result *m;
                rc = relay_db_query(db, &m, "SELECT COALESCE(MAX(seq), 0) FROM relay_events", "");
                s->cursor = rc == RELAY_DB_OK && relay_db_next(m) ? relay_db_int(m, 0) : 0;
                relay_db_free(m);
                if (rc == RELAY_DB_OK)
                        rc = relay_db_exec(db, NULL, "INSERT INTO relay_event_cursors (name, seq) VALUES (?, ?)", "si",
                                           s->name, s->cursor);
        }
        relay_db_free(r);
        s->loaded = rc == RELAY_DB_OK;
        s->saved = s->cursor;
        return rc;
}

static int save_cursor(relay_db *db, subscription *s)
{
        return relay_db_exec(db, NULL, "UPDATE relay_event_cursors SET seq = ? WHERE name = ?", "is", s->cursor,
                             s->name);
}

/* How long a cursor moved only by skipping other events' types may wait
 * to be stored: after a restart those events are read and skipped again,
 * nothing more, so they need not cost a write on every pass. */
#define SKIPPED_SAVE_MS 1000

static int read_batch(relay_db *db, subscription *s, int64_t batch, relay_db_result **r)
{
        if (s->key)
                return relay_db_query(db, r, s->sql, "isi", s->cursor, s->key, batch);
        return relay_db_query(db, r, s->sql, "ii", s->cursor, batch);
}

/* One batch for one subscription; true when it should run again at once. */
static bool deliver_batch(relay_db *db, subscription *s, uint64_t now)
{
        settings *set = settings_current();
        int64_t batch = conf_get_int(set->cfg, "events", "batch");
        if (now < s->retry_at || (!s->loaded && load_cursor(db, s) != RELAY_DB_OK))
                return false;
        relay_db_result *r;
        if (read_batch(db, s, batch, &r) != RELAY_DB_OK)
                return false;
        int64_t start = s->cursor, top = 0, rows = 0;
        /* One transaction for the batch: what the subscriber writes for each
         * event (in a savepoint of its own) and the new position commit
         * together, so a crash cannot replay an event whose effects are
         * stored, and a batch costs one commit, not one per event.  It
         * begins at the first event: a read that matched none (its one row
         * carries only the top) needs no transaction. */
        bool tx = false;
        bool cut = false; /* stopped early: the rest of the rows come in the next batch */
        bool refused = false;
        while (relay_db_next(r)) {
                top = relay_db_int(r, 0);
                if (relay_db_is_null(r, 1))
                        continue;
                if (rows++ == 0)
                        tx = relay_db_begin(db) == RELAY_DB_OK;
                if (tx && storage_tx_full(db)) {
                        cut = true;
                        break;
                }
                json_t *payload = relay_db_json(r, 5);
                relay_event ev = {.size = sizeof(ev),
                                  .seq = relay_db_int(r, 1),
                                  .id = relay_db_text(r, 2),
                                  .tenant = relay_db_text(r, 3),
                                  .type = relay_db_text(r, 4),
                                  .payload = payload,
                                  .created_ms = relay_db_int(r, 6)};
                bool sp = tx && relay_db_begin(db) == RELAY_DB_OK;
                int ok = s->fn(s->plugin, &ev, s->data);
                json_decref(payload);
                if (sp)
                        ok = ok == RELAY_OK && relay_db_commit(db) == RELAY_DB_OK ? RELAY_OK
                                                                                  : (relay_db_rollback(db), RELAY_ERR);
                if (ok != RELAY_OK) {
                        s->retry_at = now + conf_get_duration_ms(set->cfg, "events", "retry_delay");
                        refused = true;
                        break;
                }
                s->cursor = relay_db_int(r, 1);
        }
        bool full = (cut || rows == batch) && s->retry_at <= now;
        relay_db_free(r);
        /* read to the end: the events it skipped are behind the cursor too */
        if (!cut && !refused && rows < batch && top > s->cursor)
                s->cursor = top;
        /* after handled events the position is stored with their effects;
         * moved only by skipping, at most every SKIPPED_SAVE_MS */
        int rc = RELAY_DB_OK;
        bool save = s->cursor != s->saved && (rows > 0 || now >= s->save_at);
        if (save) {
                rc = save_cursor(db, s);
                s->save_at = now + SKIPPED_SAVE_MS;
        }
        if (tx && relay_db_in_transaction(db))
                rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc == RELAY_DB_OK) {
                if (save)
                        s->saved = s->cursor;
        } else {
                log_warn("events: cannot store the position of %s: %s", s->name, relay_db_errmsg(db));
                if (tx) { /* nothing of the batch was kept: deliver it again */
                        s->cursor = start;
                        s->retry_at = now + conf_get_duration_ms(set->cfg, "events", "retry_delay");
                        return false;
                }
        }
        return full;
}

RELAY_API bool relay_event_settled(int64_t seq)
{
        for (subscription *s = subs; s; s = s->next)
                if (!s->loaded || s->cursor < seq)
                        return false;
        return true;
}

/* How long one pass may keep the control loop: a subscriber that has
 * fallen behind (thousands of events, each a database round trip) must
 * not starve the timers, job handlers and outbound requests that share
 * the thread; the pass stops and comes back on the next loop turn. */
#define DISPATCH_BUDGET_NS (20 * 1000 * 1000)

static void dispatch(void)
{
        relay_db *db = storage_control_db();
        uint64_t now = uv_now(relay_daemon.loop), start = uv_hrtime();
        bool more = false;
        for (subscription *s = subs; s; s = s->next) {
                /* every subscriber gets a batch per pass, then the rest of the budget */
                bool again = deliver_batch(db, s, now);
                for (int rounds = 1; again && rounds < 50 && uv_hrtime() - start < DISPATCH_BUDGET_NS; rounds++)
                        again = deliver_batch(db, s, now);
                more = more || again;
        }
        if (more)
                events_kick();
}

static void on_kick(uv_async_t *a) { dispatch(); }

static void on_poll(uv_timer_t *t) { dispatch(); }

void events_kick(void)
{
        if (started)
                uv_async_send(&kick);
}

int events_start(void)
{
        if (!subs)
                return 0;
        /* Positions are read now, before any worker runs: a new subscriber
         * starts at the present, and no event of this run may slip before it. */
        for (subscription *s = subs; s; s = s->next)
                if (load_cursor(storage_control_db(), s) != RELAY_DB_OK)
                        log_warn("events: cannot read the position of %s: %s", s->name,
                                 relay_db_errmsg(storage_control_db()));
        uint64_t every = conf_get_duration_ms(settings_current()->cfg, "events", "poll_interval");
        uv_async_init(relay_daemon.loop, &kick, on_kick);
        uv_timer_init(relay_daemon.loop, &poll_timer);
        uv_timer_start(&poll_timer, on_poll, 0, every ? every : 1000);
        started = true;
        return 0;
}

void events_stop(void)
{
        if (!started)
                return;
        started = false;
        uv_close((uv_handle_t *)&kick, NULL);
        uv_close((uv_handle_t *)&poll_timer, NULL);
}

void events_free(void)
{
        for (subscription *s = subs, *n; s; s = n) {
                n = s->next;
                free(s->name), free(s->pattern), free(s->sql), free(s->key), free(s);
        }
        subs = NULL;
}
