/* hash.h - FNV-1a over a string: the core's one hash for in-memory tables
 * (statement caches, rate-limit buckets).  Not for anything an attacker
 * must not be able to collide; those use libsodium. */
#ifndef RELAY_HASH_H
#define RELAY_HASH_H

#include <stdint.h>

static inline uint64_t hash_string(const char *s)
{
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

#endif
