/* db_result.c - rows read from the database: the drivers fill them
 * (relay/driver.h), plugins read them (relay/db.h).
 *
 * Column names and text values live in the result's own arena (core/arena.c),
 * freed with it: a record lookup used to be two dozen malloc/free pairs (a
 * name per column, a copy per value), a tenth of a GET /v1/records/:id. */
#include <stdlib.h>
#include <string.h>
#include "arena.h"
#include "db_result.h"

typedef struct cell {
        char type; /* 'n', 'i', 'd', 't', 'b' */
        int64_t i;
        double d;
        char *p; /* text (NUL-terminated) or blob */
        size_t len;
} cell;

struct relay_db_result {
        size_t n_cols;
        char **names;
        cell *cells; /* n_rows * n_cols */
        size_t n_rows, cap_rows;
        size_t cursor; /* 1-based row after relay_db_next; 0 before */
        int64_t changes;
        arena mem; /* column names and values */
};

relay_db_result *db_result_new(void) { return calloc(1, sizeof(relay_db_result)); }

RELAY_API void relay_db_free(relay_db_result *r)
{
        if (!r)
                return;
        arena_free(&r->mem);
        free(r->names);
        free(r->cells);
        free(r);
}

/* ------------------------------------------------------------------ builder */

RELAY_API int relay_dbres_columns(relay_db_result *r, size_t n)
{
        if (r->n_cols || !(r->names = calloc(n ? n : 1, sizeof(char *))))
                return RELAY_ERR;
        r->n_cols = n;
        return RELAY_OK;
}

RELAY_API int relay_dbres_column_name(relay_db_result *r, size_t col, const char *name)
{
        if (col >= r->n_cols)
                return RELAY_ERR;
        if (!name)
                name = "";
        r->names[col] = arena_strndup(&r->mem, name, strlen(name));
        return r->names[col] ? RELAY_OK : RELAY_ERR;
}

RELAY_API int relay_dbres_row(relay_db_result *r)
{
        if (r->n_rows == r->cap_rows) {
                size_t cap = r->cap_rows ? r->cap_rows * 2 : 8;
                cell *grown = realloc(r->cells, cap * (r->n_cols ? r->n_cols : 1) * sizeof(cell));
                if (!grown)
                        return RELAY_ERR;
                r->cells = grown;
                r->cap_rows = cap;
        }
        memset(&r->cells[r->n_rows * r->n_cols], 0, r->n_cols * sizeof(cell));
        for (size_t c = 0; c < r->n_cols; c++)
                r->cells[r->n_rows * r->n_cols + c].type = 'n';
        r->n_rows++;
        return RELAY_OK;
}

static cell *building(relay_db_result *r, size_t col)
{
        if (!r->n_rows || col >= r->n_cols)
                return NULL;
        cell *c = &r->cells[(r->n_rows - 1) * r->n_cols + col];
        memset(c, 0, sizeof(*c)); /* a value set twice: the first copy stays in the arena */
        return c;
}

RELAY_API int relay_dbres_null(relay_db_result *r, size_t col)
{
        cell *c = building(r, col);
        if (!c)
                return RELAY_ERR;
        c->type = 'n';
        return RELAY_OK;
}

RELAY_API int relay_dbres_int(relay_db_result *r, size_t col, int64_t v)
{
        cell *c = building(r, col);
        if (!c)
                return RELAY_ERR;
        c->type = 'i';
        c->i = v;
        c->d = (double)v;
        return RELAY_OK;
}

RELAY_API int relay_dbres_double(relay_db_result *r, size_t col, double v)
{
        cell *c = building(r, col);
        if (!c)
                return RELAY_ERR;
        c->type = 'd';
        c->d = v;
        c->i = (int64_t)v;
        return RELAY_OK;
}

static int put_bytes(relay_db_result *r, size_t col, char type, const void *p, size_t len)
{
        cell *c = building(r, col);
        if (!c || !(c->p = arena_strndup(&r->mem, p, len)))
                return RELAY_ERR;
        c->len = len;
        c->type = type;
        return RELAY_OK;
}

RELAY_API int relay_dbres_text(relay_db_result *r, size_t col, const char *s, size_t len)
{
        return put_bytes(r, col, 't', s, len);
}

RELAY_API int relay_dbres_blob(relay_db_result *r, size_t col, const void *p, size_t len)
{
        return put_bytes(r, col, 'b', p, len);
}

RELAY_API void relay_dbres_changes(relay_db_result *r, int64_t n) { r->changes = n; }

/* ------------------------------------------------------------------ reading */

RELAY_API int relay_db_next(relay_db_result *r)
{
        if (!r || r->cursor >= r->n_rows)
                return 0;
        r->cursor++;
        return 1;
}

RELAY_API size_t relay_db_rows(relay_db_result *r) { return r ? r->n_rows : 0; }
RELAY_API size_t relay_db_columns(relay_db_result *r) { return r ? r->n_cols : 0; }
RELAY_API int64_t relay_db_changes(relay_db_result *r) { return r ? r->changes : 0; }

RELAY_API const char *relay_db_column_name(relay_db_result *r, size_t col)
{
        return r && col < r->n_cols ? r->names[col] : NULL;
}

/* The cell at COL of the current row (the first row before any next()). */
static const cell *current(relay_db_result *r, size_t col)
{
        if (!r || col >= r->n_cols || !r->n_rows)
                return NULL;
        size_t row = r->cursor ? r->cursor - 1 : 0;
        return &r->cells[row * r->n_cols + col];
}

RELAY_API int relay_db_is_null(relay_db_result *r, size_t col)
{
        const cell *c = current(r, col);
        return !c || c->type == 'n';
}

RELAY_API const char *relay_db_text(relay_db_result *r, size_t col)
{
        const cell *c = current(r, col);
        if (!c || c->type == 'n')
                return NULL;
        if (c->type == 't' || c->type == 'b')
                return c->p;
        /* Numbers read as text are formatted once, in place. */
        cell *m = (cell *)c;
        char tmp[40];
        int n = c->type == 'i' ? snprintf(tmp, sizeof(tmp), "%lld", (long long)c->i)
                               : snprintf(tmp, sizeof(tmp), "%.17g", c->d);
        if (!(m->p = arena_strndup(&r->mem, tmp, (size_t)n)))
                return NULL;
        m->len = (size_t)n;
        m->type = 't';
        return m->p;
}

RELAY_API int64_t relay_db_int(relay_db_result *r, size_t col)
{
        const cell *c = current(r, col);
        if (!c || c->type == 'n')
                return 0;
        if (c->type == 't')
                return c->p[0] == 't' && !c->p[1] ? 1 : strtoll(c->p, NULL, 10); /* pgsql bool 't' */
        return c->type == 'd' ? (int64_t)c->d : c->i;
}

RELAY_API double relay_db_double(relay_db_result *r, size_t col)
{
        const cell *c = current(r, col);
        if (!c || c->type == 'n')
                return 0;
        if (c->type == 't')
                return strtod(c->p, NULL);
        return c->type == 'i' ? (double)c->i : c->d;
}

RELAY_API const void *relay_db_blob(relay_db_result *r, size_t col, size_t *len)
{
        const cell *c = current(r, col);
        if (len)
                *len = c && (c->type == 't' || c->type == 'b') ? c->len : 0;
        return c && (c->type == 't' || c->type == 'b') ? c->p : NULL;
}

RELAY_API json_t *relay_db_json(relay_db_result *r, size_t col)
{
        const char *s = relay_db_text(r, col);
        return s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;
}
