/* settings.h - the core's own configuration, typed.  One immutable
 * snapshot per load; SIGHUP publishes a new one and workers pick it up on
 * their next request (old snapshots live until exit: reloads are rare). */
#ifndef RELAY_SETTINGS_H
#define RELAY_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>
#include "config_file.h"
#include "log.h"
#include "relay/plugin.h"

typedef struct settings {
        struct settings *older; /* kept alive until exit */
        conf *cfg;              /* the configuration it was read from */

        /* [server] */
        char **listen;
        size_t n_listen;
        int workers;
        const char *name;
        relay_error_style_t error_style;
        uint64_t shutdown_timeout_ms;
        int backlog;
        bool metrics;
        const char *data_dir;

        /* [limits] */
        uint64_t max_body_size;
        uint64_t max_header_size;
        int max_headers;
        uint64_t header_timeout_ms;
        uint64_t body_timeout_ms;
        uint64_t idle_timeout_ms;
        uint64_t stream_buffer;
        size_t publish_backlog;
        uint64_t sse_heartbeat_ms;
        int64_t max_connections;

        /* [log] */
        relay_log_level log_level;
        log_format log_fmt;
        const char *log_file;
        bool access_log;

        /* per route, compiled from the plugins' rate_limit keys (ratelimit.c) */
        struct route_limit *route_limits;
        size_t n_route_limits;

        /* [plugins] */
        const char *plugin_dir;
        char **load;
        size_t n_load;
} settings;

/* Declares every core key with its default and checks. */
int settings_declare(conf *c, const char *plugin_dir);
/* Reads a validated configuration.  Returns NULL with ERR on a bad value. */
settings *settings_from_conf(conf *c, char *err, size_t err_len);
void settings_free(settings *s);

/* The configuration plugins read: the one in force, or during start-up
 * (before the first snapshot is published) the one being loaded. */
conf *conf_current(void);
void conf_set_loading(conf *c);

/* The snapshot in force. */
settings *settings_current(void);
void settings_publish(settings *s);

#endif
