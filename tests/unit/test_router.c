/* test_router.c - pattern matching, parameters, 405 and conflicts. */
#include <stdlib.h>
#include "daemon.h"
#include "router.h"
#include "tap.h"

static int h(relay_req *req) { return 0; }

static relay_plugin pa = {.name = "a"}, pb = {.name = "b"};

static int add(router *r, relay_plugin *p, const char *method, const char *pattern, char *err)
{
        route proto = {.method = (char *)method, .pattern = (char *)pattern, .handler = h, .plugin = p};
        return router_add(r, &proto, err, 256);
}

static void match(router *r, const char *method, const char *path, route_match *m)
{
        char copy[256], *segs[ROUTER_MAX_SEGMENTS];
        int n = 0;
        snprintf(copy, sizeof(copy), "%s", path);
        for (char *s = strtok(copy, "/"); s && n < ROUTER_MAX_SEGMENTS; s = strtok(NULL, "/"))
                segs[n++] = s;
        router_match(r, method, segs, n, m);
        /* strtok's buffer dies here: keep what the tests read */
        static char keep[ROUTER_MAX_PARAMS][64];
        for (int i = 0; i < ROUTER_MAX_PARAMS; i++)
                if (m->params[i]) {
                        snprintf(keep[i], sizeof(keep[i]), "%s", m->params[i]);
                        m->params[i] = keep[i];
                }
}

int main(void)
{
        char err[256];
        router *r = router_new();
        ok(add(r, &pa, "GET", "/", err) == 0, "root");
        ok(add(r, &pa, "GET", "/v1/records", err) == 0, "literal");
        ok(add(r, &pa, "POST", "/v1/records", err) == 0, "same path, other method");
        ok(add(r, &pa, "GET", "/v1/records/:id", err) == 0, "parameter");
        ok(add(r, &pa, "GET", "/v1/records/special", err) == 0, "literal beside a parameter");
        ok(add(r, &pa, "GET", "/v1/records/:id/parts/:part", err) == 0, "two parameters");
        ok(add(r, &pb, "POST", "/v1/relays/sessions:authorize-user", err) == 0, "colon inside a segment is literal");
        ok(add(r, &pb, "GET", "/v1/records", err) != 0, "duplicate refused");
        ok(strstr(err, "claimed by both plugins 'a' and 'b'") != NULL, "naming both plugins (%s)", err);
        ok(add(r, &pb, "GET", "/v1/records/:other", err) != 0, "same shape, other parameter name: duplicate");
        ok(add(r, &pb, "GET", "v1/x", err) != 0, "pattern without leading slash refused");
        ok(add(r, &pb, "GET", "/v1//x", err) != 0, "empty segment refused");

        route_match m;
        match(r, "GET", "/", &m);
        ok(m.route && strcmp(m.route->pattern, "/") == 0, "GET /");
        match(r, "GET", "/v1/records/rec_1", &m);
        ok(m.route && strcmp(m.route->pattern, "/v1/records/:id") == 0, "parameter route");
        is_str(m.params[0], "rec_1", "parameter value");
        match(r, "GET", "/v1/records/special", &m);
        ok(m.route && strcmp(m.route->pattern, "/v1/records/special") == 0, "literal preferred over parameter");
        match(r, "GET", "/v1/records/r9/parts/p2", &m);
        is_str(m.params[1], "p2", "second parameter");
        match(r, "POST", "/v1/relays/sessions:authorize-user", &m);
        ok(m.route && m.route->plugin == &pb, "colon route matches");
        match(r, "HEAD", "/v1/records", &m);
        ok(m.route && strcmp(m.route->method, "GET") == 0, "HEAD falls back to GET");
        match(r, "DELETE", "/v1/records", &m);
        ok(!m.route && m.any_route, "405 case: path known, method not");
        is_str(m.allow, "GET, POST, HEAD", "Allow lists methods");
        match(r, "GET", "/v2/nothing", &m);
        ok(!m.route && !m.any_route, "404 case");
        match(r, "GET", "/v1/records/a/b", &m);
        ok(!m.route && !m.any_route, "too deep is 404");
        ok(router_count(r) == 7, "seven routes registered");
        router_free(r);
        return tap_done();
}
