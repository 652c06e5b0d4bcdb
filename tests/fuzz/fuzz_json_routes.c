/* fuzz_json_routes - the JSON body of every route the loaded plugins
 * registered for POST, PUT or PATCH.  The routes are read from the router
 * at start, so a new plugin's routes are fuzzed without touching this file.
 *
 * Input: byte 0 picks the route (its number modulo the count; the list is
 * printed at start), the rest is the body.  It goes through the same
 * connection code as fuzz_http, with Content-Type: application/json, a
 * Content-Length, and for routes that need a principal the X-API-Key of the
 * bootstrapped tenant's admin.  ":param" segments of the route's pattern
 * are filled with "fuzz".  "@APIKEY@" and "@TOKEN@" in the body are
 * replaced as in fuzz_http (so {"api_key":"@APIKEY@"} is a valid exchange).
 *
 * Checks beyond the sanitizers: a reply comes, and it is not a 5xx from a
 * route of a product plugin (test plugins may answer 500 on purpose). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "harness.h"
#include "router.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct body_route {
        const route *rt;
        char path[512];
        bool product; /* a product plugin's route, not a test plugin's */
} body_route;

static body_route *routes;
static size_t n_routes;
static buf body, request, reply;

static bool takes_body(const char *method)
{
        return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
}

/* The pattern with each ":param" segment filled in. */
static void fill_path(const char *pattern, char *out, size_t len)
{
        buf b = {0};
        for (const char *p = pattern; *p;) {
                if (*p == ':' && p > pattern && p[-1] == '/') {
                        buf_puts(&b, "fuzz");
                        p += strcspn(p, "/");
                } else {
                        buf_append(&b, p++, 1);
                }
        }
        snprintf(out, len, "%.*s", (int)b.len, b.data ? b.data : "");
        buf_free(&b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        fuzz_setup();
        const router *r = relay_daemon.router;
        size_t n = router_count(r);
        routes = calloc(n ? n : 1, sizeof(*routes));
        if (!routes)
                abort();
        for (size_t i = 0; i < n; i++) {
                const route *rt = router_route(r, i);
                if (!takes_body(rt->method))
                        continue;
                body_route *b = &routes[n_routes++];
                b->rt = rt;
                fill_path(rt->pattern, b->path, sizeof(b->path));
                b->product = !fuzz_test_plugin(rt->plugin->name);
        }
        if (!n_routes) {
                fprintf(stderr, "fuzz_json_routes: no loaded plugin has a POST, PUT or PATCH route\n");
                exit(1);
        }
        fprintf(stderr, "fuzz_json_routes: %zu routes take a body (byte 0 of an input, modulo %zu, picks one):\n",
                n_routes, n_routes);
        for (size_t i = 0; i < n_routes; i++)
                fprintf(stderr, "  %2zu  %-6s %-40s %s\n", i, routes[i].rt->method, routes[i].rt->pattern,
                        routes[i].rt->plugin->name);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        const body_route *b = &routes[data[0] % n_routes];
        fuzz_expand(data + 1, size - 1, &body);
        buf_reset(&request);
        buf_printf(&request,
                   "%s %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
                   b->rt->method, b->path, body.len);
        if (b->rt->auth != RELAY_AUTH_PUBLIC && *fuzz_api_key())
                buf_printf(&request, "X-API-Key: %s\r\n", fuzz_api_key());
        buf_append(&request, "\r\n", 2);
        buf_append(&request, body.data, body.len);
        const char *chunk = request.data;
        fuzz_exchange(&chunk, &request.len, 1, 0, &reply);
        int status = fuzz_status(&reply);
        if (!status || (b->product && status >= 500)) {
                fprintf(stderr, "fuzz check failed: %s %s answered %d:\n%.*s\n", b->rt->method, b->path, status,
                        (int)(reply.len < 2000 ? reply.len : 2000), reply.data ? reply.data : "");
                abort();
        }
        return 0;
}
