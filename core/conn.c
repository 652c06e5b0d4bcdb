/* conn.c - one HTTP/1.1 connection: reading, parsing with llhttp, limits,
 * timeouts, writing, pipelining and closing.
 *
 * Reads land in the worker's shared buffer and are parsed at once; every
 * string the request keeps is copied into its arena, so nothing points into
 * the read buffer after read_cb returns. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "settings.h"
#include "worker.h"

#define LINGER_MS 2000
#define BACKPRESSURE_BYTES (256 * 1024)
#define PENDING_MAX (64 * 1024) /* pipelined bytes held while a reply is async */

static const llhttp_settings_t *parser_settings(void);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

/* ------------------------------------------------------------------ writing */

typedef struct write_req {
        uv_write_t req;
        conn *c;
        buf data;
} write_req;

static void start_reading(conn *c);
static void finish_close(conn *c);
static void close_now_or_linger(conn *c);

static void on_write(uv_write_t *wr, int status)
{
        write_req *r = (write_req *)wr;
        conn *c = r->c;
        c->write_queued -= r->data.len;
        buf_free(&r->data);
        free(r);
        if (status < 0 && !c->gone) {
                conn_close(c);
        } else if (c->write_queued == 0 && c->state == CONN_CLOSING && !c->out.len) {
                close_now_or_linger(c);
        } else if (c->write_blocked && c->write_queued < BACKPRESSURE_BYTES) {
                c->write_blocked = false; /* it reads again: parse what it sent */
                conn_request_done(c);
        } else if (!c->reading && !c->paused && c->write_queued < BACKPRESSURE_BYTES && c->state != CONN_CLOSING) {
                start_reading(c);
        }
        conn_unref(c);
}

void conn_flush(conn *c)
{
        if (c->gone || !c->out.len)
                return;
        if (c->write_queued == 0) {
                uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
                int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
                if (n > 0)
                        buf_consume(&c->out, (size_t)n);
                else if (n < 0 && n != UV_EAGAIN) {
                        buf_reset(&c->out);
                        conn_close(c);
                        return;
                }
                if (!c->out.len) {
                        if (c->out.cap > 16384) /* keep idle connections small */
                                buf_free(&c->out);
                        return;
                }
        }
        write_req *r = malloc(sizeof(*r));
        if (!r) {
                conn_close(c);
                return;
        }
        r->c = c;
        r->data = c->out; /* hand the bytes over, no copy */
        memset(&c->out, 0, sizeof(c->out));
        c->write_queued += r->data.len;
        uv_buf_t b = uv_buf_init(r->data.data, (unsigned)r->data.len);
        c->refs++;
        if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
                c->write_queued -= r->data.len;
                buf_free(&r->data);
                free(r);
                c->refs--;
                conn_close(c);
                return;
        }
        if (c->write_queued >= BACKPRESSURE_BYTES && c->reading) {
                uv_read_stop((uv_stream_t *)&c->tcp);
                c->reading = false;
        }
}

/* ------------------------------------------------------------ open / close */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
        conn *c = h->data;
        *b = uv_buf_init(c->w->read_buf, sizeof(c->w->read_buf));
}

static void start_reading(conn *c)
{
        if (c->reading || c->gone)
                return;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
                c->reading = true;
}

static void conn_free(conn *c)
{
        buf_free(&c->out);
        free(c->pending);
        free(c);
}

void conn_ref(conn *c) { c->refs++; }

void conn_unref(conn *c)
{
        if (--c->refs == 0)
                conn_free(c);
}

static void on_close(uv_handle_t *h)
{
        conn *c = h->data;
        worker_conn_unlink(c->w, c);
        metrics_connection(&c->w->metrics, -1);
        __atomic_sub_fetch(&relay_daemon.connections, 1, __ATOMIC_RELAXED);
        conn_unref(c);
}

/* Closes now, whatever is unsent.  A request still working asynchronously
 * keeps the memory until its reply arrives (and is dropped). */
void conn_close(conn *c)
{
        if (c->gone)
                return;
        c->gone = true;
        c->reading = false;
        relay_req *req = c->req;
        if (req) {
                if (req->sse.open)
                        sse_closed(&req->sse);
                if (!req->work_pending && !req->in_handler) {
                        c->req = NULL;
                        req_release(req);
                }
        }
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
        conn *c = s->data;
        free(s);
        if (status < 0)
                conn_close(c);
        conn_unref(c);
}

/* All replies written: send FIN, then read and drop what the client still
 * sends until it closes or LINGER_MS pass.  Closing at once could reset the
 * connection before the client reads our reply (an early 413, say). */
static void finish_close(conn *c)
{
        if (c->gone || c->shutting)
                return;
        uv_shutdown_t *s = malloc(sizeof(*s));
        if (!s) {
                conn_close(c);
                return;
        }
        s->data = c;
        c->refs++;
        if (uv_shutdown(s, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
                free(s);
                c->refs--;
                conn_close(c);
                return;
        }
        c->shutting = true;
        c->paused = false;
        c->deadline = uv_now(&c->w->loop) + LINGER_MS;
        start_reading(c);
}

/* After the last reply: a client that may still be sending (an error
 * cut its request short, or it pipelined more) gets a lingering close so
 * it reads our reply before any reset; others are closed at once, which
 * spares Connection: close traffic a round trip. */
static void close_now_or_linger(conn *c)
{
        if (c->linger)
                finish_close(c);
        else
                conn_close(c);
}

/* Stop parsing; close once what is queued has been written. */
static void close_after_flush(conn *c)
{
        c->state = CONN_CLOSING;
        conn_flush(c);
        if (!c->gone && c->write_queued == 0 && !c->out.len)
                close_now_or_linger(c);
}

static conn *conn_new(worker *w)
{
        conn *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->w = w;
        c->refs = 1;
        uv_tcp_init(&w->loop, &c->tcp);
        c->tcp.data = c;
        return c;
}

/* A connected socket becomes a connection served by W. */
static void conn_start(worker *w, conn *c)
{
        settings *s = settings_current();
        int64_t open = __atomic_add_fetch(&relay_daemon.connections, 1, __ATOMIC_RELAXED);
        worker_conn_link(w, c);
        metrics_connection(&w->metrics, 1);
        llhttp_init(&c->parser, HTTP_REQUEST, parser_settings());
        c->parser.data = c;
        if (open > s->max_connections || w->draining) {
                /* Over the limit: say so plainly, in the usual shape, and hang up. */
                c->linger = true;
                response_protocol_error(c, 503, "too many connections");
                close_after_flush(c);
                return;
        }
        uv_tcp_nodelay(&c->tcp, 1);
        c->state = CONN_IDLE;
        c->deadline = uv_now(&w->loop) + s->header_timeout_ms;
        start_reading(c);
}

void conn_accept(worker *w, uv_stream_t *server)
{
        conn *c = conn_new(w);
        if (!c)
                return;
        if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
                c->gone = true;
                uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
                return;
        }
        conn_start(w, c);
}

/* Test seam for the fuzz targets in tests/fuzz (docs/decisions/0009): FD, a
 * connected stream socket (one end of a socketpair), becomes a connection of
 * W exactly as an accepted client does, so a harness drives the real
 * reading, parsing, limits, routing, handlers and writing from the other end
 * without a listener or a worker thread.  The daemon never calls it; it is
 * not in the SDK headers and, like every internal function, hidden in
 * librelay.so outside the fuzzing build.  0, or a libuv error (FD is then
 * still the caller's to close). */
int relay__conn_open(worker *w, uv_os_sock_t fd)
{
        conn *c = conn_new(w);
        if (!c)
                return UV_ENOMEM;
        int rc = uv_tcp_open(&c->tcp, fd);
        if (rc != 0) {
                c->gone = true;
                uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
                return rc;
        }
        conn_start(w, c);
        return 0;
}

/* Graceful shutdown: idle connections close now, busy ones after their reply. */
void conn_drain(conn *c)
{
        if (c->gone)
                return;
        if (c->state == CONN_IDLE && !c->req)
                close_after_flush(c);
        else
                c->close_after = true;
        if (c->req && c->req->sse.open)
                relay_sse_end(&c->req->sse);
}

/* ------------------------------------------------------------------ parsing */

static void feed(conn *c, const char *data, size_t len);

/* Saves what the parser has not consumed, to go on after an async reply. */
static void keep_pending(conn *c, const char *from, const char *end)
{
        size_t n = (size_t)(end - from);
        if (!n)
                return;
        char *p = realloc(c->pending, c->pending_len + n);
        if (!p) {
                conn_close(c);
                return;
        }
        memcpy(p + c->pending_len, from, n);
        c->pending = p;
        c->pending_len += n;
}

static void parse_failed(conn *c, llhttp_errno_t err)
{
        int status = 400;
        const char *why = llhttp_get_error_reason(&c->parser);
        if (c->req && c->req->error_status) {
                status = c->req->error_status;
                why = status == 413   ? "request body too large"
                      : status == 431 ? "request header fields too large"
                                      : "bad request";
        }
        if (err == HPE_INVALID_METHOD)
                why = "unknown method";
        response_protocol_error(c, status, why ? why : "malformed request");
        c->linger = true;
        close_after_flush(c);
}

static void feed(conn *c, const char *data, size_t len)
{
        llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
        if (err == HPE_OK || c->gone)
                return;
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
                const char *pos = llhttp_get_error_pos(&c->parser);
                if (c->state == CONN_CLOSING || err == HPE_PAUSED_UPGRADE) {
                        if (pos && pos < data + len)
                                c->linger = true; /* it sent more than we will read */
                        close_after_flush(c);
                        return;
                }
                /* An async reply is on its way; hold the rest of the input.
                 * Reading goes on (bounded) so a client that leaves is seen. */
                keep_pending(c, pos ? pos : data + len, data + len);
                return;
        }
        parse_failed(c, err);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
        conn *c = s->data;
        if (nread < 0) {
                if (c->state == CONN_HANDLING && c->req && c->req->work_pending && nread == UV_EOF) {
                        /* Half-closed: the reply may still be read.  Stop reading. */
                        uv_read_stop(s);
                        c->reading = false;
                        c->close_after = true;
                        return;
                }
                conn_close(c);
                return;
        }
        if (nread == 0)
                return;
        if (c->shutting || c->state == CONN_CLOSING)
                return; /* lingering: discard */
        if (c->paused) {
                keep_pending(c, b->base, b->base + nread);
                if (c->pending_len > PENDING_MAX && c->reading && !c->gone) {
                        uv_read_stop(s); /* enough queued: let TCP push back */
                        c->reading = false;
                }
                return;
        }
        feed(c, b->base, (size_t)nread);
        conn_flush(c);
}

void conn_request_done(conn *c)
{
        c->refs++;
        if (!c->gone) {
                c->paused = false;
                if (c->close_after) {
                        if (c->pending_len)
                                c->linger = true;
                        close_after_flush(c);
                } else {
                        llhttp_resume(&c->parser);
                        char *data = c->pending;
                        size_t len = c->pending_len;
                        c->pending = NULL;
                        c->pending_len = 0;
                        if (len)
                                feed(c, data, len);
                        free(data);
                        conn_flush(c);
                        if (!c->paused && c->state != CONN_CLOSING && c->write_queued < BACKPRESSURE_BYTES)
                                start_reading(c);
                }
        }
        conn_unref(c);
}

/* ------------------------------------------------------------------ timeouts */

void conn_sweep(worker *w, uint64_t now)
{
        settings *s = settings_current();
        for (conn *c = w->conns, *next; c; c = next) {
                next = c->next;
                if (c->gone)
                        continue;
                if (c->state == CONN_STREAMING && c->req)
                        sse_heartbeat(&c->req->sse, now, s->sse_heartbeat_ms);
                if (!c->deadline || now < c->deadline)
                        continue;
                if (c->shutting || c->state == CONN_IDLE || (c->state == CONN_HEADERS && !c->req)) {
                        conn_close(c);
                } else if (c->state == CONN_HEADERS || c->state == CONN_BODY) {
                        log_write(RELAY_LOG_INFO, "http", c->req ? req_id(c->req) : NULL, "client too slow: 408");
                        response_protocol_error(c, 408, "request timed out");
                        c->linger = true;
                        close_after_flush(c);
                } else if (c->state == CONN_CLOSING) {
                        conn_close(c);
                }
        }
}

/* --------------------------------------------------------- parser callbacks */

static inline conn *conn_of(llhttp_t *p) { return p->data; }

static int on_message_begin(llhttp_t *p)
{
        conn *c = conn_of(p);
        c->req = req_acquire(c->w, c);
        if (!c->req)
                return -1;
        c->state = CONN_HEADERS;
        c->deadline = uv_now(&c->w->loop) + settings_current()->header_timeout_ms;
        return 0;
}

/* Counts header bytes against the limit; 431 above it. */
static int header_budget(relay_req *req, size_t len)
{
        req->header_bytes += len;
        if (req->header_bytes > settings_current()->max_header_size) {
                req->error_status = 431;
                return -1;
        }
        return 0;
}

static int on_piece(llhttp_t *p, const char *at, size_t len)
{
        relay_req *req = conn_of(p)->req;
        if (header_budget(req, len) != 0 || buf_append(&req->scratch, at, len) != 0)
                return -1;
        return 0;
}

static char *take_scratch(relay_req *req)
{
        char *s = arena_strndup(&req->mem, req->scratch.data ? req->scratch.data : "", req->scratch.len);
        buf_reset(&req->scratch);
        return s;
}

static int on_url_complete(llhttp_t *p)
{
        relay_req *req = conn_of(p)->req;
        req->target = take_scratch(req);
        /* the method, two spaces, "HTTP/1.1" and CRLF */
        const char *method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
        if (!req->target || header_budget(req, strlen(method) + 12) != 0)
                return -1;
        return 0;
}

/* RFC 9110 token characters: a field name is nothing else. */
static bool is_token(const char *s)
{
        static const char extra[] = "!#$%&'*+-.^_`|~";
        if (!*s)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      strchr(extra, *s)))
                        return false;
        return true;
}

static int on_field_complete(llhttp_t *p)
{
        relay_req *req = conn_of(p)->req;
        req->cur_field = take_scratch(req);
        if (!req->cur_field)
                return -1;
        if (!is_token(req->cur_field)) {
                req->error_status = 400;
                return -1;
        }
        return header_budget(req, 4); /* ": " and CRLF count against the limit too */
}

static int on_value_complete(llhttp_t *p)
{
        relay_req *req = conn_of(p)->req;
        if (req->n_headers >= settings_current()->max_headers) {
                req->error_status = 431;
                return -1;
        }
        if (req->n_headers == req->cap_headers) {
                int cap = req->cap_headers ? req->cap_headers * 2 : 16;
                header *h = arena_alloc(&req->mem, (size_t)cap * sizeof(header));
                if (!h)
                        return -1;
                if (req->n_headers)
                        memcpy(h, req->headers, (size_t)req->n_headers * sizeof(header));
                req->headers = h;
                req->cap_headers = cap;
        }
        const char *value = take_scratch(req);
        if (!value)
                return -1;
        req->headers[req->n_headers].name = req->cur_field;
        req->headers[req->n_headers++].value = value;
        return 0;
}

/* HTTP/1.1 requires exactly one Host (RFC 9112 section 3.2). */
static bool host_ok(relay_req *req, llhttp_t *p)
{
        int hosts = 0;
        for (int i = 0; i < req->n_headers; i++)
                hosts += strcasecmp(req->headers[i].name, "Host") == 0;
        return hosts == 1 || (hosts == 0 && p->http_major == 1 && p->http_minor == 0);
}

static int on_headers_complete(llhttp_t *p)
{
        conn *c = conn_of(p);
        relay_req *req = c->req;
        settings *s = settings_current();
        req->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
        req->head = strcmp(req->method, "HEAD") == 0;
        if (req_parse_target(req) != 0 || !host_ok(req, p)) {
                req->error_status = 400;
                return -1;
        }
        if ((p->flags & F_CONTENT_LENGTH) && p->content_length > s->max_body_size) {
                req->error_status = 413;
                return -1;
        }
        const char *expect = req_header(req, "Expect");
        if (expect) {
                if (strcasecmp(expect, "100-continue") != 0) {
                        req->error_status = 417;
                        return -1;
                }
                if (p->http_major == 1 && p->http_minor >= 1) {
                        static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
                        buf_append(&c->out, go_on, sizeof(go_on) - 1);
                        conn_flush(c);
                }
        }
        c->state = CONN_BODY;
        c->deadline = uv_now(&c->w->loop) + s->body_timeout_ms;
        return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
        relay_req *req = conn_of(p)->req;
        if (req->body.len + len > settings_current()->max_body_size) {
                req->error_status = 413;
                return -1;
        }
        return buf_append(&req->body, at, len) == 0 ? 0 : -1;
}

static int on_message_complete(llhttp_t *p)
{
        conn *c = conn_of(p);
        relay_req *req = c->req;
        c->state = CONN_HANDLING;
        c->deadline = 0;
        if (!llhttp_should_keep_alive(p) || c->w->draining)
                c->close_after = true;
        if (p->upgrade)
                c->close_after = true; /* no protocol upgrades: answer, then close */
        req_dispatch(req);
        if (c->gone) { /* closed under the handler (an SSE client cut off) */
                if (!req->work_pending) {
                        c->req = NULL;
                        req_release(req);
                }
                return HPE_PAUSED;
        }
        if (req->async) {
                c->paused = true;
                return HPE_PAUSED;
        }
        req_finish(req);
        if (c->close_after) {
                c->state = CONN_CLOSING;
                return HPE_PAUSED;
        }
        /* Pipelined requests answered synchronously pile their answers up
         * in one read; a client that does not read them must not make us
         * build them all.  Past the backpressure mark, stop parsing until
         * its socket drains (on_write resumes). */
        if (c->out.len + c->write_queued >= BACKPRESSURE_BYTES) {
                conn_flush(c);
                if (!c->gone && c->write_queued >= BACKPRESSURE_BYTES) {
                        c->paused = c->write_blocked = true;
                        return HPE_PAUSED;
                }
        }
        return 0;
}

/* A chunk that cannot fit in max_body_size is refused when announced, not
 * read until body_timeout. */
static int on_chunk_header(llhttp_t *p)
{
        relay_req *req = conn_of(p)->req;
        if (p->content_length > settings_current()->max_body_size - req->body.len) {
                req->error_status = 413;
                return -1;
        }
        return 0;
}

static const llhttp_settings_t *parser_settings(void)
{
        static llhttp_settings_t s;
        static bool ready;
        if (!ready) { /* first called on the control thread, before workers start */
                llhttp_settings_init(&s);
                s.on_message_begin = on_message_begin;
                s.on_url = on_piece;
                s.on_url_complete = on_url_complete;
                s.on_header_field = on_piece;
                s.on_header_field_complete = on_field_complete;
                s.on_header_value = on_piece;
                s.on_header_value_complete = on_value_complete;
                s.on_headers_complete = on_headers_complete;
                s.on_body = on_body;
                s.on_chunk_header = on_chunk_header;
                s.on_message_complete = on_message_complete;
                ready = true;
        }
        return &s;
}

/* For the control thread to build the settings before workers start. */
void conn_init_parser_settings(void);
void conn_init_parser_settings(void) { parser_settings(); }
