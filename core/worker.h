/* worker.h - a worker thread: its own libuv loop, its own listening
 * sockets (SO_REUSEPORT spreads connections), its own connections. */
#ifndef RELAY_WORKER_H
#define RELAY_WORKER_H

#include <stdbool.h>
#include <uv.h>
#include "buf.h"
#include "http.h"
#include "metrics.h"

#define WORKER_READ_BUF 65536

struct worker {
        int index;
        uv_loop_t loop;
        uv_thread_t thread;
        uv_async_t wake; /* control thread -> worker: drain, stop */
        uv_timer_t sweep;
        uv_prepare_t idle; /* before each wait for I/O: storage_idle */
        uv_tcp_t *listeners;
        size_t n_listeners;
        conn *conns; /* list head */
        size_t n_conns;
        relay_req *free_reqs;
        size_t n_free_reqs;
        int wake_flags; /* atomic WAKE_* */
        bool draining;

        char read_buf[WORKER_READ_BUF]; /* shared by all reads: parsed at once */
        char date[40];                  /* "Date: ...\r\n" */
        int64_t date_sec;
        uint32_t id_prefix;
        uint64_t id_counter;
        buf reply;         /* relay_reply_json's scratch, reused reply after reply */
        char *health_body; /* cached GET / document */
        size_t health_len;
        uint64_t health_at;
        worker_metrics metrics;
        struct relay_db *db; /* this worker's storage connection, opened on first use */
        /* group commit (group.c): changes waiting for this loop iteration's transaction */
        struct group_entry *group_head, **group_tail;
        uv_check_t group_check;
        bool group_ready;
        /* relay_publish (publish.c): inbox filled by any thread, drained here */
        uv_mutex_t pub_lock;
        struct pub_item *pub_head, *pub_tail;
        size_t pub_n;
        struct sse_sub *pub_subs; /* streams of this worker, by subscription */
        bool pub_subs_any;        /* atomic: is pub_subs non-empty? */
        bool pub_draining;
};

enum { WAKE_DRAIN = 1, WAKE_FORCE = 2, WAKE_PUBLISH = 4 };

/* Binds the listening sockets (FDS: one per listen address, already bound
 * by the control thread for worker 0; others bind their own with
 * SO_REUSEPORT) and starts the thread. */
int worker_start(worker *w, int index, const int *fds, size_t n_fds, char *err, size_t err_len);
void worker_wake(worker *w, int flag);
void worker_join(worker *w);
void worker_free(worker *w);
const char *worker_date_header(worker *w);
void worker_conn_link(worker *w, conn *c);
void worker_conn_unlink(worker *w, conn *c);

#endif
