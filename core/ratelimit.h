/* ratelimit.h - token buckets shared by every worker thread. */
#ifndef RELAY_RATELIMIT_H
#define RELAY_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ratelimit_result {
        bool allowed;
        int64_t limit;     /* the bucket's size */
        int64_t remaining; /* whole tokens left after this request */
        int64_t reset_s;   /* seconds until the bucket is full again */
        int64_t retry_s;   /* when refused: seconds until one token is there */
} ratelimit_result;

/* Takes one token from the bucket KEY, which refills RATE tokens a second
 * up to BURST.  Safe from any thread. */
void ratelimit_take(const char *key, double rate, double burst, int64_t now_ms, ratelimit_result *out);
void ratelimit_free(void);

struct settings;
struct relay_req;

typedef struct route_limit {
        double rate, burst; /* rate 0: unlimited */
        bool per_principal;
} route_limit;

/* Reads every route's limit from S's configuration into S (at start-up
 * and before a reload publishes S). */
int ratelimit_compile(struct settings *s);
/* Charges REQ's bucket; true when it was refused (the 429 has been sent). */
bool ratelimit_refused(struct relay_req *req);

#endif
