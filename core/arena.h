/* arena.h - a per-request allocator: many small allocations, one reset.
 * Pointers stay valid until arena_reset() (blocks never move). */
#ifndef RELAY_ARENA_H
#define RELAY_ARENA_H

#include <stddef.h>

typedef struct arena_block arena_block;

typedef struct arena {
        arena_block *head; /* the block being filled */
        arena_block *keep; /* the first block, kept across resets */
} arena;

void *arena_alloc(arena *a, size_t n);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_strdup(arena *a, const char *s);
/* Frees every block but the first, which is kept for the next request. */
void arena_reset(arena *a);
void arena_free(arena *a);

#endif
