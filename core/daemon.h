/* daemon.h - the state of one relay-server process: its plugins and what
 * they registered.  Built on the control thread at start-up, read-only once
 * the workers run (reload swaps settings, never these tables). */
#ifndef RELAY_DAEMON_H
#define RELAY_DAEMON_H

#include <stdbool.h>
#include <ltdl.h>
#include <uv.h>
#include "relay/plugin.h"
#include "config_file.h"
#include "settings.h"

typedef struct router router;
typedef struct worker worker;

#define MAX_HEALTH_HOOKS 4

struct relay_plugin {
        char *name;
        char *path;
        lt_dlhandle handle;
        const relay_plugin_desc *desc;
        relay_error_style_t error_style;
        char *mount; /* "" or "/prefix" */
        void *data;
        bool inited, started;
        relay_health_fn health[MAX_HEALTH_HOOKS];
        int n_health;
};

typedef struct service {
        struct service *next;
        char *name;
        unsigned version;
        const void *api;
        relay_plugin *owner;
} service;

typedef struct command {
        struct command *next;
        char *group, *name, *usage;
        relay_command_fn fn;
        relay_plugin *owner;
} command;

/* relay_request_hook: observers of finished requests. */
typedef struct request_hook {
        struct request_hook *next;
        relay_request_done_fn fn;
        void *data;
        relay_plugin *owner;
} request_hook;

typedef struct authenticator {
        struct authenticator *next;
        char *name;
        relay_authenticator_fn fn;
        relay_plugin *owner;
} authenticator;

struct relay_counter {
        struct relay_counter *next;
        char *name, *help;
        relay_plugin *owner;
        bool gauge;
        int64_t value; /* atomic */
};

typedef struct daemon {
        uv_loop_t *loop;        /* the control loop: signals, timers, extra listeners */
        relay_plugin **plugins; /* in dependency order */
        size_t n_plugins;
        relay_plugin core; /* owner of the built-in routes */
        router *router;
        service *services;
        authenticator *authenticators;
        command *commands; /* relayctl subcommands plugins add */
        request_hook *request_hooks;
        relay_counter *counters;
        uv_mutex_t counters_lock;
        worker **workers;
        size_t n_workers;
        int64_t connections;        /* open HTTP connections, atomic */
        relay_plugin *initialising; /* whose init() is running */
} daemon_t;

extern daemon_t relay_daemon;

/* Exit codes of relay-server (docs/operations.md). */
enum {
        EXIT_CONFIG = 1, /* unreadable or invalid configuration */
        EXIT_PLUGIN = 2, /* a plugin missing, incompatible or unorderable */
        EXIT_INIT = 3,   /* a plugin's init() or start() failed */
        EXIT_LISTEN = 4, /* an address could not be bound */
        EXIT_STORAGE = 5 /* storage driver missing, database unreachable, or a migration failed */
};

/* Reads the configuration, loads and initialises the plugins, and opens
 * storage as MODE says.  Returns 0 or an exit
 * code, with the one-line reason in ERR. */
typedef enum {
        SETUP_RUN,   /* relay-server: open storage and apply migrations */
        SETUP_CHECK, /* relay-server -t: load the driver, touch no database */
        SETUP_ADMIN  /* relayctl: open storage, leave migrations to the command */
} setup_mode;

int daemon_setup(const char *config_file, char **overrides, size_t n_overrides, setup_mode mode, char *err,
                 size_t err_len);
int daemon_start_plugins(char *err, size_t err_len);
/* Frees everything (after server_run), so leak checkers see a clean exit. */
void daemon_teardown(void);
/* The plugin folder from a configuration file, for --list-plugins. */
char *daemon_plugin_dir(const char *config_file, char **overrides, size_t n_overrides);

#endif
