/* group.c - group commit (relay_db_group in relay/db.h).
 *
 * A commit costs a disk flush (PostgreSQL's WAL, SQLite's journal) and,
 * for changes that emit events, a turn at the outbox lock.  Changes that
 * arrive on the same worker in the same turn of its event loop are
 * therefore run in one transaction, one savepoint each, and committed
 * once; their requests are answered after that commit.  The loop's check
 * phase (right after it has read everything that was ready) is the turn's
 * end, so a change never waits for more traffic: a lone request is
 * committed at once, a busy worker commits many at a time. */
#include <stdlib.h>
#include "http.h"
#include "log.h"
#include "storage.h"
#include "worker.h"

/* Most changes in one transaction; a longer queue takes several. */
#define GROUP_MAX 128

typedef struct group_entry {
        struct group_entry *next;
        relay_req *req;
        relay_db_group_fn fn;
        relay_db_group_done_fn done;
        void *data;
        int status;
} group_entry;

/* Runs one change in its savepoint; its status. */
static int run_one(relay_db *db, group_entry *e)
{
        int depth = db->depth;
        int rc = relay_db_begin(db);
        if (rc != RELAY_DB_OK)
                return rc;
        rc = e->fn(e->req, db, e->data);
        while (db->depth > depth + 1) /* a savepoint FN left open */
                relay_db_rollback(db);
        if (rc == RELAY_DB_OK)
                return relay_db_commit(db);
        relay_db_rollback(db);
        return rc;
}

/* Runs up to GROUP_MAX entries from *LIST in one transaction (fewer when
 * PostgreSQL's subtransactions run short: storage_tx_full); returns the
 * first entry not run. */
static group_entry *run_batch(relay_db *db, group_entry *list)
{
        group_entry *e = list;
        int rc = relay_db_begin(db);
        int n = 0;
        for (; e && n < GROUP_MAX && !storage_tx_full(db); e = e->next, n++)
                e->status = rc == RELAY_DB_OK ? run_one(db, e) : rc;
        if (rc == RELAY_DB_OK) {
                int commit = relay_db_commit(db);
                for (group_entry *d = list; d != e; d = d->next)
                        if (d->status == RELAY_DB_OK)
                                d->status = commit;
        }
        return e;
}

static void answer(group_entry *list, group_entry *end)
{
        for (group_entry *e = list, *next; e != end; e = next) {
                next = e->next;
                relay_req *req = e->req;
                req->work_pending = false;
                int rc = e->done(req, e->status, e->data);
                free(e);
                req_resume(req, rc);
        }
}

static void on_check(uv_check_t *h)
{
        worker *w = h->data;
        group_entry *list = w->group_head;
        w->group_head = NULL;
        w->group_tail = &w->group_head;
        uv_check_stop(h);
        relay_db *db = w->db;
        while (list) {
                group_entry *rest = run_batch(db, list);
                answer(list, rest);
                list = rest;
        }
}

RELAY_API int relay_db_group(relay_req *req, relay_db_group_fn fn, relay_db_group_done_fn done, void *data)
{
        if (!req || !req->c || req->replied || req->work_pending || !fn || !done)
                return RELAY_ERR;
        worker *w = req->w;
        if (!relay_db_of(req))
                return RELAY_ERR;
        group_entry *e = calloc(1, sizeof(*e));
        if (!e)
                return RELAY_ERR;
        e->req = req, e->fn = fn, e->done = done, e->data = data;
        if (!w->group_ready) {
                uv_check_init(&w->loop, &w->group_check);
                w->group_check.data = w;
                w->group_tail = &w->group_head;
                w->group_ready = true;
        }
        if (!w->group_head)
                uv_check_start(&w->group_check, on_check);
        *w->group_tail = e;
        w->group_tail = &e->next;
        req->work_pending = true;
        req->async = true;
        conn_ref(req->c);
        return RELAY_OK;
}
