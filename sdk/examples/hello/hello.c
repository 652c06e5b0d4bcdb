/* hello.c - a complete Relay plugin, built out of tree against the
 * installed SDK:
 *
 *   cc -shared -fPIC -o hello.so hello.c $(pkg-config --cflags --libs relay-sdk)
 *
 * then, in relay.conf:  [plugins] load += hello   and   [hello] greeting = Hi
 */
#include <string.h>
#include <relay/plugin.h>

/* GET /v1/hello/:name -> {"message": "Hi, NAME"} */
static int get_hello(relay_req *req)
{
        relay_plugin *p = relay_req_plugin(req);
        const char *name = relay_param(req, "name");
        if (strlen(name) > 64)
                return relay_error(req, 400, "hello.name_too_long", "a name has at most 64 characters");
        json_t *reply = json_pack("{s:s++}", "message", relay_conf_string(p, "greeting"), ", ", name);
        return relay_reply_json(req, 200, reply);
}

/* POST /v1/hello {"name": "..."} -> 201 {"id": "hlo_...", "name": "..."} */
static int post_hello(relay_req *req)
{
        json_t *body = relay_json_body(req); /* replies 400 itself on bad JSON */
        if (!body)
                return RELAY_OK;
        json_t *errors = NULL;
        const char *name = json_string_value(json_object_get(body, "name"));
        if (!name)
                relay_validation_add(&errors, "body", "name", "field required", "value_error.missing");
        if (errors)
                return relay_error_validation(req, errors);
        char id[40];
        relay_id_new("hlo_", id, sizeof(id));
        return relay_reply_json(req, 201, json_pack("{s:s,s:s}", "id", id, "name", name));
}

static int init(relay_plugin *p)
{
        relay_conf_declare(p, "greeting", RELAY_CONF_STRING, "Hello", "first word of every greeting");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_route(p, "GET", "/v1/hello/:name", get_hello, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "POST", "/v1/hello", post_hello, RELAY_AUTH_PUBLIC))
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(hello, .version = "1.0.0", .description = "says hello", .init = init);
