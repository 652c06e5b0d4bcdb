/* response.c - reply bytes: status line, headers, body; the error shapes of
 * the five products; and errors for requests the parser could not read. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "http.h"
#include "json_write.h"
#include "row_json.h"
#include "log.h"
#include "settings.h"
#include "worker.h"

const char *status_reason(int status)
{
        switch (status) {
        case 100: return "Continue";
        case 200: return "OK";
        case 201: return "Created";
        case 202: return "Accepted";
        case 204: return "No Content";
        case 206: return "Partial Content";
        case 301: return "Moved Permanently";
        case 302: return "Found";
        case 304: return "Not Modified";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 406: return "Not Acceptable";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 410: return "Gone";
        case 411: return "Length Required";
        case 412: return "Precondition Failed";
        case 413: return "Content Too Large";
        case 415: return "Unsupported Media Type";
        case 417: return "Expectation Failed";
        case 422: return "Unprocessable Content";
        case 428: return "Precondition Required";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 451: return "Unavailable For Legal Reasons";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        default: return "Unknown";
        }
}

static bool no_body_status(int status) { return status == 204 || status == 304 || (status >= 100 && status < 200); }

/* Appends NAME VALUE CRLF. */
static void put_header(buf *o, const char *name, size_t name_len, const char *value)
{
        buf_append(o, name, name_len);
        buf_puts(o, value);
        buf_append(o, "\r\n", 2);
}

#define PUT_LITERAL(o, s) buf_append((o), (s), sizeof(s) - 1)

/* Built with appends, not printf: this runs for every reply. */
void response_head(relay_req *req, int status, const char *content_type, int64_t len)
{
        conn *c = req->c;
        buf *o = &c->out;
        req->status = status;
        req->replied = true;
        size_t before = o->len;
        buf_reserve(o, 256 + req->out_headers.len);
        PUT_LITERAL(o, "HTTP/1.1 ");
        buf_put_uint(o, (unsigned)status);
        buf_append(o, " ", 1);
        buf_puts(o, status_reason(status));
        PUT_LITERAL(o, "\r\nServer: relay\r\n");
        buf_puts(o, worker_date_header(req->w));
        if (content_type && !no_body_status(status))
                put_header(o, "Content-Type: ", 14, content_type);
        if (len >= 0 && !no_body_status(status)) {
                PUT_LITERAL(o, "Content-Length: ");
                buf_put_uint(o, (unsigned long long)len);
                PUT_LITERAL(o, "\r\n");
        } else if (len == -1) {
                PUT_LITERAL(o, "Transfer-Encoding: chunked\r\n");
        }
        put_header(o, "X-Request-Id: ", 14, req_id(req));
        if (c->close_after)
                PUT_LITERAL(o, "Connection: close\r\n");
        else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
                PUT_LITERAL(o, "Connection: keep-alive\r\n");
        if (req->out_headers.len)
                buf_append(o, req->out_headers.data, req->out_headers.len);
        PUT_LITERAL(o, "\r\n");
        req->bytes_out += o->len - before;
}

int response_send(relay_req *req, int status, const char *content_type, const void *body, size_t len)
{
        if (req->replied || req->sse.open) {
                relay_req_log(req, RELAY_LOG_ERROR, "second reply to one request ignored (status %d)", status);
                return RELAY_ERR;
        }
        if (req->work_pending || !req->c || req->c->gone) {
                req->replied = true; /* the client left; nothing to send */
                req->status = status;
                return RELAY_OK;
        }
        response_head(req, status, content_type, (int64_t)len);
        if (!req->head && !no_body_status(status) && len) {
                buf_append(&req->c->out, body, len);
                req->bytes_out += len;
        }
        return RELAY_OK;
}

/* ------------------------------------------------------------------ replies */

RELAY_API int relay_set_header(relay_req *req, const char *name, const char *value)
{
        if (req->replied || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
                return RELAY_ERR; /* no header injection */
        return buf_printf(&req->out_headers, "%s: %s\r\n", name, value) == 0 ? RELAY_OK : RELAY_ERR;
}

RELAY_API int relay_reply(relay_req *req, int status, const char *content_type, const void *body, size_t len)
{
        return response_send(req, status, content_type, body, len);
}

/* Written into the worker's scratch buffer, kept from reply to reply so
 * a reply costs no allocation; given back when a big reply grew it. */
#define SCRATCH_KEEP (256 * 1024)

/* The buffer a JSON reply is written into: the worker's scratch buffer,
 * or OWN for work running in the thread pool (not on the worker's thread). */
static buf *json_reply_buf(relay_req *req, buf *own)
{
        buf *o = req->w && !req->work_pending ? &req->w->reply : own;
        buf_reset(o);
        return o;
}

/* Sends what was written into O (a 500 {} when writing failed), then
 * gives O back if it is OWN or grew past SCRATCH_KEEP. */
static int json_reply_send(relay_req *req, int status, buf *o, const buf *own, bool written)
{
        int rc = written ? response_send(req, status, "application/json", o->data, o->len)
                         : response_send(req, 500, "application/json", "{}", 2);
        if (o->cap > SCRATCH_KEEP || o == own)
                buf_free(o);
        return rc;
}

RELAY_API int relay_reply_json(relay_req *req, int status, json_t *json)
{
        buf own = {0}, *o = json_reply_buf(req, &own);
        bool written = json && json_write(o, json) == 0;
        json_decref(json);
        return json_reply_send(req, status, o, &own, written);
}

RELAY_API int relay_reply_row(relay_req *req, int status, relay_db_result *r, const relay_row_field *fields)
{
        buf own = {0}, *o = json_reply_buf(req, &own);
        bool written = r && fields && row_json_write(o, r, fields) == 0;
        return json_reply_send(req, status, o, &own, written);
}

RELAY_API int relay_reply_empty(relay_req *req, int status) { return response_send(req, status, NULL, NULL, 0); }

/* ------------------------------------------------------------------- errors */

/* MESSAGE as valid UTF-8, in TMP if it was not: error messages quote what
 * clients sent (a path parameter, the JSON parser's view of a bad token,
 * cut mid-character), and jansson refuses invalid UTF-8, which turned the
 * intended 400 or 404 into a bare 500.  Each invalid byte becomes U+FFFD. */
static const char *utf8_clean(const char *message, buf *tmp)
{
        const unsigned char *p = (const unsigned char *)message;
        size_t n;
        while (*p && (n = utf8_sequence_len(p, SIZE_MAX)) != 0)
                p += n;
        if (!*p)
                return message;
        buf_append(tmp, message, (size_t)((const char *)p - message));
        while (*p) {
                if ((n = utf8_sequence_len(p, SIZE_MAX)) != 0) {
                        buf_append(tmp, p, n);
                        p += n;
                } else {
                        buf_append(tmp, "\xef\xbf\xbd", 3);
                        p++;
                }
        }
        buf_terminate(tmp);
        return tmp->data ? tmp->data : "";
}

static json_t *error_body(relay_error_style_t style, const char *code, const char *message, json_t *extra)
{
        buf tmp = {0};
        message = utf8_clean(message, &tmp);
        json_t *doc;
        if (style == RELAY_ERRORS_OBJECT) {
                json_t *e = json_pack("{s:s,s:s}", "code", code ? code : "error", "message", message);
                if (extra)
                        json_object_update(e, extra);
                doc = json_pack("{s:o}", "error", e);
        } else {
                doc = json_pack("{s:s}", style == RELAY_ERRORS_STRING ? "error" : "detail", message);
                if (extra)
                        json_object_update(doc, extra);
        }
        json_decref(extra);
        buf_free(&tmp);
        return doc;
}

int response_error_styled(relay_req *req, relay_error_style_t style, int status, const char *code, const char *message,
                          json_t *extra)
{
        return relay_reply_json(req, status, error_body(style, code, message, extra));
}

static relay_error_style_t req_style(relay_req *req)
{
        return req->plugin ? req->plugin->error_style : settings_current()->error_style;
}

RELAY_API int relay_error_json(relay_req *req, int status, const char *code, const char *message, json_t *extra)
{
        return response_error_styled(req, req_style(req), status, code, message, extra);
}

RELAY_API int relay_error_object(relay_req *req, int status, json_t *error)
{
        char code[64], message[512];
        snprintf(code, sizeof(code), "%s", json_string_value(json_object_get(error, "code")) ?: "error");
        snprintf(message, sizeof(message), "%s", json_string_value(json_object_get(error, "message")) ?: "");
        json_t *extra = json_is_object(error) ? json_copy(error) : NULL;
        json_decref(error);
        json_object_del(extra, "code");
        json_object_del(extra, "message");
        if (extra && json_object_size(extra) == 0) {
                json_decref(extra);
                extra = NULL;
        }
        return relay_error_json(req, status, code, message, extra);
}

RELAY_API int relay_error(relay_req *req, int status, const char *code, const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return relay_error_json(req, status, code, msg, NULL);
}

RELAY_API void relay_validation_add(json_t **items, const char *where, const char *field, const char *msg,
                                    const char *type)
{
        if (!*items)
                *items = json_array();
        json_array_append_new(*items, json_pack("{s:[s,s],s:s,s:s}", "loc", where, field, "msg", msg, "type",
                                                type ? type : "value_error"));
}

RELAY_API int relay_error_validation(relay_req *req, json_t *items)
{
        relay_error_style_t style = req_style(req);
        json_t *first = json_array_get(items, 0);
        const char *msg = json_string_value(json_object_get(first, "msg"));
        if (!msg)
                msg = "validation failed";
        json_t *doc;
        if (style == RELAY_ERRORS_DETAIL) {
                doc = json_pack("{s:O}", "detail", items);
        } else if (style == RELAY_ERRORS_OBJECT) {
                json_t *loc = json_object_get(first, "loc");
                const char *field = json_string_value(json_array_get(loc, json_array_size(loc) - 1));
                char text[512];
                snprintf(text, sizeof(text), "%s%s%s", field ? field : "", field ? ": " : "", msg);
                doc = json_pack("{s:{s:s,s:s,s:O}}", "error", "code", "validation_failed", "message", text, "details",
                                items);
        } else {
                doc = json_pack("{s:s}", "error", msg);
        }
        json_decref(items);
        return relay_reply_json(req, 422, doc);
}

/* The parser failed or a limit was hit: no plugin owns the request, so the
 * server's error style answers, and the connection closes after it. */
void response_protocol_error(conn *c, int status, const char *message)
{
        relay_req *req = c->req;
        bool own = !req;
        if (own && !(req = req_acquire(c->w, c)))
                return;
        c->req = req;
        c->close_after = true;
        if (!req->method)
                req->method = "-";
        req->replied = false;
        req->plugin = NULL;
        req->out_headers.len = 0;
        static const struct {
                int status;
                const char *code;
        } codes[] = {{400, "bad_request"},        {408, "request_timeout"},   {413, "payload_too_large"},
                     {417, "expectation_failed"}, {431, "headers_too_large"}, {503, "overloaded"}};
        const char *code = "bad_request";
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
                if (codes[i].status == status)
                        code = codes[i].code;
        req->head = false;
        if (status == 503)
                relay_set_header(req, "Retry-After", "1");
        response_error_styled(req, settings_current()->error_style, status, code, message, NULL);
        req_finish(req);
}
