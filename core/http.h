/* http.h - connections and requests on a worker (internal).
 *
 * A connection owns at most one request at a time.  Pipelined requests wait
 * in the parser: when a handler goes asynchronous (relay_work, SSE) the
 * parser pauses, unparsed bytes are kept, and reading stops until the reply
 * is done.  An idle keep-alive connection holds no buffers at all. */
#ifndef RELAY_HTTP_H
#define RELAY_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <llhttp.h>
#include <uv.h>
#include "arena.h"
#include "buf.h"
#include "router.h"
#include "relay/plugin.h"

typedef struct worker worker;
typedef struct conn conn;

typedef enum {
        CONN_IDLE = 0,  /* between requests */
        CONN_HEADERS,   /* receiving a request line and headers */
        CONN_BODY,      /* receiving a body */
        CONN_HANDLING,  /* a handler runs or works asynchronously */
        CONN_STREAMING, /* an SSE response is open */
        CONN_CLOSING    /* replies written or being written; then close */
} conn_state;

struct conn {
        uv_tcp_t tcp; /* tcp.data == this */
        llhttp_t parser;
        worker *w;
        conn *prev, *next; /* the worker's list, for timeouts and draining */
        relay_req *req;
        buf out;       /* reply bytes not yet handed to libuv */
        char *pending; /* bytes received while paused */
        size_t pending_len;
        uint64_t deadline;   /* loop time (ms) at which the state times out; 0: none */
        size_t write_queued; /* bytes in uv_write requests in flight */
        int refs;            /* the handle, plus one while async work runs */
        uint8_t state;
        bool paused : 1;        /* parser paused for an async reply */
        bool write_blocked : 1; /* parser paused: the client is not reading its answers */
        bool reading : 1;
        bool close_after : 1; /* close once the current reply is out */
        bool gone : 1;        /* the peer went away or the handle is closing */
        bool shutting : 1;    /* uv_shutdown sent; discarding input until EOF */
        bool linger : 1;      /* close with shutdown + drain, not at once */
        bool upgrade : 1;
        bool flush_later : 1; /* SSE bytes queued during a publish drain (publish.c) */
};

typedef struct sse_sub sse_sub;

struct relay_sse {
        relay_req *req;
        sse_sub *subs; /* relay_sse_subscribe (publish.c) */
        relay_sse_close_fn on_close;
        void *on_close_data;
        uint64_t last_send; /* loop time (ms) */
        bool open;
        bool chunked;
};

typedef struct header {
        const char *name, *value;
} header;

struct relay_req {
        relay_req *next_free;
        conn *c;
        worker *w;
        arena mem;
        buf scratch; /* the URL or header piece being received */
        const char *cur_field;

        /* what came in */
        const char *method;
        const char *target;
        const char *path;
        const char *query; /* raw, after '?', or NULL */
        char **segments;
        int n_segments;
        header *headers;
        int n_headers, cap_headers;
        size_t header_bytes;
        buf body;
        json_t *json;
        json_t *kept; /* other JSON the request owns (cursor states) */
        bool head, expect_continue;
        int error_status; /* set by a parser callback before it fails */

        /* where it went */
        const route *route;
        const char *params[ROUTER_MAX_PARAMS];
        relay_plugin *plugin;
        relay_principal principal;
        bool has_principal, authn_done;

        /* what goes out */
        buf out_headers; /* "Name: value\r\n"... */
        int status;
        size_t bytes_out;
        bool replied, async, work_pending;
        bool in_handler; /* the plugin's handler is on the stack */
        relay_sse sse;
        char id[72]; /* up to 64 characters from the client, or 20 of ours */
        uint64_t start_ns;
};

/* conn.c */
void conn_accept(worker *w, uv_stream_t *server);
/* Test seam (tests/fuzz): a connection of W on a connected socket FD. */
int relay__conn_open(worker *w, uv_os_sock_t fd);
void conn_flush(conn *c);
void conn_close(conn *c);
void conn_ref(conn *c);
void conn_unref(conn *c);
void conn_sweep(worker *w, uint64_t now);
void conn_drain(conn *c);
/* The async reply of C's request is complete: carry on with pipelined input. */
void conn_request_done(conn *c);

/* request.c */
relay_req *req_acquire(worker *w, conn *c);
void req_release(relay_req *req);
/* An asynchronous step of REQ returned RC (work.c): wait for the next step,
 * or finish the request (a 500 if nothing replied) and go on with the
 * connection.  Drops the reference the step held. */
void req_resume(relay_req *req, int rc);
/* Hands J (a new reference) to REQ, which frees it when it ends; returns J. */
json_t *req_keep(relay_req *req, json_t *j);
int req_parse_target(relay_req *req);
void req_dispatch(relay_req *req);
/* Log, count, and return the request to the pool (sync replies). */
void req_finish(relay_req *req);
const char *req_header(relay_req *req, const char *name);
const char *req_id(relay_req *req);

/* response.c */
/* Writes status line, standard headers and the handler's headers into the
 * connection's output.  LEN < 0: chunked (streams). */
void response_head(relay_req *req, int status, const char *content_type, int64_t len);
int response_send(relay_req *req, int status, const char *content_type, const void *body, size_t len);
/* A core error (404, 413...) in STYLE, for requests no plugin owns. */
int response_error_styled(relay_req *req, relay_error_style_t style, int status, const char *code, const char *message,
                          json_t *extra);
/* An error answered straight on the connection when the parser failed. */
void response_protocol_error(conn *c, int status, const char *message);
const char *status_reason(int status);

/* sse.c */
void sse_closed(relay_sse *sse);
/* Appends one event's wire form (event:, id:, data: lines) to B. */
void sse_format(buf *b, const char *event, const char *id, const char *data);
/* Queues FRAME (already formatted) on the stream. */
int sse_send_frame(relay_sse *sse, const char *frame, size_t len);
void sse_heartbeat(relay_sse *sse, uint64_t now, uint64_t interval);

#endif
