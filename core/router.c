/* router.c - a segment trie.  Each node has literal children, at most one
 * parameter child, and the routes that end there, by method. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "router.h"

typedef struct node node;

typedef struct child {
        char *segment;
        node *node;
} child;

struct node {
        child *literals;
        size_t n_literals;
        node *param;
        route **routes; /* routes ending here, one per method */
        size_t n_routes;
};

struct router {
        node root;
        route **all;
        size_t n_all;
};

router *router_new(void) { return calloc(1, sizeof(router)); }

static void node_free(node *n)
{
        for (size_t i = 0; i < n->n_literals; i++) {
                node_free(n->literals[i].node);
                free(n->literals[i].node);
                free(n->literals[i].segment);
        }
        free(n->literals);
        if (n->param) {
                node_free(n->param);
                free(n->param);
        }
        free(n->routes);
}

static void route_free(route *rt)
{
        free(rt->method), free(rt->pattern), free(rt->role), free(rt->scope), free(rt->kind), free(rt->rate_class);
        for (int i = 0; i < rt->n_params; i++)
                free(rt->param_names[i]);
        free(rt);
}

void router_free(router *r)
{
        if (!r)
                return;
        node_free(&r->root);
        for (size_t i = 0; i < r->n_all; i++)
                route_free(r->all[i]);
        free(r->all);
        free(r);
}

static node *literal_child(node *n, const char *seg, size_t len, int create)
{
        for (size_t i = 0; i < n->n_literals; i++)
                if (strlen(n->literals[i].segment) == len && memcmp(n->literals[i].segment, seg, len) == 0)
                        return n->literals[i].node;
        if (!create)
                return NULL;
        child *grown = realloc(n->literals, (n->n_literals + 1) * sizeof(child));
        if (!grown)
                return NULL;
        n->literals = grown;
        node *c = calloc(1, sizeof(node));
        char *s = strndup(seg, len);
        if (!c || !s) {
                free(c), free(s);
                return NULL;
        }
        n->literals[n->n_literals].segment = s;
        n->literals[n->n_literals++].node = c;
        return c;
}

static route *route_copy(const route *proto)
{
        route *rt = calloc(1, sizeof(*rt));
        if (!rt)
                return NULL;
        *rt = *proto;
        rt->method = strdup(proto->method);
        rt->pattern = strdup(proto->pattern);
        rt->role = proto->role ? strdup(proto->role) : NULL;
        rt->scope = proto->scope ? strdup(proto->scope) : NULL;
        rt->kind = proto->kind ? strdup(proto->kind) : NULL;
        rt->rate_class = proto->rate_class ? strdup(proto->rate_class) : NULL;
        rt->n_params = 0;
        return rt;
}

/* Walks (creating) the nodes of PATTERN; collects parameter names. */
static node *pattern_node(router *r, route *rt, char *err, size_t err_len)
{
        const char *p = rt->pattern;
        if (*p != '/') {
                snprintf(err, err_len, "route pattern '%s' must start with '/'", p);
                return NULL;
        }
        node *n = &r->root;
        while (*p == '/') {
                const char *seg = ++p;
                while (*p && *p != '/')
                        p++;
                size_t len = (size_t)(p - seg);
                if (len == 0 && *p) {
                        snprintf(err, err_len, "route pattern '%s' has an empty segment", rt->pattern);
                        return NULL;
                }
                if (len == 0)
                        break; /* "/" or a trailing slash: this node */
                if (seg[0] == ':') {
                        if (len == 1 || rt->n_params == ROUTER_MAX_PARAMS) {
                                snprintf(err, err_len, "route pattern '%s': bad or too many parameters", rt->pattern);
                                return NULL;
                        }
                        rt->param_names[rt->n_params++] = strndup(seg + 1, len - 1);
                        if (!n->param && !(n->param = calloc(1, sizeof(node))))
                                return NULL;
                        n = n->param;
                } else {
                        n = literal_child(n, seg, len, 1);
                        if (!n)
                                return NULL;
                }
        }
        return n;
}

int router_add(router *r, const route *proto, char *err, size_t err_len)
{
        route *rt = route_copy(proto);
        if (!rt || !rt->method || !rt->pattern) {
                snprintf(err, err_len, "out of memory");
                if (rt)
                        route_free(rt);
                return -1;
        }
        node *n = pattern_node(r, rt, err, err_len);
        if (!n) {
                route_free(rt);
                return -1;
        }
        for (size_t i = 0; i < n->n_routes; i++)
                if (strcmp(n->routes[i]->method, rt->method) == 0) {
                        snprintf(err, err_len, "route %s %s is claimed by both plugins '%s' and '%s'", rt->method,
                                 rt->pattern, relay_plugin_name(n->routes[i]->plugin), relay_plugin_name(rt->plugin));
                        route_free(rt);
                        return -1;
                }
        route **grown = realloc(n->routes, (n->n_routes + 1) * sizeof(route *));
        route **all = realloc(r->all, (r->n_all + 1) * sizeof(route *));
        if (grown)
                n->routes = grown;
        if (all)
                r->all = all;
        if (!grown || !all) {
                route_free(rt);
                snprintf(err, err_len, "out of memory");
                return -1;
        }
        rt->id = (int)r->n_all;
        n->routes[n->n_routes++] = rt;
        r->all[r->n_all++] = rt;
        return 0;
}

/* Depth-first: literal before parameter, backtracking so that
 * /a/:x/c and /a/b/d both match what they should. */
static const node *walk(const node *n, char **segs, int i, int count, const char **params, int np)
{
        if (i == count)
                return n->n_routes ? n : NULL;
        node *lit = literal_child((node *)n, segs[i], strlen(segs[i]), 0);
        if (lit) {
                const node *found = walk(lit, segs, i + 1, count, params, np);
                if (found)
                        return found;
        }
        if (n->param && np < ROUTER_MAX_PARAMS) {
                params[np] = segs[i];
                return walk(n->param, segs, i + 1, count, params, np + 1);
        }
        return NULL;
}

void router_match(const router *r, const char *method, char **segments, int n, route_match *m)
{
        memset(m, 0, sizeof(*m));
        const node *found = walk(&r->root, segments, 0, n, m->params, 0);
        if (!found)
                return;
        const route *get = NULL;
        for (size_t i = 0; i < found->n_routes; i++) {
                if (strcmp(found->routes[i]->method, method) == 0) {
                        m->route = found->routes[i];
                        return;
                }
                if (strcmp(found->routes[i]->method, "GET") == 0)
                        get = found->routes[i];
        }
        if (get && strcmp(method, "HEAD") == 0) {
                m->route = get;
                return;
        }
        m->any_route = found->routes[0];
        size_t len = 0;
        for (size_t i = 0; i < found->n_routes; i++) {
                int w = snprintf(m->allow + len, sizeof(m->allow) - len, "%s%s", len ? ", " : "",
                                 found->routes[i]->method);
                if (w < 0 || (size_t)w >= sizeof(m->allow) - len)
                        break;
                len += (size_t)w;
        }
        if (get && len + 6 < sizeof(m->allow))
                snprintf(m->allow + len, sizeof(m->allow) - len, ", HEAD");
}

size_t router_count(const router *r) { return r->n_all; }

const route *router_route(const router *r, size_t id) { return id < r->n_all ? r->all[id] : NULL; }
