/* router.h - METHOD + path pattern to route.  A trie of path segments,
 * compiled once at start-up; lookups take no locks. */
#ifndef RELAY_ROUTER_H
#define RELAY_ROUTER_H

#include <stddef.h>
#include "relay/plugin.h"
#include "buf.h"

#define ROUTER_MAX_PARAMS 8
#define ROUTER_MAX_SEGMENTS 32

typedef struct route {
        char *method;
        char *pattern; /* with the mount prefix */
        relay_handler handler;
        relay_auth auth;
        char *role, *scope;
        void *data;
        char *kind;       /* required kind of principal, or NULL */
        char *rate_class; /* NULL: the plugin's rate_limit */
        relay_plugin *plugin;
        char *param_names[ROUTER_MAX_PARAMS];
        int n_params;
        int id; /* index for per-route metrics */
} route;

typedef struct router router;

typedef struct route_match {
        const route *route;     /* NULL: 404 or 405 */
        const route *any_route; /* some route at this path (405: whose error style) */
        char allow[128];        /* 405: the methods the path has */
        const char *params[ROUTER_MAX_PARAMS];
} route_match;

router *router_new(void);
void router_free(router *r);
/* 0, or -1 with ERR (bad pattern, or "claimed by both plugins a and b"). */
int router_add(router *r, const route *proto, char *err, size_t err_len);
/* SEGMENTS are the decoded path segments.  HEAD falls back to GET. */
void router_match(const router *r, const char *method, char **segments, int n, route_match *m);
size_t router_count(const router *r);
const route *router_route(const router *r, size_t id);

#endif
