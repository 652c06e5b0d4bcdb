/* authbench.c - the plugin contrib/bench/auth-bench loads next to `users`:
 * two routes that answer the very same small JSON body, one public and one
 * that needs a tenant principal, so the difference between them is what
 * authentication costs a request (the users plugin's authenticator: a
 * bearer token's signature and its key's cached liveness, or an API key's
 * primary-key read and hash).  Not installed; `make bench-plugins` builds it.
 *
 *   GET /bench/open     RELAY_AUTH_PUBLIC   {"ok":true,"bench":"auth"}
 *   GET /bench/closed   RELAY_AUTH_TENANT   {"ok":true,"bench":"auth"}
 *
 * The body is a constant sent with relay_reply, so neither route builds
 * JSON: the two differ only in the route's auth requirement. */
#include <string.h>
#include <relay/plugin.h>

static const char body[] = "{\"ok\":true,\"bench\":\"auth\"}";

static int reply(relay_req *req) { return relay_reply(req, 200, "application/json", body, sizeof(body) - 1); }

static int init(relay_plugin *p)
{
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_route(p, "GET", "/bench/open", reply, RELAY_AUTH_PUBLIC) != RELAY_OK ||
            relay_route(p, "GET", "/bench/closed", reply, RELAY_AUTH_TENANT) != RELAY_OK)
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(authbench, .version = "0.1.0", .description = "contrib/bench/auth-bench: authentication cost",
             .requires = RELAY_REQUIRES("users"), .init = init);
