/* plugin_api.c - what a plugin registers (relay/plugin.h, relay/conf.h,
 * relay/log.h): routes, authenticators, services, configuration keys,
 * health hooks and counters.  Registration happens in init() on the control
 * thread, before any worker runs, so these tables need no locks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config_file.h"
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "router.h"
#include "settings.h"

RELAY_API const char *relay_plugin_name(relay_plugin *p) { return p ? p->name : "core"; }
RELAY_API void relay_plugin_set_data(relay_plugin *p, void *data) { p->data = data; }
RELAY_API void *relay_plugin_data(relay_plugin *p) { return p->data; }

RELAY_API void relay_abi(unsigned *major, unsigned *minor)
{
        *major = RELAY_SDK_ABI_MAJOR;
        *minor = RELAY_SDK_ABI_MINOR;
}

RELAY_API void relay_error_style(relay_plugin *p, relay_error_style_t style) { p->error_style = style; }

/* Routes may only be added while plugins initialise. */
static int registering(relay_plugin *p, const char *what)
{
        if (relay_daemon.initialising == p || p == &relay_daemon.core)
                return 0;
        log_write(RELAY_LOG_ERROR, p->name, NULL, "%s may only be called from init()", what);
        return RELAY_ERR;
}

static char route_error[512];

static const char *check_rate_per(const char *v)
{
        return strcmp(v, "tenant") && strcmp(v, "principal") ? "expected tenant or principal" : NULL;
}

static const char *check_rate(const char *v)
{
        char *end;
        double d = strtod(v, &end);
        if (!*v)
                return NULL; /* empty: the plugin's rate_limit */
        return *end || d < 0 || d != d ? "expected requests per second, such as 120 or 0.5 (0: unlimited)" : NULL;
}

/* rate_limit.CLASS, empty by default (the plugin's rate_limit applies). */
static int declare_rate_class(relay_plugin *p, const char *rate_class)
{
        char key[128];
        snprintf(key, sizeof(key), "rate_limit.%s", rate_class);
        conf *c = conf_current();
        if (conf_find_key(c, p->name, key))
                return RELAY_OK;
        return conf_declare(c, p->name, key, RELAY_CONF_STRING, "", "requests per second per tenant for this class",
                            check_rate) == 0
                       ? RELAY_OK
                       : RELAY_ERR;
}

RELAY_API int relay_rate_limit(relay_plugin *p, const char *rate_class, double per_second)
{
        if (registering(p, "relay_rate_limit") != 0 || per_second < 0)
                return RELAY_ERR;
        char key[128], value[32];
        snprintf(key, sizeof(key), rate_class ? "rate_limit.%s" : "rate_limit", rate_class);
        snprintf(value, sizeof(value), "%g", per_second);
        if (rate_class && declare_rate_class(p, rate_class) != 0)
                return RELAY_ERR;
        return conf_set_default(conf_current(), p->name, key, value) == 0 ? RELAY_OK : RELAY_ERR;
}

/* Keys every plugin section has: mount, and its rate limits. */
int plugin_api_declare_common(relay_plugin *p, conf_check_fn check_mount);
int plugin_api_declare_common(relay_plugin *p, conf_check_fn check_mount)
{
        conf *c = conf_current();
        static const char *const per_values = "tenant or principal";
        if (conf_declare(c, p->name, "mount", RELAY_CONF_STRING, "", "path prefix for the plugin's routes",
                         check_mount) ||
            conf_declare(c, p->name, "rate_limit", RELAY_CONF_STRING, "0",
                         "requests per second per tenant (0: unlimited)", check_rate) ||
            conf_declare(c, p->name, "rate_burst", RELAY_CONF_INT, "0", "bucket size (0: one second's worth)", NULL) ||
            conf_declare(c, p->name, "rate_per", RELAY_CONF_STRING, "tenant", per_values, check_rate_per))
                return -1;
        return 0;
}

RELAY_API int relay_route_ex(relay_plugin *p, const relay_route_opts *o)
{
        if (registering(p, "relay_route") != 0)
                return RELAY_ERR;
        if (!o || o->size < offsetof(relay_route_opts, data) || !o->method || !o->pattern || !o->handler) {
                snprintf(route_error, sizeof(route_error),
                         "plugin '%s': relay_route needs a method, pattern and handler", p->name);
                return RELAY_ERR;
        }
        char pattern[1024];
        snprintf(pattern, sizeof(pattern), "%s%s", p->mount ? p->mount : "", o->pattern);
        route proto = {.method = (char *)o->method,
                       .pattern = pattern,
                       .handler = o->handler,
                       .auth = o->auth,
                       .role = (char *)o->role,
                       .scope = (char *)o->scope,
                       .plugin = p};
        if (o->size >= offsetof(relay_route_opts, data) + sizeof(void *))
                proto.data = o->data;
        if (o->size >= offsetof(relay_route_opts, rate_class) + sizeof(char *)) {
                proto.kind = (char *)o->kind;
                proto.rate_class = (char *)o->rate_class;
                if (o->rate_class && declare_rate_class(p, o->rate_class) != 0)
                        return RELAY_ERR;
        }
        if (router_add(relay_daemon.router, &proto, route_error, sizeof(route_error)) != 0)
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_API int relay_route(relay_plugin *p, const char *method, const char *pattern, relay_handler handler,
                          relay_auth auth)
{
        relay_route_opts o = {
                .size = sizeof(o), .method = method, .pattern = pattern, .handler = handler, .auth = auth};
        return relay_route_ex(p, &o);
}

RELAY_API int relay_route_role(relay_plugin *p, const char *method, const char *pattern, relay_handler handler,
                               const char *roles)
{
        relay_route_opts o = {.size = sizeof(o),
                              .method = method,
                              .pattern = pattern,
                              .handler = handler,
                              .auth = RELAY_AUTH_TENANT,
                              .role = roles};
        return relay_route_ex(p, &o);
}

/* The last registration failure, for the loader's message. */
const char *plugin_api_route_error(void);
const char *plugin_api_route_error(void) { return route_error; }

void plugin_api_clear_error(void);
void plugin_api_clear_error(void) { route_error[0] = '\0'; }

RELAY_API int relay_authenticator(relay_plugin *p, const char *name, relay_authenticator_fn fn)
{
        if (registering(p, "relay_authenticator") != 0)
                return RELAY_ERR;
        authenticator *a = calloc(1, sizeof(*a));
        if (!a || !(a->name = strdup(name))) {
                free(a);
                return RELAY_ERR;
        }
        a->fn = fn;
        a->owner = p;
        authenticator **tail = &relay_daemon.authenticators;
        while (*tail)
                tail = &(*tail)->next;
        *tail = a;
        return RELAY_OK;
}

RELAY_API int relay_command(relay_plugin *p, const char *group, const char *name, const char *usage,
                            relay_command_fn fn)
{
        if (registering(p, "relay_command") != 0 || !group || !name || !fn)
                return RELAY_ERR;
        for (command *c = relay_daemon.commands; c; c = c->next)
                if (strcmp(c->group, group) == 0 && strcmp(c->name, name) == 0) {
                        log_write(RELAY_LOG_ERROR, p->name, NULL, "relayctl command '%s %s' is already plugin '%s''s",
                                  group, name, c->owner->name);
                        return RELAY_ERR;
                }
        command *c = calloc(1, sizeof(*c));
        if (!c || !(c->group = strdup(group)) || !(c->name = strdup(name)) ||
            !(c->usage = strdup(usage ? usage : ""))) {
                if (c)
                        free(c->group), free(c->name);
                free(c);
                return RELAY_ERR;
        }
        c->fn = fn;
        c->owner = p;
        command **tail = &relay_daemon.commands;
        while (*tail)
                tail = &(*tail)->next;
        *tail = c;
        return RELAY_OK;
}

RELAY_API int relay_service_provide(relay_plugin *p, const char *name, unsigned version, const void *api)
{
        if (registering(p, "relay_service_provide") != 0)
                return RELAY_ERR;
        for (service *s = relay_daemon.services; s; s = s->next)
                if (strcmp(s->name, name) == 0) {
                        log_write(RELAY_LOG_ERROR, p->name, NULL, "service '%s' is already provided by plugin '%s'",
                                  name, s->owner->name);
                        return RELAY_ERR;
                }
        service *s = calloc(1, sizeof(*s));
        if (!s || !(s->name = strdup(name))) {
                free(s);
                return RELAY_ERR;
        }
        s->version = version;
        s->api = api;
        s->owner = p;
        s->next = relay_daemon.services;
        relay_daemon.services = s;
        return RELAY_OK;
}

RELAY_API const void *relay_service_get(relay_plugin *p, const char *name, unsigned min_version)
{
        for (service *s = relay_daemon.services; s; s = s->next)
                if (strcmp(s->name, name) == 0)
                        return s->version >= min_version ? s->api : NULL;
        return NULL;
}

RELAY_API const char *relay_data_dir(void)
{
        const char *d = settings_current() ? settings_current()->data_dir : NULL;
        return d && *d ? d : ".";
}

RELAY_API int relay_request_hook(relay_plugin *p, relay_request_done_fn fn, void *data)
{
        if (!fn || registering(p, "relay_request_hook") != 0)
                return RELAY_ERR;
        request_hook *h = calloc(1, sizeof(*h));
        if (!h)
                return RELAY_ERR;
        h->fn = fn;
        h->data = data;
        h->owner = p;
        request_hook **tail = &relay_daemon.request_hooks; /* in registration order */
        while (*tail)
                tail = &(*tail)->next;
        *tail = h;
        return RELAY_OK;
}

RELAY_API int relay_health_hook(relay_plugin *p, relay_health_fn fn)
{
        if (registering(p, "relay_health_hook") != 0 || p->n_health == MAX_HEALTH_HOOKS)
                return RELAY_ERR;
        p->health[p->n_health++] = fn;
        return RELAY_OK;
}

static relay_counter *counter_new(relay_plugin *p, const char *name, const char *help, bool gauge)
{
        for (const char *c = name; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
                        return NULL; /* Prometheus names: [a-z0-9_] here */
        relay_counter *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->name = strdup(name);
        c->help = help ? strdup(help) : NULL;
        c->owner = p;
        c->gauge = gauge;
        uv_mutex_lock(&relay_daemon.counters_lock);
        c->next = relay_daemon.counters;
        relay_daemon.counters = c;
        uv_mutex_unlock(&relay_daemon.counters_lock);
        return c;
}

RELAY_API relay_counter *relay_counter_new(relay_plugin *p, const char *name, const char *help)
{
        return counter_new(p, name, help, false);
}

RELAY_API relay_counter *relay_gauge_new(relay_plugin *p, const char *name, const char *help)
{
        return counter_new(p, name, help, true);
}

RELAY_API void relay_counter_add(relay_counter *c, int64_t n)
{
        if (c)
                __atomic_add_fetch(&c->value, n, __ATOMIC_RELAXED);
}

RELAY_API void relay_gauge_set(relay_counter *c, int64_t v)
{
        if (c)
                __atomic_store_n(&c->value, v, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------ configuration */

RELAY_API int relay_conf_declare(relay_plugin *p, const char *key, relay_conf_type type, const char *default_value,
                                 const char *help)
{
        if (registering(p, "relay_conf_declare") != 0)
                return RELAY_ERR;
        if (strcmp(key, "mount") == 0 ||
            conf_declare(conf_current(), p->name, key, type, default_value, help, NULL) != 0) {
                log_write(RELAY_LOG_ERROR, p->name, NULL, "configuration key '%s' declared twice", key);
                return RELAY_ERR;
        }
        return RELAY_OK;
}

RELAY_API const char *relay_conf_string(relay_plugin *p, const char *key)
{
        const char *v = conf_get(conf_current(), p->name, key);
        return v ? v : "";
}

RELAY_API int64_t relay_conf_int(relay_plugin *p, const char *key)
{
        return conf_get_int(conf_current(), p->name, key);
}

RELAY_API bool relay_conf_bool(relay_plugin *p, const char *key) { return conf_get_bool(conf_current(), p->name, key); }

RELAY_API uint64_t relay_conf_size(relay_plugin *p, const char *key)
{
        return conf_get_size(conf_current(), p->name, key);
}

RELAY_API uint64_t relay_conf_duration_ms(relay_plugin *p, const char *key)
{
        return conf_get_duration_ms(conf_current(), p->name, key);
}

RELAY_API int relay_conf_list_item(relay_plugin *p, const char *key, size_t i, char *out, size_t out_len)
{
        return conf_list_item(conf_get(conf_current(), p->name, key), i, out, out_len) ? 1 : 0;
}

/* ------------------------------------------------------------------ logging */

RELAY_API void relay_log(relay_plugin *p, relay_log_level level, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        log_vwrite(level, relay_plugin_name(p), NULL, fmt, ap);
        va_end(ap);
}

RELAY_API void relay_req_log(relay_req *req, relay_log_level level, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        log_vwrite(level, req->plugin ? req->plugin->name : "http", req_id(req), fmt, ap);
        va_end(ap);
}
