/* ratelimit.c - token buckets keyed by tenant (or principal, or address)
 * and limit class, shared by all worker threads so a limit holds however
 * the kernel spreads a client's connections.  The table is split into
 * shards, each behind its own mutex, so workers rarely wait on each other.
 * Idle buckets (full again) are dropped when a shard grows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "daemon.h"
#include "hash.h"
#include "http.h"
#include "ratelimit.h"
#include "router.h"
#include "settings.h"

#define SHARDS 64
#define SHARD_PURGE_AT 4096

typedef struct bucket {
        struct bucket *next;
        uint64_t hash;
        double tokens;
        int64_t at_ms; /* when tokens was computed */
        double rate, burst;
        char key[];
} bucket;

typedef struct shard {
        uv_mutex_t lock;
        bucket **slots;
        size_t n_slots, count;
} shard;

static shard shards[SHARDS];
static uv_once_t once = UV_ONCE_INIT;

static void init_shards(void)
{
        for (int i = 0; i < SHARDS; i++)
                uv_mutex_init(&shards[i].lock);
}

static int64_t ceil_pos(double x)
{
        int64_t r = (int64_t)x;
        return (double)r < x ? r + 1 : r;
}

static double level(const bucket *b, int64_t now_ms)
{
        double t = b->tokens + b->rate * (double)(now_ms - b->at_ms) / 1000.0;
        return t > b->burst ? b->burst : t;
}

/* Drops buckets that have filled up again: they hold no state worth keeping. */
static void purge(shard *s, int64_t now_ms)
{
        for (size_t i = 0; i < s->n_slots; i++)
                for (bucket **p = &s->slots[i]; *p;) {
                        if (level(*p, now_ms) >= (*p)->burst) {
                                bucket *dead = *p;
                                *p = dead->next;
                                free(dead);
                                s->count--;
                        } else {
                                p = &(*p)->next;
                        }
                }
}

static bucket *find_or_add(shard *s, const char *key, uint64_t h, double rate, double burst, int64_t now_ms)
{
        if (!s->slots) {
                s->n_slots = 256;
                if (!(s->slots = calloc(s->n_slots, sizeof(bucket *))))
                        return NULL;
        }
        size_t slot = (size_t)(h >> 6) & (s->n_slots - 1);
        for (bucket *b = s->slots[slot]; b; b = b->next)
                if (b->hash == h && strcmp(b->key, key) == 0)
                        return b;
        if (s->count >= SHARD_PURGE_AT)
                purge(s, now_ms);
        size_t n = strlen(key);
        bucket *b = malloc(sizeof(*b) + n + 1);
        if (!b)
                return NULL;
        memcpy(b->key, key, n + 1);
        b->hash = h;
        b->tokens = burst;
        b->at_ms = now_ms;
        b->rate = rate;
        b->burst = burst;
        b->next = s->slots[slot];
        s->slots[slot] = b;
        s->count++;
        return b;
}

void ratelimit_take(const char *key, double rate, double burst, int64_t now_ms, ratelimit_result *out)
{
        uv_once(&once, init_shards);
        uint64_t h = hash_string(key);
        shard *s = &shards[h & (SHARDS - 1)];
        uv_mutex_lock(&s->lock);
        bucket *b = find_or_add(s, key, h, rate, burst, now_ms);
        if (!b) { /* out of memory: let the request through rather than fail it */
                uv_mutex_unlock(&s->lock);
                *out = (ratelimit_result){.allowed = true, .limit = (int64_t)burst, .remaining = (int64_t)burst};
                return;
        }
        b->rate = rate; /* a reload may have changed the limit */
        b->burst = burst;
        double t = level(b, now_ms);
        out->allowed = t >= 1.0;
        if (out->allowed)
                t -= 1.0;
        b->tokens = t;
        b->at_ms = now_ms;
        uv_mutex_unlock(&s->lock);
        out->limit = (int64_t)burst;
        out->remaining = (int64_t)t; /* t >= 0: truncation is floor */
        out->reset_s = ceil_pos((burst - t) / rate);
        out->retry_s = out->allowed ? 0 : ceil_pos((1.0 - t) / rate);
        if (!out->allowed && out->retry_s < 1)
                out->retry_s = 1;
}

void ratelimit_free(void)
{
        for (int i = 0; i < SHARDS; i++) {
                shard *s = &shards[i];
                for (size_t j = 0; j < s->n_slots; j++)
                        for (bucket *b = s->slots[j], *n; b; b = n) {
                                n = b->next;
                                free(b);
                        }
                free(s->slots);
                s->slots = NULL;
                s->n_slots = s->count = 0;
        }
}

/* ------------------------------------------------------------ per route */

static double rate_value(const conf *c, const char *section, const char *key)
{
        const char *v = conf_get(c, section, key);
        return v && *v ? strtod(v, NULL) : -1;
}

int ratelimit_compile(settings *s)
{
        router *r = relay_daemon.router;
        size_t n = router_count(r);
        route_limit *limits = calloc(n ? n : 1, sizeof(route_limit));
        if (!limits)
                return -1;
        for (size_t i = 0; i < n; i++) {
                const route *rt = router_route(r, i);
                const char *section = rt->plugin->name;
                if (rt->plugin == &relay_daemon.core)
                        continue; /* health and metrics are not limited */
                double rate = -1;
                if (rt->rate_class) {
                        char key[128];
                        snprintf(key, sizeof(key), "rate_limit.%s", rt->rate_class);
                        rate = rate_value(s->cfg, section, key);
                }
                if (rate < 0)
                        rate = rate_value(s->cfg, section, "rate_limit");
                int64_t burst = conf_get_int(s->cfg, section, "rate_burst");
                limits[i].rate = rate > 0 ? rate : 0;
                limits[i].burst = burst > 0 ? (double)burst : (rate > 1 ? rate : 1);
                limits[i].per_principal = strcmp(conf_get(s->cfg, section, "rate_per"), "principal") == 0;
        }
        free(s->route_limits);
        s->route_limits = limits;
        s->n_route_limits = n;
        return 0;
}

/* Who a bucket counts: the tenant (or the principal), else the address
 * (public routes, and requests whose credentials failed). */
static const char *bucket_owner(relay_req *req, bool per_principal)
{
        /* Public routes count per address: authenticating them here would
         * let a request with credentials escape an address's limit. */
        const relay_principal *p = req->has_principal ? &req->principal : NULL;
        if (p && per_principal && p->subject)
                return p->subject;
        if (p && p->tenant)
                return p->tenant;
        return relay_peer_ip(req);
}

bool ratelimit_refused(relay_req *req)
{
        settings *s = settings_current();
        const route *rt = req->route;
        if (!s->route_limits || (size_t)rt->id >= s->n_route_limits)
                return false;
        const route_limit *lim = &s->route_limits[rt->id];
        if (lim->rate <= 0)
                return false;
        char key[256];
        snprintf(key, sizeof(key), "%s|%s|%s", rt->plugin->name, rt->rate_class ? rt->rate_class : "",
                 bucket_owner(req, lim->per_principal));
        ratelimit_result res;
        ratelimit_take(key, lim->rate, lim->burst, (int64_t)(uv_hrtime() / 1000000), &res);
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)res.limit);
        relay_set_header(req, "RateLimit-Limit", v);
        snprintf(v, sizeof(v), "%lld", (long long)res.remaining);
        relay_set_header(req, "RateLimit-Remaining", v);
        snprintf(v, sizeof(v), "%lld", (long long)res.reset_s);
        relay_set_header(req, "RateLimit-Reset", v);
        if (res.allowed)
                return false;
        snprintf(v, sizeof(v), "%lld", (long long)res.retry_s);
        relay_set_header(req, "Retry-After", v);
        relay_error(req, 429, "rate_limited", "too many requests: retry in %llds", (long long)res.retry_s);
        return true;
}
