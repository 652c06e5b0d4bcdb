/* strmap.c - a small string-keyed hash map (open addressing, FNV-1a), for
 * statement caches (relay/driver.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "hash.h"
#include "relay/driver.h"

typedef struct slot {
        char *key;
        void *value;
} slot;

struct relay_map {
        slot *slots;
        size_t cap, count;
};

RELAY_API relay_map *relay_map_new(void)
{
        relay_map *m = calloc(1, sizeof(*m));
        if (m && !(m->slots = calloc(m->cap = 64, sizeof(slot)))) {
                free(m);
                return NULL;
        }
        return m;
}

static slot *find(relay_map *m, const char *key)
{
        size_t i = hash_string(key) & (m->cap - 1);
        while (m->slots[i].key && strcmp(m->slots[i].key, key) != 0)
                i = (i + 1) & (m->cap - 1);
        return &m->slots[i];
}

RELAY_API void *relay_map_get(relay_map *m, const char *key) { return find(m, key)->value; }

static int grow(relay_map *m)
{
        relay_map bigger = {calloc(m->cap * 2, sizeof(slot)), m->cap * 2, 0};
        if (!bigger.slots)
                return -1;
        for (size_t i = 0; i < m->cap; i++)
                if (m->slots[i].key)
                        *find(&bigger, m->slots[i].key) = m->slots[i];
        free(m->slots);
        m->slots = bigger.slots;
        m->cap = bigger.cap;
        return 0;
}

RELAY_API void *relay_map_put(relay_map *m, const char *key, void *value)
{
        if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0)
                return value; /* out of memory: the caller keeps ownership */
        slot *s = find(m, key);
        if (s->key) {
                void *old = s->value;
                s->value = value;
                return old;
        }
        if (!(s->key = strdup(key)))
                return value;
        s->value = value;
        m->count++;
        return NULL;
}

RELAY_API size_t relay_map_count(relay_map *m) { return m->count; }

RELAY_API void relay_map_free(relay_map *m, void (*fn)(void *value))
{
        if (!m)
                return;
        for (size_t i = 0; i < m->cap; i++)
                if (m->slots[i].key) {
                        if (fn)
                                fn(m->slots[i].value);
                        free(m->slots[i].key);
                }
        free(m->slots);
        free(m);
}
