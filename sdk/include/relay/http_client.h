/* relay/http_client.h - outbound HTTP(S) on the daemon's event loop.
 *
 * libcurl's multi interface driven by the control thread's libuv loop: a
 * request never blocks a thread, and thousands may be in flight.  Calls and
 * callbacks belong to the control thread (job handlers, timers, event
 * subscribers run there).
 *
 * Server-side request forgery: unless ALLOW_PRIVATE is set, a connection to
 * a loopback, private, link-local, shared (100.64/10), multicast or
 * unspecified address is refused when the socket is opened, so the check
 * applies to the address actually resolved and to every redirect hop.
 * Only http:// and https:// are spoken, redirects included.  Proxy
 * variables of the environment are ignored (the guard would see the
 * proxy, not the destination).  (ABI 1.2) */
#ifndef RELAY_HTTP_CLIENT_H
#define RELAY_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <relay/common.h>

RELAY_BEGIN_DECLS

typedef struct relay_http_request {
        uint32_t size;              /* sizeof(relay_http_request) */
        const char *method;         /* NULL: GET, or POST when there is a body */
        const char *url;            /* http:// or https:// */
        const char *const *headers; /* "Name: value" strings, NULL-terminated, or NULL */
        const void *body;           /* copied; may be NULL */
        size_t body_len;
        uint64_t timeout_ms;         /* the whole exchange; 0: 30 s */
        uint64_t connect_timeout_ms; /* 0: 10 s */
        int max_redirects;           /* 0: a 3xx is the answer */
        int allow_private;           /* 1: private and loopback destinations allowed */
        size_t max_response;         /* response body bytes kept; 0: 64 KiB; the rest is read and dropped */
        void *reserved[4];
} relay_http_request;

typedef enum {
        RELAY_HTTP_OK = 0,        /* an answer arrived (any status) */
        RELAY_HTTP_TIMEOUT = 1,   /* connect or overall timeout */
        RELAY_HTTP_CONNECT = 2,   /* refused, reset, unreachable, DNS failure */
        RELAY_HTTP_BLOCKED = 3,   /* the destination is private/loopback and not allowed */
        RELAY_HTTP_TLS = 4,       /* handshake or certificate failure */
        RELAY_HTTP_CANCELLED = 5, /* the daemon is stopping */
        RELAY_HTTP_FAILED = 6,    /* anything else (bad URL, protocol error) */
        RELAY_HTTP_REDIRECTS = 7  /* more redirects than max_redirects (ABI 1.2) */
} relay_http_error;

typedef struct relay_http_response {
        uint32_t size;          /* sizeof(relay_http_response) */
        int status;             /* HTTP status of the last hop; 0 without an answer */
        int error;              /* relay_http_error */
        const char *error_text; /* one line, or NULL */
        const char *body;       /* NUL-terminated; at most max_response bytes */
        size_t body_len;
        int truncated;          /* the body was longer than max_response */
        int64_t retry_after_ms; /* Retry-After (seconds or HTTP date) in ms, or -1 */
        double elapsed_ms;      /* from the start to the end of the exchange */
        const char *primary_ip; /* the address connected to, or "" */
} relay_http_response;

/* RES and everything in it live until DONE returns. */
typedef void (*relay_http_done_fn)(relay_plugin *p, const relay_http_response *res, void *data);

/* Starts REQ; DONE runs exactly once, later, on the control thread (also
 * with RELAY_HTTP_CANCELLED at shutdown, before plugins stop).  Returns
 * RELAY_OK, or RELAY_ERR (bad arguments, not the control thread) without
 * calling DONE. */
RELAY_API int relay_http_fetch(relay_plugin *p, const relay_http_request *req, relay_http_done_fn done, void *data);

/* A response header of the last hop (case-insensitive), or NULL. */
RELAY_API const char *relay_http_header(const relay_http_response *res, const char *name);

/* Is IP (numeric IPv4 or IPv6 text) an address the SSRF guard lets through
 * without allow_private?  False for malformed text. */
RELAY_API bool relay_ip_is_public(const char *ip);

RELAY_END_DECLS
#endif
