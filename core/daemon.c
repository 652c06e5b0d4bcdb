/* daemon.c - start-up and teardown of the process-wide state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "daemon.h"
#include "http_client.h"
#include "events_internal.h"
#include "idempotency_internal.h"
#include "log.h"
#include "ratelimit.h"
#include "migrate.h"
#include "plugin_loader.h"
#include "router.h"
#include "settings.h"
#include "storage.h"
#include "worker.h"

daemon_t relay_daemon;

int health_register(void);
void conn_init_parser_settings(void);

static int base_setup(char *err, size_t err_len)
{
        if (sodium_init() < 0) {
                snprintf(err, err_len, "libsodium failed to initialise");
                return -1;
        }
        if (lt_dlinit() != 0) {
                snprintf(err, err_len, "libltdl failed to initialise: %s", lt_dlerror());
                return -1;
        }
        uv_mutex_init(&relay_daemon.counters_lock);
        relay_daemon.loop = uv_default_loop();
        relay_daemon.core.name = "core";
        relay_daemon.router = router_new();
        conn_init_parser_settings();
        return relay_daemon.router ? 0 : -1;
}

/* The configuration with the core's keys declared and checked. */
static conf *load_conf(const char *file, char **overrides, size_t n, char *err, size_t err_len)
{
        conf *c = conf_load(file, overrides, n, err, err_len);
        if (!c)
                return NULL;
        if (settings_declare(c, RELAY_PLUGIN_DIR) != 0 || storage_declare(c, RELAY_STORAGE_DIR) != 0 ||
            conf_validate(c, true, err, err_len) != 0) {
                conf_free(c);
                return NULL;
        }
        return c;
}

int daemon_setup(const char *config_file, char **overrides, size_t n_overrides, setup_mode mode, char *err,
                 size_t err_len)
{
        bool check_only = mode == SETUP_CHECK;
        if (base_setup(err, err_len) != 0)
                return EXIT_CONFIG;
        conf *c = load_conf(config_file, overrides, n_overrides, err, err_len);
        if (!c)
                return EXIT_CONFIG;
        settings *s = settings_from_conf(c, err, err_len);
        if (!s) {
                conf_free(c);
                return EXIT_CONFIG;
        }
        settings_publish(s);
        if (mode == SETUP_RUN && log_configure(s->log_file, s->log_level, s->log_fmt, err, err_len) != 0)
                return EXIT_CONFIG;
        relay_daemon.core.error_style = s->error_style;
        if (health_register() != 0) {
                snprintf(err, err_len, "cannot register the built-in routes");
                return EXIT_INIT;
        }
        if (plugins_load(s->plugin_dir, s->load, s->n_load, err, err_len) != 0)
                return EXIT_PLUGIN;
        if (plugins_init(err, err_len) != 0)
                return EXIT_INIT;
        /* Now that plugins have declared their keys, check their sections. */
        if (conf_validate(c, false, err, err_len) != 0)
                return EXIT_CONFIG;
        if (ratelimit_compile(s) != 0) {
                snprintf(err, err_len, "out of memory");
                return EXIT_CONFIG;
        }
        if (storage_open(check_only, err, err_len) != 0)
                return EXIT_STORAGE;
        if (mode == SETUP_RUN && migrate_apply(storage_control_db(), err, err_len) != 0)
                return EXIT_STORAGE;
        return 0;
}

int daemon_start_plugins(char *err, size_t err_len)
{
        if (plugins_start(err, err_len) != 0)
                return EXIT_INIT;
        events_start();
        jobs_start();
        idem_start();
        return 0;
}

char *daemon_plugin_dir(const char *config_file, char **overrides, size_t n_overrides)
{
        char err[512];
        conf *c = config_file || n_overrides ? load_conf(config_file, overrides, n_overrides, err, sizeof(err)) : NULL;
        const char *dir = c ? conf_get(c, "plugins", "dir") : NULL;
        char *out = strdup(dir ? dir : RELAY_PLUGIN_DIR);
        conf_free(c);
        return out;
}

void daemon_teardown(void)
{
        events_free();
        jobs_free();
        migrate_free();
        storage_close();
        ratelimit_free();
        plugins_unload();
        for (size_t i = 0; i < relay_daemon.n_workers; i++)
                worker_free(relay_daemon.workers[i]);
        free(relay_daemon.workers);
        relay_daemon.workers = NULL;
        relay_daemon.n_workers = 0;
        router_free(relay_daemon.router);
        relay_daemon.router = NULL;
        for (service *s = relay_daemon.services, *n; s; s = n) {
                n = s->next;
                free(s->name), free(s);
        }
        for (command *c = relay_daemon.commands, *n; c; c = n) {
                n = c->next;
                free(c->group), free(c->name), free(c->usage), free(c);
        }
        relay_daemon.commands = NULL;
        for (request_hook *h = relay_daemon.request_hooks, *n; h; h = n) {
                n = h->next;
                free(h);
        }
        relay_daemon.request_hooks = NULL;
        for (authenticator *a = relay_daemon.authenticators, *n; a; a = n) {
                n = a->next;
                free(a->name), free(a);
        }
        for (relay_counter *c = relay_daemon.counters, *n; c; c = n) {
                n = c->next;
                free(c->name), free(c->help), free(c);
        }
        relay_daemon.services = NULL;
        relay_daemon.authenticators = NULL;
        relay_daemon.counters = NULL;
        settings_free(settings_current());
        uv_loop_close(relay_daemon.loop);
        http_client_free();
        lt_dlexit();
}
