/* request.c - a request's life: from the pool, through routing and the
 * authenticator chain to the plugin's handler, and back to the pool.
 * Also the accessors plugins read a request with (relay/request.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "net_addr.h"
#include "settings.h"
#include "storage.h"
#include "worker.h"

#define REQ_POOL_MAX 64

relay_req *req_acquire(worker *w, conn *c)
{
        relay_req *req = w->free_reqs;
        if (req) {
                w->free_reqs = req->next_free;
                w->n_free_reqs--;
        } else if (!(req = calloc(1, sizeof(*req)))) {
                return NULL;
        }
        req->w = w;
        req->c = c;
        req->start_ns = uv_hrtime();
        req->status = 0;
        return req;
}

json_t *req_keep(relay_req *req, json_t *j)
{
        if (!req->kept)
                req->kept = json_array();
        json_array_append_new(req->kept, j);
        return j;
}

/* Everything but the kept buffers back to zero. */
void req_release(relay_req *req)
{
        worker *w = req->w;
        json_decref(req->json);
        json_decref(req->kept);
        arena_reset(&req->mem);
        buf scratch = req->scratch, body = req->body, out_headers = req->out_headers;
        arena mem = req->mem;
        buf_reset(&scratch);
        buf_reset(&out_headers);
        if (body.cap > 65536)
                buf_free(&body);
        buf_reset(&body);
        memset(req, 0, sizeof(*req));
        req->scratch = scratch, req->body = body, req->out_headers = out_headers, req->mem = mem;
        if (w->n_free_reqs >= REQ_POOL_MAX) {
                buf_free(&req->scratch), buf_free(&req->body), buf_free(&req->out_headers);
                arena_free(&req->mem);
                free(req);
                return;
        }
        req->next_free = w->free_reqs;
        w->free_reqs = req;
        w->n_free_reqs++;
}

/* ------------------------------------------------------------ the target */

static int hexval(int ch)
{
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        ch = tolower(ch);
        return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes [S, S+N) into the arena; PLUS: '+' is a space (query).
 * NULL on a malformed escape or an encoded NUL. */
static char *decode(arena *a, const char *s, size_t n, bool plus)
{
        char *out = arena_alloc(a, n + 1), *o = out;
        if (!out)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%') {
                        if (i + 2 >= n)
                                return NULL;
                        int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                return NULL;
                        *o++ = (char)(hi * 16 + lo);
                        i += 2;
                } else {
                        *o++ = plus && s[i] == '+' ? ' ' : s[i];
                }
        }
        *o = '\0';
        return out;
}

/* Every name and value of the query decodes (no bad escape, no %00).
 * Checked once here, so relay_query never reads a malformed value as an
 * absent one: "?causal=%00" must not turn a guarded DELETE into an
 * unconditional one. */
static bool query_valid(relay_req *req)
{
        for (const char *p = req->query; p && *p;) {
                const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
                if (!decode(&req->mem, p, (size_t)(end - p), true))
                        return false;
                p = amp ? amp + 1 : NULL;
        }
        return true;
}

int req_parse_target(relay_req *req)
{
        const char *t = req->target;
        if (!t || t[0] != '/')
                return -1; /* origin-form only: no proxies, no CONNECT, no OPTIONS * */
        const char *q = strchr(t, '?');
        size_t plen = q ? (size_t)(q - t) : strlen(t);
        req->query = q ? q + 1 : NULL;
        if (!(req->path = decode(&req->mem, t, plen, false)) || !query_valid(req))
                return -1;
        req->segments = arena_alloc(&req->mem, ROUTER_MAX_SEGMENTS * sizeof(char *));
        if (!req->segments)
                return -1;
        const char *p = t, *end = t + plen;
        while (p < end) {
                const char *seg = ++p;
                while (p < end && *p != '/')
                        p++;
                if (p == seg && p == end)
                        break; /* trailing slash */
                if (req->n_segments == ROUTER_MAX_SEGMENTS)
                        return -1;
                char *d = decode(&req->mem, seg, (size_t)(p - seg), false);
                if (!d)
                        return -1;
                req->segments[req->n_segments++] = d;
        }
        return 0;
}

/* --------------------------------------------------------------- the id */

/* A client's X-Request-Id is kept when it is short and plain (so ids can be
 * followed through proxies); otherwise the worker makes one. */
static bool plain_id(const char *s)
{
        size_t n = 0;
        for (; s[n]; n++)
                if (n >= 64 || !(isalnum((unsigned char)s[n]) || s[n] == '-' || s[n] == '_' || s[n] == '.'))
                        return false;
        return n > 0;
}

const char *req_id(relay_req *req)
{
        if (req->id[0])
                return req->id;
        const char *given = req->n_headers ? req_header(req, "X-Request-Id") : NULL;
        if (given && plain_id(given)) {
                snprintf(req->id, sizeof(req->id), "%s", given);
        } else {
                /* 20 hex digits: the worker's random prefix, its index, a counter */
                static const char hex[] = "0123456789abcdef";
                worker *w = req->w;
                uint64_t hi = ((uint64_t)w->id_prefix << 8) | ((unsigned)w->index & 0xff);
                uint64_t lo = ++w->id_counter & 0xffffffffffULL;
                for (int i = 9; i >= 0; i--, hi >>= 4)
                        req->id[i] = hex[hi & 15];
                for (int i = 19; i >= 10; i--, lo >>= 4)
                        req->id[i] = hex[lo & 15];
                req->id[20] = '\0';
        }
        return req->id;
}

/* --------------------------------------------------------------- dispatch */

static relay_error_style_t style_of(relay_req *req)
{
        return req->plugin ? req->plugin->error_style : settings_current()->error_style;
}

/* Runs the chain once; true when a principal was established. */
static bool authenticate(relay_req *req, bool *denied)
{
        *denied = false;
        if (req->authn_done)
                return req->has_principal;
        req->authn_done = true;
        for (authenticator *a = relay_daemon.authenticators; a; a = a->next) {
                relay_authn_result r = a->fn(req);
                if (r == RELAY_AUTHN_OK && req->has_principal)
                        return true;
                if (r == RELAY_AUTHN_DENIED) {
                        *denied = true;
                        return false;
                }
        }
        return false;
}

static bool has_scope(const relay_principal *p, const char *scope)
{
        for (const char *const *s = p->scopes; s && *s; s++)
                if (strcmp(*s, scope) == 0 || strcmp(*s, "*") == 0)
                        return true;
        return false;
}

/* Is ROLE one of the space-separated words of ACCEPTED? */
static bool role_accepted(const char *role, const char *accepted)
{
        size_t n = role ? strlen(role) : 0;
        for (const char *w = accepted; n && *w;) {
                size_t len = strcspn(w, " ");
                if (len == n && strncmp(w, role, n) == 0)
                        return true;
                w += len;
                w += strspn(w, " ");
        }
        return false;
}

/* 0 when the route's requirements are met, else the error already sent. */
/* After authentication and the rate limit: 401 without a principal, 403
 * for one that lacks the tenant, role, scope or kind the route needs. */
static int authorize(relay_req *req, bool authenticated, bool denied)
{
        const route *rt = req->route;
        if (rt->auth == RELAY_AUTH_PUBLIC)
                return 0;
        if (!authenticated) {
                relay_set_header(req, "WWW-Authenticate", "Bearer");
                relay_error(req, 401, "unauthorized", denied ? "invalid credentials" : "authentication required");
                return -1;
        }
        const relay_principal *p = &req->principal;
        if ((rt->auth == RELAY_AUTH_TENANT && !p->tenant) || (rt->role && !role_accepted(p->role, rt->role)) ||
            (rt->scope && !has_scope(p, rt->scope)) || (rt->kind && (!p->kind || strcmp(p->kind, rt->kind) != 0))) {
                relay_error(req, 403, "forbidden", "this credential may not do that");
                return -1;
        }
        return 0;
}

static void not_routed(relay_req *req, route_match *m)
{
        if (m->any_route) {
                req->plugin = m->any_route->plugin;
                relay_set_header(req, "Allow", m->allow);
                relay_error(req, 405, "method_not_allowed", "%s is not allowed here; allowed: %s", req->method,
                            m->allow);
        } else {
                response_error_styled(req, settings_current()->error_style, 404, "not_found", "no such route", NULL);
        }
}

void req_dispatch(relay_req *req)
{
        route_match m;
        router_match(relay_daemon.router, req->method, req->segments, req->n_segments, &m);
        if (!m.route) {
                not_routed(req, &m);
                return;
        }
        req->route = m.route;
        req->plugin = m.route->plugin;
        memcpy(req->params, m.params, sizeof(req->params));
        /* Authenticate first (the limit counts per tenant), limit next (so
         * failed attempts are limited too, per address), then decide. */
        bool denied = false, authenticated = m.route->auth != RELAY_AUTH_PUBLIC && authenticate(req, &denied);
        if (ratelimit_refused(req) || authorize(req, authenticated, denied) != 0)
                return;
        req->in_handler = true;
        int rc = m.route->handler(req);
        req->in_handler = false;
        if (rc == RELAY_ASYNC && !req->replied) {
                req->async = true;
                return;
        }
        if (!req->replied) {
                relay_req_log(req, RELAY_LOG_ERROR, "handler for %s %s returned %d without a reply", req->method,
                              m.route->pattern, rc);
                relay_error(req, 500, "internal", "internal error");
        }
}

void req_finish(relay_req *req)
{
        worker *w = req->w;
        conn *c = req->c;
        uint64_t elapsed = uv_hrtime() - req->start_ns;
        metrics_record(&w->metrics, req->route ? req->route->id : -1, req->status, elapsed);
        if (settings_current()->access_log)
                log_write(RELAY_LOG_INFO, req->plugin ? req->plugin->name : "http", req_id(req), "%s %s %d %zu %.3fms",
                          req->method ? req->method : "-", req->target ? req->target : "-", req->status, req->bytes_out,
                          (double)elapsed / 1e6);
        for (request_hook *h = relay_daemon.request_hooks; h; h = h->next)
                h->fn(h->owner, req, req->status, h->data);
        storage_request_end(w->db, req_id(req));
        if (c && c->req == req)
                c->req = NULL;
        if (c && !c->gone) {
                c->state = CONN_IDLE;
                c->deadline = uv_now(&w->loop) + settings_current()->idle_timeout_ms;
        }
        req_release(req);
}

/* -------------------------------------------------------------- accessors */

const char *req_header(relay_req *req, const char *name)
{
        for (int i = 0; i < req->n_headers; i++)
                if (strcasecmp(req->headers[i].name, name) == 0)
                        return req->headers[i].value;
        return NULL;
}

RELAY_API const char *relay_method(relay_req *req) { return req->method; }
RELAY_API const char *relay_path(relay_req *req) { return req->path; }
RELAY_API const char *relay_target(relay_req *req) { return req->target; }
RELAY_API const char *relay_request_id(relay_req *req) { return req_id(req); }
RELAY_API relay_plugin *relay_req_plugin(relay_req *req) { return req->plugin; }
RELAY_API void *relay_route_data(relay_req *req) { return req->route ? req->route->data : NULL; }
RELAY_API const char *relay_route_pattern(relay_req *req) { return req->route ? req->route->pattern : NULL; }
RELAY_API int relay_replied(relay_req *req) { return req->replied || req->sse.open; }

RELAY_API const char *relay_header(relay_req *req, const char *name) { return req_header(req, name); }

RELAY_API const char *relay_param(relay_req *req, const char *name)
{
        const route *rt = req->route;
        for (int i = 0; rt && i < rt->n_params; i++)
                if (strcmp(rt->param_names[i], name) == 0)
                        return req->params[i];
        return NULL;
}

RELAY_API const char *relay_query(relay_req *req, const char *name)
{
        size_t nlen = strlen(name);
        for (const char *p = req->query; p && *p;) {
                const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
                const char *eq = memchr(p, '=', (size_t)(end - p));
                const char *kend = eq ? eq : end;
                char *key = decode(&req->mem, p, (size_t)(kend - p), true);
                if (key && strlen(key) == nlen && memcmp(key, name, nlen) == 0)
                        return eq ? decode(&req->mem, eq + 1, (size_t)(end - eq - 1), true) : "";
                p = amp ? amp + 1 : NULL;
        }
        return NULL;
}

RELAY_API const void *relay_body(relay_req *req, size_t *len)
{
        if (len)
                *len = req->body.len;
        buf_terminate(&req->body);
        return req->body.data ? req->body.data : "";
}

RELAY_API const char *relay_peer_ip(relay_req *req)
{
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        char ip[64];
        if (!req->c || uv_tcp_getpeername(&req->c->tcp, (struct sockaddr *)&ss, &len) != 0)
                return "unknown";
        net_addr_ip((struct sockaddr *)&ss, ip, sizeof(ip));
        return arena_strdup(&req->mem, ip);
}

RELAY_API json_t *relay_json_body(relay_req *req)
{
        if (req->json)
                return req->json;
        size_t len;
        const char *body = relay_body(req, &len);
        int status = style_of(req) == RELAY_ERRORS_DETAIL ? 422 : 400;
        if (len == 0) {
                relay_error(req, status, "invalid_json", "a JSON object body is required");
                return NULL;
        }
        json_error_t e;
        json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
        if (!j) {
                relay_error(req, status, "invalid_json", "malformed JSON at line %d, column %d: %s", e.line, e.column,
                            e.text);
                return NULL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                relay_error(req, status, "invalid_json", "the body must be a JSON object");
                return NULL;
        }
        return req->json = j;
}

RELAY_API long relay_query_limit(relay_req *req, const char *name, long def, long max, bool *bad)
{
        const char *v = relay_query(req, name);
        if (bad)
                *bad = false;
        if (!v)
                return def;
        char *end;
        long n = strtol(v, &end, 10);
        if (!*v || *end || n < 1 || n > max) {
                if (bad)
                        *bad = true;
                return def;
        }
        return n;
}

/* --------------------------------------------------------------- principal */

RELAY_API int relay_set_principal(relay_req *req, const relay_principal *p)
{
        arena *a = &req->mem;
        relay_principal *d = &req->principal;
        memset(d, 0, sizeof(*d));
        d->size = sizeof(*d);
#define COPY(f) d->f = p->f ? arena_strdup(a, p->f) : NULL
        COPY(tenant);
        COPY(subject);
        COPY(kind);
        COPY(role);
        if (p->size >= offsetof(relay_principal, credential) + sizeof(p->credential))
                COPY(credential);
#undef COPY
        size_t n = 0;
        while (p->scopes && p->scopes[n])
                n++;
        if (n) {
                const char **s = arena_alloc(a, (n + 1) * sizeof(char *));
                if (!s)
                        return RELAY_ERR;
                for (size_t i = 0; i < n; i++)
                        s[i] = arena_strdup(a, p->scopes[i]);
                s[n] = NULL;
                d->scopes = s;
        }
        req->has_principal = true;
        return RELAY_OK;
}

RELAY_API const relay_principal *relay_principal_of(relay_req *req)
{
        bool denied;
        if (!req->authn_done)
                authenticate(req, &denied);
        return req->has_principal ? &req->principal : NULL;
}
