/* storage.h - the storage driver and the connections of each thread. */
#ifndef RELAY_STORAGE_H
#define RELAY_STORAGE_H

#include <stdbool.h>
#include "relay/driver.h"
#include "config_file.h"

struct relay_db {
        const relay_storage_driver *drv;
        relay_driver_conn *conn; /* NULL until first use, or after a failed open */
        int depth;               /* transaction nesting: 0 none, 1 top, >1 savepoints */
        int savepoints;          /* made in the open transaction (storage_tx_full) */
        bool emitted, enqueued;  /* the open transaction wrote events / jobs */
        bool outbox_locked;      /* it holds the outbox's ordering lock (events.c) */
        bool down;               /* the connection was lost; reconnect after down_until */
        bool writer_held;        /* holds the process's SQLite writer mutex (storage.c) */
        uint64_t down_until_ms, backoff_ms;
        char err[512];
};

/* Declares the [storage], [events] and [jobs] keys. */
int storage_declare(conf *c, const char *driver_dir);
/* Loads the configured driver (and, unless CHECK_ONLY, opens the control
 * thread's connection).  0, or -1 with ERR. */
int storage_open(bool check_only, char *err, size_t err_len);
void storage_close(void);

/* A new connection handle for a thread (connects on first use). */
relay_db *storage_db_new(void);
void storage_db_free(relay_db *db);
/* The control thread's connection. */
relay_db *storage_control_db(void);
/* Should the open transaction take no more units of work in savepoints?
 * PostgreSQL keeps 64 subtransactions per session in shared memory; past
 * that every session's snapshot checks read pg_subtrans, and the whole
 * database slows down (a dispatcher batch of 200 audit appends, one
 * savepoint each, halved PostgreSQL's throughput).  Batching loops (group
 * commit, the event dispatcher, batched jobs) commit and go on in a new
 * transaction when this says so.  Never on SQLite. */
bool storage_tx_full(relay_db *db);
/* Runs SQL with no parameters, several statements allowed (migrations). */
int storage_script(relay_db *db, const char *sql);
/* The thread is about to wait for I/O: the driver may end what it keeps
 * open between statements (SQLite's shared read transaction). */
void storage_idle(relay_db *db);
/* A request ended: roll back a transaction its handler left open. */
void storage_request_end(relay_db *db, const char *request_id);

#endif
