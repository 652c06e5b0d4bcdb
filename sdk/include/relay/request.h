/* relay/request.h - one HTTP request: what came in, what goes out.
 *
 * Every pointer a request hands out lives until the request ends.  A handler
 * replies exactly once, with one of the relay_reply*() or relay_error*()
 * calls, and returns their result (RELAY_OK), or returns RELAY_ASYNC and
 * replies later on the same worker. */
#ifndef RELAY_REQUEST_H
#define RELAY_REQUEST_H

#include <jansson.h>
#include <relay/common.h>

RELAY_BEGIN_DECLS

/* ------------------------------------------------------------------ reading */

RELAY_API const char *relay_method(relay_req *req);                   /* "GET" (HEAD reads as "HEAD") */
RELAY_API const char *relay_path(relay_req *req);                     /* decoded path, no query */
RELAY_API const char *relay_target(relay_req *req);                   /* request target as received */
RELAY_API const char *relay_param(relay_req *req, const char *name);  /* :name, or NULL */
RELAY_API const char *relay_query(relay_req *req, const char *name);  /* first value, decoded */
RELAY_API const char *relay_header(relay_req *req, const char *name); /* case-insensitive */
RELAY_API const void *relay_body(relay_req *req, size_t *len);
RELAY_API const char *relay_request_id(relay_req *req);
RELAY_API const char *relay_peer_ip(relay_req *req); /* "127.0.0.1", "::1" */
RELAY_API relay_plugin *relay_req_plugin(relay_req *req);
RELAY_API void *relay_route_data(relay_req *req);
/* The pattern of the route that matched, with its mount prefix
 * ("/v1/records/:id"), or NULL when none did.  (ABI 1.2) */
RELAY_API const char *relay_route_pattern(relay_req *req);

/* The body as a JSON object.  On a missing, malformed or non-object body it
 * replies 400 (422 for the detail style) in the plugin's error style, with the
 * line and column of the fault, and returns NULL: the handler then returns
 * RELAY_OK.  The object is owned by the request. */
RELAY_API json_t *relay_json_body(relay_req *req);

/* ---------------------------------------------------------------- replying */

/* Adds a response header; call before replying. */
RELAY_API int relay_set_header(relay_req *req, const char *name, const char *value);
RELAY_API int relay_reply(relay_req *req, int status, const char *content_type, const void *body, size_t len);
/* Steals the reference to JSON. */
RELAY_API int relay_reply_json(relay_req *req, int status, json_t *json);
RELAY_API int relay_reply_empty(relay_req *req, int status);
/* True once a reply (or an SSE stream) has started. */
RELAY_API int relay_replied(relay_req *req);

/* ------------------------------------------------------------------ errors */

/* An error in the style of the plugin that owns the route (plugin.h). */
RELAY_API int relay_error(relay_req *req, int status, const char *code, const char *fmt, ...) RELAY_PRINTF(4, 5);
/* The same with extra members merged into the error object (object style:
 * next to code and message; other styles: at top level).  Steals EXTRA. */
RELAY_API int relay_error_json(relay_req *req, int status, const char *code, const char *message, json_t *extra);
/* An error described by an object {"code","message", other members...}
 * (stolen), as a service or a stored outcome hands it over: code and
 * message as in relay_error, the rest as relay_error_json's extras.  (1.1) */
RELAY_API int relay_error_object(relay_req *req, int status, json_t *error);
/* A 422 validation failure.  ITEMS is an array of {"loc":[...],"msg","type"}
 * (stolen): the detail style answers it as is, the object style as
 * {"error":{"code":"validation_failed","message":<first msg>,"details":ITEMS}},
 * the string style as {"error":<first msg>}. */
RELAY_API int relay_error_validation(relay_req *req, json_t *items);
/* Appends one item to a validation list, creating it when *ITEMS is NULL. */
RELAY_API void relay_validation_add(json_t **items, const char *where, const char *field, const char *msg,
                                    const char *type);

RELAY_END_DECLS
#endif
