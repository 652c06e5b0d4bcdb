/* dup_route.c - claims GET /v1/echo, which echo already has. */
#include <relay/plugin.h>

static int h(relay_req *req) { return relay_reply_empty(req, 204); }

static int init(relay_plugin *p) { return relay_route(p, "GET", "/v1/echo", h, RELAY_AUTH_PUBLIC); }

RELAY_PLUGIN(dup_route, .version = "0.1.0", .init = init);
