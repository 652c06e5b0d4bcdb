/* policies.c - the policies plugin: RelaySync's sync policies
 * ({"name","when","then"}), stored as named, versioned, soft-deletable
 * rule sets so RelayOne's YAML policies can share the model and the path,
 * and the engine other plugins call as the "policies" service
 * (policies_api.h).  docs/policies.md has the language. */
#include "policies.h"

relay_plugin *policies_self;

static const policies_api api = {
        .size = sizeof(policies_api),
        .load = policies_load,
        .decide = policies_decide,
        .free = policies_free,
        .version = policies_version,
};

static int init(relay_plugin *p)
{
        policies_self = p;
        relay_conf_declare(p, "max_per_tenant", RELAY_CONF_INT, "200", "most live policies one tenant may have");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_rate_limit(p, NULL, 120) || relay_migrations(p, policies_migrations) || policies_routes_register(p) ||
            relay_service_provide(p, POLICIES_SERVICE, POLICIES_SERVICE_VERSION, &api))
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(policies, .version = "1.0.0", .description = "sync policies: when/then rules, versioned; the engine",
             .requires = RELAY_REQUIRES("users"), .init = init);
