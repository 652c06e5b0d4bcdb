/* consumer.c - a test plugin that requires echo and uses its service. */
#include <stdlib.h>
#include <relay/plugin.h>

typedef struct echo_api {
        uint32_t size;
        int (*twice)(int);
} echo_api;

static const echo_api *math;

static int get_twice(relay_req *req)
{
        const char *v = relay_query(req, "v");
        return relay_reply_json(req, 200, json_pack("{s:i}", "twice", math->twice(v ? atoi(v) : 0)));
}

static int init(relay_plugin *p)
{
        math = relay_service_get(p, "echo.math", 1);
        if (!math || relay_service_get(p, "echo.math", 2)) /* v2 does not exist */
                return RELAY_ERR;
        relay_error_style(p, RELAY_ERRORS_STRING);
        return relay_route(p, "GET", "/v1/twice", get_twice, RELAY_AUTH_PUBLIC);
}

RELAY_PLUGIN(consumer, .version = "0.1.0", .requires = RELAY_REQUIRES("echo"), .init = init);
