/* stream.c - GET /v1/audit/stream: the tenant's entries as Server-Sent
 * Events, live, resumable with Last-Event-ID (the entry's seq).
 *
 * The control thread publishes each new entry once (relay_publish) on the
 * channel "audit/<tenant>"; every worker hands it to its streams of that
 * tenant.  A stream remembers the last seq it sent: a message it has seen
 * is skipped, and a gap (it started while entries were in flight, or its
 * worker dropped messages) is filled from the database, so a client sees
 * every entry once and in order.  The control thread finds new entries by
 * comparing audit_heads with what it published, which also picks up
 * entries other daemons of a shared database appended. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "audit.h"

typedef struct stream_state {
        char tenant[64];
        char type[64]; /* ?type= pattern, or "" */
        int64_t last;
} stream_state;

/* Control thread: tenant -> last seq published, and tenants with new
 * entries.  Only tenants with open streams are published. */
static json_t *published, *dirty;
/* Tenants with open streams (tenant -> count), shared with the workers. */
static pthread_mutex_t listeners_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *listeners;

static relay_timer *publish_soon; /* one loop turn after an append */

static void on_publish_soon(relay_plugin *p, void *data)
{
        (void)data;
        relay_timer_stop(publish_soon);
        publish_soon = NULL;
        audit_stream_publish(relay_plugin_db(p), false);
}

/* Called as an entry is appended, inside its transaction: the entries go
 * out on the next turn of the loop, after the commit (the outbox
 * dispatcher and the request flush commit before they return), instead
 * of waiting for the flush timer. */
void audit_stream_mark(const char *tenant)
{
        if (!dirty)
                dirty = json_object();
        json_object_set_new(dirty, tenant, json_true());
        if (!publish_soon)
                publish_soon = relay_timer_start(audit_self, 0, 0, on_publish_soon, NULL);
}

void audit_stream_free(void)
{
        relay_timer_stop(publish_soon);
        publish_soon = NULL;
        json_decref(published), json_decref(dirty);
        published = dirty = NULL;
        pthread_mutex_lock(&listeners_lock);
        json_decref(listeners);
        listeners = NULL;
        pthread_mutex_unlock(&listeners_lock);
}

/* The entry as the API shows it: the hashed body plus its chain links,
 * spliced as text (the body is a JSON object) to avoid a parse per entry. */
char *audit_entry_text(const char *body, const char *prev_hash, const char *hash)
{
        size_t n = strlen(body);
        char *out = malloc(n + 160);
        if (!out || n < 2) {
                free(out);
                return NULL;
        }
        memcpy(out, body, n - 1);
        snprintf(out + n - 1, 160, ",\"hash\":\"%s\",\"prev_hash\":\"%s\"}", hash, prev_hash);
        return out;
}

static void publish_tenant(relay_db *db, const char *tenant, int64_t head)
{
        json_t *last = json_object_get(published, tenant);
        /* First sight of the tenant since streams came: go back a little, so
         * entries appended while a stream was catching up are published
         * too (a stream skips what it has). */
        int64_t from = last ? json_integer_value(last) : (head > 1000 ? head - 1000 : 0);
        while (from < head) {
                relay_db_result *r;
                if (relay_db_query(db, &r,
                                   "SELECT seq, body, prev_hash, hash FROM audit_entries WHERE tenant = ? AND seq > ? "
                                   "ORDER BY seq LIMIT 500",
                                   "si", tenant, from) != RELAY_DB_OK)
                        return;
                char channel[96];
                snprintf(channel, sizeof(channel), "audit/%s", tenant);
                size_t rows = relay_db_rows(r);
                while (relay_db_next(r)) {
                        char id[24],
                                *text = audit_entry_text(relay_db_text(r, 1), relay_db_text(r, 2), relay_db_text(r, 3));
                        from = relay_db_int(r, 0);
                        snprintf(id, sizeof(id), "%lld", (long long)from);
                        relay_message m = {.size = sizeof(m),
                                           .channel = channel,
                                           .event = "audit",
                                           .id = id,
                                           .data = text,
                                           .seq = from};
                        if (text)
                                relay_publish(&m);
                        free(text);
                }
                relay_db_free(r);
                if (rows == 0)
                        break;
        }
        json_object_set_new(published, tenant, json_integer(from));
}

static void listen_change(const char *tenant, int delta)
{
        pthread_mutex_lock(&listeners_lock);
        if (!listeners)
                listeners = json_object();
        json_int_t n = json_integer_value(json_object_get(listeners, tenant)) + delta;
        if (n > 0)
                json_object_set_new(listeners, tenant, json_integer(n));
        else
                json_object_del(listeners, tenant);
        pthread_mutex_unlock(&listeners_lock);
}

/* A copy of the listening tenants' names, for the control thread. */
static json_t *listening(void)
{
        pthread_mutex_lock(&listeners_lock);
        json_t *copy = listeners ? json_copy(listeners) : json_object();
        pthread_mutex_unlock(&listeners_lock);
        return copy;
}

static void publish_head(relay_db *db, const char *tenant)
{
        relay_db_result *r;
        if (relay_db_query(db, &r, "SELECT seq FROM audit_heads WHERE tenant = ?", "s", tenant) == RELAY_DB_OK &&
            relay_db_next(r))
                publish_tenant(db, tenant, relay_db_int(r, 0));
        relay_db_free(r);
}

void audit_stream_publish(relay_db *db, bool all_tenants)
{
        if (!published)
                published = json_object();
        json_t *want = listening();
        const char *tenant;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(published, tmp, tenant, v) if (!json_object_get(want, tenant))
                json_object_del(published, tenant); /* nobody listens: start afresh when someone does */
        json_object_foreach(want, tenant, v) if (all_tenants || (dirty && json_object_get(dirty, tenant)))
                publish_head(db, tenant); /* all: also entries other daemons appended */
        json_decref(want);
        if (dirty)
                json_object_clear(dirty);
}

/* ------------------------------------------------------------ the stream */

static bool wanted(const stream_state *st, const char *text)
{
        if (!st->type[0])
                return true;
        json_t *e = json_loads(text, 0, NULL);
        const char *type = json_string_value(json_object_get(e, "type"));
        bool ok = type && relay_event_matches(st->type, type);
        json_decref(e);
        return ok;
}

static int send_entry(relay_sse *sse, stream_state *st, int64_t seq, const char *text)
{
        char id[24];
        snprintf(id, sizeof(id), "%lld", (long long)seq);
        st->last = seq;
        return wanted(st, text) ? relay_sse_send(sse, "audit", id, text) : RELAY_OK;
}

/* Sends the stored entries after st->last up to UNTIL; false once the
 * stream is gone. */
static bool catch_up(relay_sse *sse, stream_state *st, int64_t until)
{
        relay_db *db = relay_db_of(relay_sse_req(sse));
        for (;;) {
                relay_db_result *r;
                if (relay_db_query(db, &r,
                                   "SELECT seq, body, prev_hash, hash FROM audit_entries WHERE tenant = ? AND seq > ? "
                                   "AND seq <= ? ORDER BY seq LIMIT 500",
                                   "sii", st->tenant, st->last, until) != RELAY_DB_OK)
                        return true; /* the database is away: the live messages still come */
                size_t rows = relay_db_rows(r);
                bool open = true;
                while (open && relay_db_next(r)) {
                        char *text = audit_entry_text(relay_db_text(r, 1), relay_db_text(r, 2), relay_db_text(r, 3));
                        open = text && send_entry(sse, st, relay_db_int(r, 0), text) == RELAY_OK;
                        free(text);
                }
                relay_db_free(r);
                if (!open)
                        return false;
                if (rows < 500)
                        return true;
        }
}

static void on_message(relay_sse *sse, const relay_message *m, void *data)
{
        stream_state *st = data;
        if (m->seq <= st->last)
                return; /* sent already, from the database */
        if (m->seq > st->last + 1) {
                /* a gap (the worker dropped messages, so it is behind):
                 * everything stored, this one included; the published
                 * messages it passes are then skipped at no cost */
                catch_up(sse, st, INT64_MAX);
                return;
        }
        st->last = m->seq;
        if (wanted(st, m->data))
                relay_sse_forward(sse, m); /* the wire form made once for every stream */
}

static void on_close(relay_sse *sse, void *data)
{
        stream_state *st = data;
        listen_change(st->tenant, -1);
        free(st);
}

static bool parse_seq(const char *s, int64_t *out)
{
        if (!s || !*s || strlen(s) > 18)
                return false;
        for (const char *c = s; *c; c++)
                if (*c < '0' || *c > '9')
                        return false;
        *out = strtoll(s, NULL, 10);
        return true;
}

static int head_of(relay_db *db, const char *tenant, int64_t *seq)
{
        relay_db_result *r;
        int rc = relay_db_query(db, &r, "SELECT seq FROM audit_heads WHERE tenant = ?", "s", tenant);
        *seq = rc == RELAY_DB_OK && relay_db_next(r) ? relay_db_int(r, 0) : 0;
        relay_db_free(r);
        return rc;
}

static int get_stream(relay_req *req)
{
        const char *tenant = relay_principal_of(req)->tenant;
        const char *resume = relay_header(req, "Last-Event-ID");
        if (!resume)
                resume = relay_query(req, "last_event_id");
        const char *type = relay_query(req, "type");
        int64_t last = 0;
        if (resume && !parse_seq(resume, &last))
                return relay_error(req, 400, "invalid_last_event_id",
                                   "Last-Event-ID must be the id (a sequence number) of an entry this stream sent");
        if (type && !audit_type_pattern_ok(type))
                return relay_error(req, 400, "invalid_type", "type must be an event type or a pattern like record.*");
        if (!resume) { /* a new client starts at the present */
                int rc = head_of(relay_db_of(req), tenant, &last);
                if (rc != RELAY_DB_OK)
                        return relay_db_reply_error(req, rc);
        }
        stream_state *st = calloc(1, sizeof(*st));
        if (!st)
                return relay_error(req, 503, "unavailable", "out of memory");
        snprintf(st->tenant, sizeof(st->tenant), "%s", tenant);
        snprintf(st->type, sizeof(st->type), "%s", type ? type : "");
        st->last = last;
        relay_sse *sse = relay_sse_start(req);
        if (!sse) {
                free(st);
                return RELAY_ERR;
        }
        listen_change(tenant, +1);
        relay_sse_on_close(sse, on_close, st);
        char channel[96];
        snprintf(channel, sizeof(channel), "audit/%s", tenant);
        relay_sse_subscribe(sse, channel, on_message, st);      /* before the catch-up: nothing falls between */
        if (relay_sse_comment(sse, "audit stream") == RELAY_OK) /* else: closed, ST freed */
                catch_up(sse, st, INT64_MAX);
        return RELAY_ASYNC;
}

int audit_stream_register(relay_plugin *p)
{
        return relay_route_role(p, "GET", "/v1/audit/stream", get_stream, "admin");
}
