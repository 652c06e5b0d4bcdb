/* arena.c - per-request bump allocator. */
#include <stdlib.h>
#include <string.h>
#include "arena.h"

#define ARENA_BLOCK 2048

struct arena_block {
        arena_block *next;
        size_t used, size;
        _Alignas(16) char data[];
};

static arena_block *block_new(size_t size)
{
        arena_block *b = malloc(sizeof(*b) + size);
        if (!b)
                return NULL;
        b->next = NULL;
        b->used = 0;
        b->size = size;
        return b;
}

void *arena_alloc(arena *a, size_t n)
{
        n = (n + 15) & ~(size_t)15;
        arena_block *b = a->head;
        if (!b || b->size - b->used < n) {
                size_t size = n > ARENA_BLOCK ? n : ARENA_BLOCK;
                arena_block *nb = block_new(size);
                if (!nb)
                        return NULL;
                nb->next = b;
                a->head = nb;
                if (!a->keep)
                        a->keep = nb;
                b = nb;
        }
        void *p = b->data + b->used;
        b->used += n;
        return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
        char *p = arena_alloc(a, n + 1);
        if (!p)
                return NULL;
        if (n) /* an empty value may come as NULL (sqlite3_column_blob of a zero-length blob) */
                memcpy(p, s, n);
        p[n] = '\0';
        return p;
}

char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

void arena_reset(arena *a)
{
        arena_block *b = a->head;
        while (b && b != a->keep) {
                arena_block *next = b->next;
                free(b);
                b = next;
        }
        a->head = a->keep;
        if (a->keep) {
                a->keep->used = 0;
                a->keep->next = NULL;
        }
}

void arena_free(arena *a)
{
        arena_reset(a);
        free(a->keep);
        a->head = a->keep = NULL;
}
