/* health.c - the daemon's own routes: GET / (health) and GET /metrics. */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "http.h"
#include "metrics.h"
#include "settings.h"
#include "worker.h"

#define HEALTH_CACHE_MS 1000

/* Name, version, status, plugins, and what plugins add. */
static json_t *health_document(void)
{
        settings *s = settings_current();
        json_t *doc = json_pack("{s:s,s:s,s:s}", "name", s->name, "version", PACKAGE_VERSION, "status", "ok");
        json_t *plugins = json_array();
        for (size_t i = 0; i < relay_daemon.n_plugins; i++) {
                relay_plugin *p = relay_daemon.plugins[i];
                json_array_append_new(plugins, json_pack("{s:s,s:s}", "name", p->name, "version",
                                                         p->desc->version ? p->desc->version : ""));
                for (int h = 0; h < p->n_health; h++)
                        p->health[h](p, doc);
        }
        json_object_set_new(doc, "plugins", plugins);
        return doc;
}

/* The document is cached per worker for a second: health checks come often
 * and should cost next to nothing. */
static int get_health(relay_req *req)
{
        worker *w = req->w;
        uint64_t now = uv_now(&w->loop);
        if (!w->health_body || now - w->health_at >= HEALTH_CACHE_MS) {
                json_t *doc = health_document();
                char *body = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
                json_decref(doc);
                if (!body)
                        return relay_error(req, 500, "internal", "cannot build the health document");
                free(w->health_body);
                w->health_body = body;
                w->health_len = strlen(body);
                w->health_at = now;
        }
        return relay_reply(req, 200, "application/json", w->health_body, w->health_len);
}

static int get_metrics(relay_req *req)
{
        if (!settings_current()->metrics)
                return relay_error(req, 404, "not_found", "no such route");
        buf out = {0};
        metrics_render(&out);
        int rc = relay_reply(req, 200, "text/plain; version=0.0.4", out.data, out.len);
        buf_free(&out);
        return rc;
}

int health_register(void);
int health_register(void)
{
        relay_plugin *core = &relay_daemon.core;
        if (relay_route(core, "GET", "/", get_health, RELAY_AUTH_PUBLIC) != 0 ||
            relay_route(core, "GET", "/metrics", get_metrics, RELAY_AUTH_PUBLIC) != 0)
                return -1;
        return 0;
}
