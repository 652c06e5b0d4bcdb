/* metrics.h - request counters and latency, per worker so the hot path
 * takes no locks; GET /metrics adds the workers up. */
#ifndef RELAY_METRICS_H
#define RELAY_METRICS_H

#include <stdint.h>
#include "buf.h"

#define METRICS_STATUS_SLOTS 8
#define METRICS_BUCKETS 14

typedef struct route_stats {
        uint16_t status[METRICS_STATUS_SLOTS];
        uint64_t count[METRICS_STATUS_SLOTS];
} route_stats;

typedef struct worker_metrics {
        route_stats *routes; /* one per route, then one for unrouted requests */
        size_t n_routes;
        uint64_t buckets[METRICS_BUCKETS + 1];
        uint64_t latency_sum_us;
        uint64_t latency_count;
        int64_t open_connections;
} worker_metrics;

int metrics_init(worker_metrics *m, size_t n_routes);
void metrics_free(worker_metrics *m);
/* ROUTE_ID < 0: the request matched no route. */
void metrics_record(worker_metrics *m, int route_id, int status, uint64_t elapsed_ns);
void metrics_connection(worker_metrics *m, int delta);
/* Prometheus text for the whole daemon. */
void metrics_render(buf *out);

#endif
