/* styles.c - a test plugin whose error style comes from its configuration,
 * to check the three product error shapes. */
#include <string.h>
#include <relay/plugin.h>

static int post_validate(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        json_t *errors = NULL;
        if (!json_is_string(json_object_get(body, "name")))
                relay_validation_add(&errors, "body", "name", "field required", "value_error.missing");
        if (errors)
                return relay_error_validation(req, errors);
        return relay_reply_json(req, 200, json_pack("{s:O}", "name", json_object_get(body, "name")));
}

static int get_missing(relay_req *req)
{
        return relay_error(req, 404, "thing.not_found", "no thing %s", relay_param(req, "id"));
}

static int init(relay_plugin *p)
{
        relay_conf_declare(p, "style", RELAY_CONF_STRING, "object", "object, string or detail");
        const char *s = relay_conf_string(p, "style");
        relay_error_style(p, strcmp(s, "detail") == 0   ? RELAY_ERRORS_DETAIL
                             : strcmp(s, "string") == 0 ? RELAY_ERRORS_STRING
                                                        : RELAY_ERRORS_OBJECT);
        if (relay_route(p, "POST", "/v1/styles/validate", post_validate, RELAY_AUTH_PUBLIC) ||
            relay_route(p, "GET", "/v1/styles/:id", get_missing, RELAY_AUTH_PUBLIC))
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(styles, .version = "0.1.0", .init = init);
