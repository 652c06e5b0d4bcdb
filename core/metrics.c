/* metrics.c - Prometheus text from the workers' counters.  Each counter has
 * one writer (its worker); readers add them up with relaxed atomic loads. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "metrics.h"
#include "publish.h"
#include "router.h"
#include "worker.h"

static const double bucket_ms[METRICS_BUCKETS] = {0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define BUMP(x, n) __atomic_store_n(&(x), LOAD(x) + (n), __ATOMIC_RELAXED)

int metrics_init(worker_metrics *m, size_t n_routes)
{
        memset(m, 0, sizeof(*m));
        m->n_routes = n_routes + 1;
        m->routes = calloc(m->n_routes, sizeof(route_stats));
        return m->routes ? 0 : -1;
}

void metrics_free(worker_metrics *m)
{
        free(m->routes);
        m->routes = NULL;
}

void metrics_record(worker_metrics *m, int route_id, int status, uint64_t elapsed_ns)
{
        route_stats *rs = &m->routes[route_id < 0 ? m->n_routes - 1 : (size_t)route_id];
        int slot = METRICS_STATUS_SLOTS - 1; /* the last slot also takes overflow */
        for (int i = 0; i < METRICS_STATUS_SLOTS; i++) {
                if (rs->status[i] == status)
                        slot = i;
                else if (rs->status[i] == 0)
                        __atomic_store_n(&rs->status[i], (uint16_t)status, __ATOMIC_RELAXED), slot = i;
                else
                        continue;
                break;
        }
        BUMP(rs->count[slot], 1);
        double ms = (double)elapsed_ns / 1e6;
        int b = 0;
        while (b < METRICS_BUCKETS && ms > bucket_ms[b])
                b++;
        BUMP(m->buckets[b], 1);
        BUMP(m->latency_sum_us, elapsed_ns / 1000);
        BUMP(m->latency_count, 1);
}

void metrics_connection(worker_metrics *m, int delta) { BUMP(m->open_connections, delta); }

static void render_requests(buf *out)
{
        buf_puts(out, "# HELP relay_http_requests_total HTTP requests by route and status.\n"
                      "# TYPE relay_http_requests_total counter\n");
        router *r = relay_daemon.router;
        size_t n = router_count(r) + 1;
        for (size_t id = 0; id < n; id++) {
                const route *rt = router_route(r, id);
                /* a status may sit in different slots on different workers */
                uint16_t st[64];
                uint64_t ct[64];
                int k = 0;
                for (size_t w = 0; w < relay_daemon.n_workers; w++) {
                        route_stats *rs = &relay_daemon.workers[w]->metrics.routes[id];
                        for (int slot = 0; slot < METRICS_STATUS_SLOTS; slot++) {
                                uint16_t status = LOAD(rs->status[slot]);
                                int i = 0;
                                while (i < k && st[i] != status)
                                        i++;
                                if (!status || i == 64)
                                        continue;
                                if (i == k)
                                        st[k] = status, ct[k++] = 0;
                                ct[i] += LOAD(rs->count[slot]);
                        }
                }
                for (int i = 0; i < k; i++)
                        buf_printf(out,
                                   "relay_http_requests_total{plugin=\"%s\",route=\"%s%s%s\",status=\"%d\"} %" PRIu64
                                   "\n",
                                   rt ? rt->plugin->name : "", rt ? rt->method : "", rt ? " " : "",
                                   rt ? rt->pattern : "unmatched", st[i], ct[i]);
        }
}

static void render_latency(buf *out)
{
        uint64_t buckets[METRICS_BUCKETS + 1] = {0}, sum = 0, count = 0;
        int64_t open = 0;
        for (size_t w = 0; w < relay_daemon.n_workers; w++) {
                worker_metrics *m = &relay_daemon.workers[w]->metrics;
                for (int b = 0; b <= METRICS_BUCKETS; b++)
                        buckets[b] += LOAD(m->buckets[b]);
                sum += LOAD(m->latency_sum_us);
                count += LOAD(m->latency_count);
                open += LOAD(m->open_connections);
        }
        buf_puts(out, "# HELP relay_http_request_duration_seconds Time from request start to reply.\n"
                      "# TYPE relay_http_request_duration_seconds histogram\n");
        uint64_t cumulative = 0;
        for (int b = 0; b < METRICS_BUCKETS; b++) {
                cumulative += buckets[b];
                buf_printf(out, "relay_http_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                           bucket_ms[b] / 1000, cumulative);
        }
        cumulative += buckets[METRICS_BUCKETS];
        buf_printf(out, "relay_http_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cumulative);
        buf_printf(out, "relay_http_request_duration_seconds_sum %.6f\n", (double)sum / 1e6);
        buf_printf(out, "relay_http_request_duration_seconds_count %" PRIu64 "\n", count);
        buf_printf(out,
                   "# HELP relay_http_open_connections Open HTTP connections.\n"
                   "# TYPE relay_http_open_connections gauge\nrelay_http_open_connections %lld\n",
                   (long long)open);
        buf_printf(out,
                   "# HELP relay_publish_dropped_total Published messages dropped for a worker too far behind.\n"
                   "# TYPE relay_publish_dropped_total counter\nrelay_publish_dropped_total %lld\n",
                   (long long)publish_dropped_total());
}

static void render_plugin_counters(buf *out)
{
        uv_mutex_lock(&relay_daemon.counters_lock);
        for (relay_counter *c = relay_daemon.counters; c; c = c->next) {
                buf_printf(out, "# HELP relay_plugin_%s %s\n# TYPE relay_plugin_%s %s\n", c->name,
                           c->help ? c->help : c->name, c->name, c->gauge ? "gauge" : "counter");
                buf_printf(out, "relay_plugin_%s{plugin=\"%s\"} %lld\n", c->name, c->owner->name,
                           (long long)__atomic_load_n(&c->value, __ATOMIC_RELAXED));
        }
        uv_mutex_unlock(&relay_daemon.counters_lock);
}

void metrics_render(buf *out)
{
        render_requests(out);
        render_latency(out);
        render_plugin_counters(out);
}
