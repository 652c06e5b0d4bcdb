/* echo.c - a test plugin that exercises every SDK facility, so the
 * end-to-end suite can check the daemon through a real plugin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <relay/plugin.h>

static relay_counter *requests;
static relay_timer *ticker;
static int64_t ticks; /* atomic: written on the control thread */
static int tcp_port;

/* ------------------------------------------------------------------ routes */

static int get_echo(relay_req *req)
{
        relay_counter_add(requests, 1);
        json_t *doc = json_pack("{s:s,s:s,s:s,s:s?,s:s?,s:s}", "method", relay_method(req), "path", relay_path(req),
                                "target", relay_target(req), "q", relay_query(req, "q"), "agent",
                                relay_header(req, "User-Agent"), "request_id", relay_request_id(req));
        relay_set_header(req, "X-Echo", "yes");
        return relay_reply_json(req, 200, doc);
}

static int post_echo(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        size_t len;
        relay_body(req, &len);
        return relay_reply_json(req, 201, json_pack("{s:O,s:I}", "received", body, "bytes", (json_int_t)len));
}

static int get_item(relay_req *req)
{
        return relay_reply_json(
                req, 200, json_pack("{s:s,s:s?}", "id", relay_param(req, "id"), "part", relay_param(req, "part")));
}

static int authorize_user(relay_req *req)
{
        return relay_reply_json(req, 200, json_pack("{s:s}", "action", "authorize-user"));
}

static int fail(relay_req *req) { return RELAY_ERR; /* no reply: the daemon answers 500 */ }

static int get_greeting(relay_req *req)
{
        return relay_reply_json(req, 200,
                                json_pack("{s:s}", "greeting", relay_conf_string(relay_req_plugin(req), "greeting")));
}

static int get_ticks(relay_req *req)
{
        return relay_reply_json(req, 200,
                                json_pack("{s:I,s:i}", "ticks", (json_int_t)__atomic_load_n(&ticks, __ATOMIC_RELAXED),
                                          "tcp_port", tcp_port));
}

static int get_private(relay_req *req)
{
        const relay_principal *p = relay_principal_of(req);
        return relay_reply_json(req, 200, json_pack("{s:s,s:s?}", "subject", p->subject, "tenant", p->tenant));
}

/* -------------------------------------------------------------- slow (work) */

static void sleep_work(void *data) { usleep((useconds_t)(*(long *)data) * 1000); }

static int sleep_done(relay_req *req, void *data)
{
        long ms = *(long *)data;
        free(data);
        return relay_reply_json(req, 200, json_pack("{s:i}", "slept_ms", (int)ms));
}

static int get_slow(relay_req *req)
{
        const char *v = relay_query(req, "ms");
        long *ms = malloc(sizeof(*ms));
        if (!ms)
                return RELAY_ERR;
        *ms = v ? atol(v) : 100;
        long max = (long)relay_conf_duration_ms(relay_req_plugin(req), "slow_max");
        if (*ms < 0 || *ms > max) {
                free(ms);
                return relay_error(req, 400, "bad_ms", "ms must be 0-%ld", max);
        }
        if (relay_work(req, sleep_work, sleep_done, ms) != RELAY_OK) {
                free(ms);
                return RELAY_ERR;
        }
        return RELAY_ASYNC;
}

/* --------------------------------------------------------------------- SSE */

static int get_sse(relay_req *req)
{
        const char *n = relay_query(req, "n"), *end = relay_query(req, "end"), *big = relay_query(req, "big");
        relay_sse *sse = relay_sse_start(req);
        if (!sse)
                return RELAY_ERR;
        int count = n ? atoi(n) : 3;
        char id[16], data[64];
        for (int i = 0; i < count; i++) {
                snprintf(id, sizeof(id), "%d", i + 1);
                snprintf(data, sizeof(data), "{\"n\":%d}", i + 1);
                if (relay_sse_send(sse, "tick", id, data) != RELAY_OK)
                        return RELAY_ASYNC; /* cut off: the stream is gone */
        }
        if (big) { /* a flood, to check that a client that does not read is cut off */
                char *chunk = malloc(65536);
                memset(chunk, 'x', 65535);
                chunk[65535] = '\0';
                for (int i = 0; i < atoi(big); i++)
                        if (relay_sse_send(sse, "big", NULL, chunk) != RELAY_OK)
                                break;
                free(chunk);
                return RELAY_ASYNC;
        }
        if (end)
                relay_sse_end(sse);
        return RELAY_ASYNC;
}

/* ------------------------------------------------------------ authenticator */

static relay_authn_result test_token(relay_req *req)
{
        const char *t = relay_header(req, "X-Test-Token");
        if (!t)
                return RELAY_AUTHN_SKIP;
        if (strcmp(t, "good") != 0 && strcmp(t, "tenantless") != 0)
                return RELAY_AUTHN_DENIED;
        relay_principal p = {.size = sizeof(p),
                             .subject = "tester",
                             .kind = "test",
                             .tenant = strcmp(t, "good") == 0 ? "t1" : NULL,
                             .role = "viewer",
                             .scopes = (const char *const[]){"echo:read", NULL}};
        relay_set_principal(req, &p);
        return RELAY_AUTHN_OK;
}

/* ------------------------------------------------------- service, TCP, health */

typedef struct echo_api {
        uint32_t size;
        int (*twice)(int);
} echo_api;

static int twice(int v) { return 2 * v; }
static const echo_api api = {sizeof(api), twice};

static void on_tcp_data(relay_stream *s, const void *data, size_t len)
{
        relay_stream_write(s, data, len); /* an echo server */
}

static void on_tick(relay_plugin *p, void *data) { __atomic_add_fetch(&ticks, 1, __ATOMIC_RELAXED); }

static void health(relay_plugin *p, json_t *doc)
{
        json_object_set_new(doc, "protocol", json_string("Echo Protocol v1"));
}

/* --------------------------------------------------------------- lifecycle */

static int init(relay_plugin *p)
{
        relay_conf_declare(p, "greeting", RELAY_CONF_STRING, "hello", "what GET /v1/greeting says");
        relay_conf_declare(p, "tcp_listen", RELAY_CONF_STRING, "", "address of the TCP echo listener");
        relay_conf_declare(p, "tick_ms", RELAY_CONF_DURATION, "50ms", "timer period");
        relay_conf_declare(p, "slow_max", RELAY_CONF_DURATION, "60s",
                           "longest GET /v1/slow?ms= (the fuzz targets: 5ms)");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        requests = relay_counter_new(p, "echo_requests_total", "GET /v1/echo calls");
        relay_authenticator(p, "test-token", test_token);
        relay_service_provide(p, "echo.math", 1, &api);
        relay_health_hook(p, health);
        relay_route_opts scoped = {.size = sizeof(scoped),
                                   .method = "GET",
                                   .pattern = "/v1/scoped",
                                   .handler = get_private,
                                   .auth = RELAY_AUTH_TENANT,
                                   .scope = "echo:write"};
        relay_route_opts agents = {.size = sizeof(agents),
                                   .method = "GET",
                                   .pattern = "/v1/agents-only",
                                   .handler = get_private,
                                   .auth = RELAY_AUTH_PRINCIPAL,
                                   .kind = "agent"};
        if (relay_route(p, "GET", "/v1/echo", get_echo, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "POST", "/v1/echo", post_echo, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/items/:id", get_item, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/items/:id/parts/:part", get_item, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "DELETE", "/v1/items/:id", get_item, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "POST", "/v1/relays/sessions:authorize-user", authorize_user, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/fail", fail, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/greeting", get_greeting, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/ticks", get_ticks, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/slow", get_slow, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/sse", get_sse, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/private", get_private, RELAY_AUTH_PRINCIPAL) ||
            relay_route(p, "GET", "/v1/tenant", get_private, RELAY_AUTH_TENANT) || relay_route_ex(p, &scoped) ||
            relay_route_ex(p, &agents))
                return RELAY_ERR;
        return RELAY_OK;
}

static int start(relay_plugin *p)
{
        ticker = relay_timer_start(p, relay_conf_duration_ms(p, "tick_ms"), relay_conf_duration_ms(p, "tick_ms"),
                                   on_tick, NULL);
        const char *addr = relay_conf_string(p, "tcp_listen");
        if (*addr) {
                static const relay_stream_cbs cbs = {.size = sizeof(cbs), .on_data = on_tcp_data};
                tcp_port = relay_listen(p, addr, &cbs, NULL);
                if (tcp_port < 0)
                        return RELAY_ERR;
        }
        return RELAY_OK;
}

static int reload(relay_plugin *p)
{
        relay_log(p, RELAY_LOG_INFO, "reloaded: greeting is now '%s'", relay_conf_string(p, "greeting"));
        return RELAY_OK;
}

static void stop(relay_plugin *p)
{
        relay_timer_stop(ticker);
        ticker = NULL;
}

RELAY_PLUGIN(echo, .version = "1.2.3", .description = "test plugin: every SDK facility", .init = init, .start = start,
             .reload = reload, .stop = stop);
