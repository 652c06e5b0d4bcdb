/* expr.h - RelaySync sync policies: the `when` expression (parse once,
 * evaluate against records from any number of threads) and the `then`
 * action list.
 *
 * when   := or
 * or     := and { ('or' | '||') and }
 * and    := unary { ('and' | '&&') unary }
 * unary  := ('not' | '!') unary | '(' or ')' | test
 * test   := value [ cmpop value | 'contains' value | 'in' '[' literal { ',' literal } ']' ]
 * cmpop  := '==' | '=' | '!=' | '<' | '<=' | '>' | '>='
 * value  := literal | field
 * literal:= number | string | 'true' | 'false' | 'null'
 * field  := ident { '.' ident }          ident := [A-Za-z_][A-Za-z0-9_]*
 *
 * Numbers are decimal without exponents (5120, -3, 2.5); integers must fit
 * int64_t.  Strings take single or double quotes; only \\, \" and \' are
 * escapes.  Keywords are case-insensitive, field names are not; a dotted
 * field walks nested objects and is null when anything on the way is missing.
 *
 * Numbers compare numerically (5120 == 5120.0, exact beyond 2^53), strings
 * byte-wise; between other types only == and != mean anything (== is false
 * across types, null == null).  `a contains b` is substring for two strings,
 * membership (==) for an array, else false; `a in [...]` is a == any item.
 * `not` applies to a whole comparison: `not size > 5` is `not (size > 5)`.
 * A value on its own (no operator) is truthy when it is true, a non-zero
 * number or a non-empty string; null, false, 0, "", arrays and objects are
 * falsy.
 *
 * A pexpr is never written after pexpr_parse returns, so any number of
 * threads may call pexpr_eval and pexpr_fields on it at once. */
#ifndef RELAY_POLICIES_EXPR_H
#define RELAY_POLICIES_EXPR_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <jansson.h>

#define PEXPR_MAX_SOURCE 4096 /* longest `when` accepted */
#define PEXPR_MAX_DEPTH 32    /* deepest nesting of parentheses/not */

typedef struct pexpr pexpr; /* a parsed `when`, immutable after parse */
typedef struct pexpr_error {
        size_t pos;        /* 0-based byte offset of the offending character */
        char message[160]; /* "expected a value after '>'", "unterminated string", ... */
} pexpr_error;

/* Parses SRC.  NULL on error, with ERR filled (pos points at the bad character, or at strlen(src) for an unexpected
 * end). */
pexpr *pexpr_parse(const char *src, pexpr_error *err);
void pexpr_free(pexpr *e);
/* Evaluates E against FIELDS (a JSON object). Returns true/false; never fails (type mismatches compare false). */
bool pexpr_eval(const pexpr *e, const json_t *fields);
/* Calls FN for each field name E refers to (for validation against known fields by the caller); returns the first
 * non-zero FN result, else 0. */
int pexpr_fields(const pexpr *e, int (*fn)(const char *name, size_t pos, void *data), void *data);

typedef struct paction {
        char queue[64];   /* "" when no queue= action */
        int64_t defer_ms; /* 0 when no defer= */
        bool drop;
} paction;
/* Parses a `then`: actions separated by ',' or ';' with optional spaces: queue=<name>, defer=<duration>, drop.
 * A queue name is 1-63 chars of [A-Za-z0-9_.-]. A duration is a positive integer with unit ms, s, m, h or d (bare
 * number = seconds), max 30d.
 * Errors (same pexpr_error): unknown action, duplicate action, drop combined with queue/defer, bad name/duration,
 * empty string. */
int pparse_then(const char *src, paction *out, pexpr_error *err); /* 0 ok, -1 error */

#endif
