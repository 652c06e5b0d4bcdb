/* settings.c - core configuration keys, their defaults and their checks.
 * docs/configuration.md lists them; keep the two in step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "settings.h"
#include "net_addr.h"

static settings *current;
static conf *loading;

conf *conf_current(void)
{
        settings *s = settings_current();
        return s ? s->cfg : loading;
}

void conf_set_loading(conf *c) { loading = c; }

static const char *check_listen(const char *v)
{
        char word[256];
        if (!conf_list_item(v, 0, word, sizeof(word)))
                return "expected at least one address";
        for (size_t i = 0; conf_list_item(v, i, word, sizeof(word)); i++) {
                struct sockaddr_storage ss;
                if (net_addr_parse(word, &ss) != 0)
                        return "expected HOST:PORT, [IPV6]:PORT or :PORT";
        }
        return NULL;
}

static const char *check_workers(const char *v)
{
        int64_t n;
        if (strcmp(v, "auto") == 0)
                return NULL;
        if (conf_parse_int(v, &n) != 0 || n < 1 || n > 256)
                return "expected auto or 1-256";
        return NULL;
}

static const char *check_error_style(const char *v)
{
        if (strcmp(v, "object") && strcmp(v, "string") && strcmp(v, "detail"))
                return "expected object, string or detail";
        return NULL;
}

static const char *check_level(const char *v)
{
        relay_log_level l;
        return log_parse_level(v, &l) ? "expected error, warn, info or debug" : NULL;
}

static const char *check_format(const char *v)
{
        return strcmp(v, "text") && strcmp(v, "json") ? "expected text or json" : NULL;
}

static const char *check_positive(const char *v)
{
        int64_t n;
        return conf_parse_int(v, &n) || n < 1 ? "expected a positive integer" : NULL;
}

static const char *check_nonzero_size(const char *v)
{
        uint64_t n;
        return conf_parse_size(v, &n) || n == 0 ? "expected a size above zero" : NULL;
}

static const char *check_nonzero_duration(const char *v)
{
        uint64_t n;
        return conf_parse_duration_ms(v, &n) || n == 0 ? "expected a duration above zero" : NULL;
}

static const conf_key_def core_keys[] = {
        {"server", "listen", RELAY_CONF_LIST, "127.0.0.1:8080", check_listen, "addresses to serve HTTP on"},
        {"server", "workers", RELAY_CONF_STRING, "auto", check_workers, "worker threads (auto: one per CPU)"},
        {"server", "name", RELAY_CONF_STRING, "relay", NULL, "name in the GET / health document"},
        {"server", "error_style", RELAY_CONF_STRING, "object", check_error_style, "error shape outside plugin routes"},
        {"server", "shutdown_timeout", RELAY_CONF_DURATION, "10s", NULL,
         "how long SIGTERM waits for requests in flight"},
        {"server", "backlog", RELAY_CONF_INT, "511", check_positive, "listen(2) backlog"},
        {"server", "metrics", RELAY_CONF_BOOL, "true", NULL, "serve GET /metrics"},
        {"server", "data_dir", RELAY_CONF_STRING, RELAY_DATA_DIR, NULL, "folder for local state (SQLite database)"},
        {"limits", "max_body_size", RELAY_CONF_SIZE, "1m", check_nonzero_size, "largest request body (413 above)"},
        {"limits", "max_header_size", RELAY_CONF_SIZE, "16k", check_nonzero_size,
         "largest request line + headers (431 above)"},
        {"limits", "max_headers", RELAY_CONF_INT, "100", check_positive, "most header fields in a request (431 above)"},
        {"limits", "header_timeout", RELAY_CONF_DURATION, "10s", check_nonzero_duration,
         "time to receive a request's headers (408)"},
        {"limits", "body_timeout", RELAY_CONF_DURATION, "30s", check_nonzero_duration,
         "time to receive a request's body (408)"},
        {"limits", "idle_timeout", RELAY_CONF_DURATION, "60s", check_nonzero_duration,
         "idle keep-alive connections are closed after this"},
        {"limits", "stream_buffer", RELAY_CONF_SIZE, "1m", check_nonzero_size,
         "unsent bytes a connection may hold before it is cut off"},
        {"limits", "publish_backlog", RELAY_CONF_INT, "10000", check_positive,
         "published messages a worker may have waiting; past it the oldest are dropped"},
        {"limits", "sse_heartbeat", RELAY_CONF_DURATION, "15s", check_nonzero_duration,
         "comment line sent on idle SSE streams"},
        {"limits", "max_connections", RELAY_CONF_INT, "10000", check_positive,
         "open HTTP connections, all workers together"},
        {"log", "level", RELAY_CONF_STRING, "info", check_level, "error, warn, info or debug"},
        {"log", "format", RELAY_CONF_STRING, "text", check_format, "text or json (one object per line)"},
        {"log", "file", RELAY_CONF_STRING, "", NULL, "log file (empty: stderr); reopened on SIGHUP"},
        {"log", "access", RELAY_CONF_BOOL, "true", NULL, "log one line per request"},
        {"plugins", "load", RELAY_CONF_LIST, "", NULL, "plugins to load"},
};

int settings_declare(conf *c, const char *plugin_dir)
{
        if (conf_declare_table(c, core_keys, sizeof(core_keys) / sizeof(core_keys[0])) != 0)
                return -1;
        return conf_declare(c, "plugins", "dir", RELAY_CONF_STRING, plugin_dir, "folder holding plugin .so files",
                            NULL);
}

static char **split_list(const char *v, size_t *n)
{
        char word[512];
        size_t count = 0;
        while (conf_list_item(v, count, word, sizeof(word)))
                count++;
        char **out = calloc(count + 1, sizeof(char *));
        for (size_t i = 0; out && i < count; i++) {
                conf_list_item(v, i, word, sizeof(word));
                out[i] = strdup(word);
        }
        *n = count;
        return out;
}

static void free_list(char **l)
{
        for (size_t i = 0; l && l[i]; i++)
                free(l[i]);
        free(l);
}

static relay_error_style_t parse_style(const char *v)
{
        if (strcmp(v, "string") == 0)
                return RELAY_ERRORS_STRING;
        if (strcmp(v, "detail") == 0)
                return RELAY_ERRORS_DETAIL;
        return RELAY_ERRORS_OBJECT;
}

settings *settings_from_conf(conf *c, char *err, size_t err_len)
{
        settings *s = calloc(1, sizeof(*s));
        if (!s) {
                snprintf(err, err_len, "out of memory");
                return NULL;
        }
        s->cfg = c;
        s->listen = split_list(conf_get(c, "server", "listen"), &s->n_listen);
        const char *workers = conf_get(c, "server", "workers");
        s->workers = strcmp(workers, "auto") == 0 ? 0 : (int)conf_get_int(c, "server", "workers");
        s->name = conf_get(c, "server", "name");
        s->error_style = parse_style(conf_get(c, "server", "error_style"));
        s->shutdown_timeout_ms = conf_get_duration_ms(c, "server", "shutdown_timeout");
        s->backlog = (int)conf_get_int(c, "server", "backlog");
        s->metrics = conf_get_bool(c, "server", "metrics");
        s->data_dir = conf_get(c, "server", "data_dir");
        s->max_body_size = conf_get_size(c, "limits", "max_body_size");
        s->max_header_size = conf_get_size(c, "limits", "max_header_size");
        s->max_headers = (int)conf_get_int(c, "limits", "max_headers");
        s->header_timeout_ms = conf_get_duration_ms(c, "limits", "header_timeout");
        s->body_timeout_ms = conf_get_duration_ms(c, "limits", "body_timeout");
        s->idle_timeout_ms = conf_get_duration_ms(c, "limits", "idle_timeout");
        s->stream_buffer = conf_get_size(c, "limits", "stream_buffer");
        s->publish_backlog = (size_t)conf_get_int(c, "limits", "publish_backlog");
        s->sse_heartbeat_ms = conf_get_duration_ms(c, "limits", "sse_heartbeat");
        s->max_connections = conf_get_int(c, "limits", "max_connections");
        log_parse_level(conf_get(c, "log", "level"), &s->log_level);
        s->log_fmt = strcmp(conf_get(c, "log", "format"), "json") == 0 ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT;
        s->log_file = conf_get(c, "log", "file");
        s->access_log = conf_get_bool(c, "log", "access");
        s->plugin_dir = conf_get(c, "plugins", "dir");
        s->load = split_list(conf_get(c, "plugins", "load"), &s->n_load);
        if (!s->listen || !s->load) {
                settings_free(s);
                snprintf(err, err_len, "out of memory");
                return NULL;
        }
        return s;
}

void settings_free(settings *s)
{
        while (s) {
                settings *older = s->older;
                free_list(s->listen);
                free_list(s->load);
                free(s->route_limits);
                conf_free(s->cfg);
                free(s);
                s = older;
        }
}

settings *settings_current(void) { return __atomic_load_n(&current, __ATOMIC_ACQUIRE); }

void settings_publish(settings *s)
{
        s->older = current;
        __atomic_store_n(&current, s, __ATOMIC_RELEASE);
}
