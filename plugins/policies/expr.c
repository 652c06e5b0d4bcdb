/* expr.c - sync policy `when` expressions (parse once, evaluate from any
 * thread) and `then` action lists.
 *
 * A parsed expression lives in three arrays sized from the source length
 * before parsing starts: every node and every operand consumes at least one
 * source byte, so the arrays never need to grow and a hostile source cannot
 * make us allocate more than a fixed multiple of PEXPR_MAX_SOURCE.  Recursion
 * is bounded by PEXPR_MAX_DEPTH while parsing, and the tree it builds is no
 * deeper than that bound allows, so evaluation is bounded too.  Nothing is
 * written after pexpr_parse returns, which is what makes concurrent
 * pexpr_eval calls safe. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "expr.h"

#define NONE UINT32_MAX
#define MAX_DEFER_MS (30LL * 24 * 3600 * 1000)
#define SHOW 24 /* longest piece of source quoted in a message */

enum okind { O_FIELD, O_NULL, O_BOOL, O_INT, O_REAL, O_STR };

/* A literal, or a field looked up at evaluation time.  A field's text is
 * "a.b\0a\0b\0": the name as written (for pexpr_fields), then its segments. */
typedef struct operand {
        uint8_t kind;
        bool b;
        uint32_t pos; /* where it starts in the source */
        uint32_t off; /* O_STR, O_FIELD: start in text */
        uint32_t len; /* O_STR: bytes; O_FIELD: length of the name */
        union {
                int64_t i;
                double d;
        };
} operand;

enum nkind { N_OR, N_AND, N_NOT, N_TEST, N_CMP };
enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_CONTAINS, OP_IN };

typedef struct node {
        uint8_t kind, op;
        uint32_t a;    /* N_OR, N_AND, N_NOT: first child; N_TEST, N_CMP: left operand */
        uint32_t b;    /* N_CMP: right operand, or the first list item for OP_IN */
        uint32_t n;    /* OP_IN: list length (the items are consecutive operands) */
        uint32_t next; /* the following sibling under N_OR or N_AND */
} node;

struct pexpr {
        node *nodes;
        operand *ops;
        char *text;
        uint32_t n_nodes, n_ops, n_text;
        uint32_t cap_nodes, cap_ops, cap_text;
        uint32_t root;
};

/* ---- characters: ASCII only, so the locale cannot change the language ---- */

static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_alnum(int c) { return is_alpha(c) || is_digit(c); }
static bool is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

/* Case-insensitive match of the N bytes at S against the lower-case KW. */
static bool word_is(const char *s, size_t n, const char *kw)
{
        size_t i = 0;
        for (; i < n && kw[i]; i++)
                if (lower((unsigned char)s[i]) != kw[i])
                        return false;
        return i == n && kw[i] == '\0';
}

/* "'x'" for a printable byte, "0x01" otherwise, END at the terminator. */
static const char *char_name(int c, const char *end, char buf[8])
{
        if (c == '\0')
                return end;
        if (c >= 0x20 && c < 0x7f)
                snprintf(buf, 8, "'%c'", c);
        else
                snprintf(buf, 8, "0x%02x", (unsigned)c & 0xff);
        return buf;
}

static void vset_error(pexpr_error *err, size_t pos, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
static void vset_error(pexpr_error *err, size_t pos, const char *fmt, va_list ap)
{
        err->pos = pos;
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
}

static void set_error(pexpr_error *err, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(pexpr_error *err, size_t pos, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vset_error(err, pos, fmt, ap);
        va_end(ap);
}

/* ---- lexer ---- */

enum tkind {
        T_END,
        T_NUM,
        T_STR,
        T_FIELD,
        T_TRUE,
        T_FALSE,
        T_NULL,
        T_AND,
        T_OR,
        T_NOT,
        T_CMP, /* comparison operators, including 'contains' */
        T_IN,
        T_LPAREN,
        T_RPAREN,
        T_LBRACKET,
        T_RBRACKET,
        T_COMMA,
        T_ERROR
};

typedef struct token {
        uint8_t kind;
        uint8_t op;  /* T_CMP */
        bool is_int; /* T_NUM */
        size_t pos, len;
        int64_t i;
        double d;
} token;

typedef struct parser {
        const char *src;
        size_t at; /* where lexing resumes */
        token tok, prev;
        bool has_prev;
        int depth;
        pexpr *e;
        pexpr_error *err;
        char scratch[SHOW + 8]; /* for found() */
} parser;

static bool lex_fail(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool lex_fail(parser *p, size_t pos, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vset_error(p->err, pos, fmt, ap);
        va_end(ap);
        p->tok.kind = T_ERROR;
        return false;
}

static bool token_at(parser *p, uint8_t kind, size_t pos, size_t len)
{
        p->tok = (token){.kind = kind, .pos = pos, .len = len};
        p->at = pos + len;
        return true;
}

/* Only the quote and the backslash are escaped, so anything else after a
 * backslash is refused rather than guessed at. */
static bool lex_string(parser *p, size_t start)
{
        const char *s = p->src;
        char quote = s[start];
        size_t i = start + 1;
        for (; s[i] != quote; i++) {
                if (s[i] == '\0' || (s[i] == '\\' && s[i + 1] == '\0'))
                        return lex_fail(p, start, "unterminated string");
                if (s[i] != '\\')
                        continue;
                i++;
                if (s[i] != '\\' && s[i] != '"' && s[i] != '\'')
                        return lex_fail(p, i - 1, "invalid escape in string (only \\\\, \\\" and \\' are allowed)");
        }
        return token_at(p, T_STR, start, i + 1 - start);
}

static bool bad_number(parser *p, size_t start, size_t bad)
{
        size_t end = bad;
        while (is_alnum((unsigned char)p->src[end]) || p->src[end] == '.' || p->src[end] == '-')
                end++;
        int w = end - start > SHOW ? SHOW : (int)(end - start);
        const char *more = end - start > SHOW ? "..." : "";
        if (lower((unsigned char)p->src[bad]) == 'e')
                return lex_fail(p, bad, "exponents are not supported, found number '%.*s%s'", w, p->src + start, more);
        return lex_fail(p, bad, "invalid number '%.*s%s'", w, p->src + start, more);
}

/* Integers must fit int64_t: a silent fall back to a double would make large
 * ids compare equal to their neighbours. */
static bool number_value(parser *p, size_t start, size_t end, bool is_int)
{
        const char *s = p->src;
        bool neg = s[start] == '-';
        token_at(p, T_NUM, start, end - start);
        p->tok.is_int = is_int;
        if (!is_int) {
                p->tok.d = strtod(s + start, NULL); /* the span was checked: digits, one '.', digits */
                if (isfinite(p->tok.d))
                        return true;
        } else {
                uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
                size_t i = start + neg;
                for (; i < end && v <= (limit - (uint64_t)(s[i] - '0')) / 10; i++)
                        v = v * 10 + (uint64_t)(s[i] - '0');
                if (i == end) {
                        p->tok.i = neg ? (int64_t)(0 - v) : (int64_t)v;
                        return true;
                }
        }
        int w = end - start > SHOW ? SHOW : (int)(end - start);
        return lex_fail(p, start, "number '%.*s%s' is out of range", w, s + start, end - start > SHOW ? "..." : "");
}

static bool lex_number(parser *p, size_t start)
{
        const char *s = p->src;
        size_t i = start + (s[start] == '-');
        while (is_digit((unsigned char)s[i]))
                i++;
        bool is_int = !(s[i] == '.' && is_digit((unsigned char)s[i + 1]));
        if (!is_int)
                for (i++; is_digit((unsigned char)s[i]);)
                        i++;
        if (is_alnum((unsigned char)s[i]) || s[i] == '.')
                return bad_number(p, start, i);
        return number_value(p, start, i, is_int);
}

static const struct {
        const char *word;
        uint8_t kind, op;
} keywords[] = {
        {"and", T_AND, 0},     {"or", T_OR, 0},     {"not", T_NOT, 0}, {"true", T_TRUE, 0},
        {"false", T_FALSE, 0}, {"null", T_NULL, 0}, {"in", T_IN, 0},   {"contains", T_CMP, OP_CONTAINS},
};

/* A field or a keyword; only undotted words can be keywords. */
static bool lex_word(parser *p, size_t start)
{
        const char *s = p->src;
        size_t i = start;
        bool dotted = false;
        for (;;) {
                while (is_alnum((unsigned char)s[i]))
                        i++;
                if (s[i] != '.')
                        break;
                char buf[8];
                if (!is_alpha((unsigned char)s[i + 1]))
                        return lex_fail(p, i + 1, "expected a field name after '.', found %s",
                                        char_name((unsigned char)s[i + 1], "end of expression", buf));
                dotted = true;
                i++;
        }
        token_at(p, T_FIELD, start, i - start);
        for (size_t k = 0; !dotted && k < sizeof(keywords) / sizeof(keywords[0]); k++)
                if (word_is(s + start, i - start, keywords[k].word)) {
                        p->tok.kind = keywords[k].kind;
                        p->tok.op = keywords[k].op;
                }
        return true;
}

static const struct {
        const char *text;
        uint8_t kind, op;
} operators[] = {
        {"==", T_CMP, OP_EQ}, {"!=", T_CMP, OP_NE}, {"<=", T_CMP, OP_LE}, {">=", T_CMP, OP_GE}, {"&&", T_AND, 0},
        {"||", T_OR, 0},      {"=", T_CMP, OP_EQ},  {"<", T_CMP, OP_LT},  {">", T_CMP, OP_GT},  {"!", T_NOT, 0},
};

static bool is_op_char(int c) { return c != '\0' && strchr("<>=&|", c) != NULL; }

/* Takes the whole run of operator characters, so "=>" is reported as an
 * unknown operator instead of quietly becoming '=' and a stray '>'.  '!' only
 * starts a run: "&&!x" and "!!x" are fine. */
static bool lex_operator(parser *p, size_t start)
{
        const char *s = p->src;
        size_t n = 1, known = 0;
        while (is_op_char((unsigned char)s[start + n]))
                n++;
        for (size_t k = 0; k < sizeof(operators) / sizeof(operators[0]); k++) {
                size_t len = strlen(operators[k].text);
                if (len == n && memcmp(s + start, operators[k].text, n) == 0) {
                        token_at(p, operators[k].kind, start, n);
                        p->tok.op = operators[k].op;
                        return true;
                }
                if (len < n && len > known && memcmp(s + start, operators[k].text, len) == 0)
                        known = len;
        }
        int w = n > SHOW ? SHOW : (int)n;
        return lex_fail(p, start + known, "unknown operator '%.*s'", w, s + start);
}

static bool lex(parser *p)
{
        const char *s = p->src;
        size_t i = p->at;
        while (is_space((unsigned char)s[i]))
                i++;
        int c = (unsigned char)s[i];
        switch (c) {
        case '\0': return token_at(p, T_END, i, 0);
        case '(': return token_at(p, T_LPAREN, i, 1);
        case ')': return token_at(p, T_RPAREN, i, 1);
        case '[': return token_at(p, T_LBRACKET, i, 1);
        case ']': return token_at(p, T_RBRACKET, i, 1);
        case ',': return token_at(p, T_COMMA, i, 1);
        case '"':
        case '\'': return lex_string(p, i);
        }
        if (is_digit(c) || (c == '-' && is_digit((unsigned char)s[i + 1])))
                return lex_number(p, i);
        if (is_alpha(c))
                return lex_word(p, i);
        if (c == '!' || is_op_char(c))
                return lex_operator(p, i);
        char buf[8];
        return lex_fail(p, i, "unexpected character %s", char_name(c, "", buf));
}

static bool advance(parser *p)
{
        p->prev = p->tok;
        p->has_prev = true;
        return lex(p);
}

/* ---- parser ---- */

static uint32_t fail(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static uint32_t fail(parser *p, size_t pos, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vset_error(p->err, pos, fmt, ap);
        va_end(ap);
        return NONE;
}

/* Names the current token for "found ..." in messages, cut short so
 * messages fit. */
static const char *found(parser *p)
{
        const token *t = &p->tok;
        if (t->kind == T_END)
                return "end of expression";
        if (t->kind == T_STR)
                return "a string";
        int w = t->len > SHOW ? SHOW : (int)t->len;
        snprintf(p->scratch, sizeof(p->scratch), "'%.*s%s'", w, p->src + t->pos, t->len > SHOW ? "..." : "");
        return p->scratch;
}

static uint32_t expected(parser *p, const char *what)
{
        const char *f = found(p);
        if (!p->has_prev)
                return fail(p, p->tok.pos, "expected %s, found %s", what, f);
        int w = p->prev.len > SHOW ? SHOW : (int)p->prev.len;
        return fail(p, p->tok.pos, "expected %s after '%.*s', found %s", what, w, p->src + p->prev.pos, f);
}

static uint32_t new_node(parser *p, uint8_t kind)
{
        pexpr *e = p->e;
        if (e->n_nodes == e->cap_nodes) /* cannot happen: see the top of the file */
                return fail(p, p->tok.pos, "expression too complex");
        e->nodes[e->n_nodes] = (node){.kind = kind, .a = NONE, .b = NONE, .next = NONE};
        return e->n_nodes++;
}

static char *new_text(parser *p, size_t n)
{
        pexpr *e = p->e;
        if (n > e->cap_text - e->n_text) {
                fail(p, p->tok.pos, "expression too complex");
                return NULL;
        }
        char *t = e->text + e->n_text;
        e->n_text += (uint32_t)n;
        return t;
}

static bool string_operand(parser *p, operand *o)
{
        const char *s = p->src + p->tok.pos + 1, *end = p->src + p->tok.pos + p->tok.len - 1;
        char *t = new_text(p, (size_t)(end - s) + 1);
        if (!t)
                return false;
        o->off = (uint32_t)(t - p->e->text);
        while (s < end) {
                if (*s == '\\')
                        s++;
                *t++ = *s++;
        }
        *t = '\0';
        o->len = (uint32_t)(t - (p->e->text + o->off));
        return true;
}

static bool field_operand(parser *p, operand *o)
{
        size_t n = p->tok.len;
        char *t = new_text(p, 2 * n + 2);
        if (!t)
                return false;
        memcpy(t, p->src + p->tok.pos, n);
        t[n] = '\0';
        for (size_t i = 0; i <= n; i++)
                t[n + 1 + i] = t[i] == '.' ? '\0' : t[i];
        o->off = (uint32_t)(t - p->e->text);
        o->len = (uint32_t)n;
        return true;
}

/* Turns the current token, a value, into an operand. */
static uint32_t new_operand(parser *p)
{
        pexpr *e = p->e;
        if (e->n_ops == e->cap_ops)
                return fail(p, p->tok.pos, "expression too complex");
        operand *o = &e->ops[e->n_ops];
        *o = (operand){.pos = (uint32_t)p->tok.pos};
        switch (p->tok.kind) {
        case T_NUM:
                o->kind = p->tok.is_int ? O_INT : O_REAL;
                if (p->tok.is_int)
                        o->i = p->tok.i;
                else
                        o->d = p->tok.d;
                break;
        case T_TRUE:
        case T_FALSE:
                o->kind = O_BOOL;
                o->b = p->tok.kind == T_TRUE;
                break;
        case T_NULL: o->kind = O_NULL; break;
        case T_STR:
                o->kind = O_STR;
                if (!string_operand(p, o))
                        return NONE;
                break;
        default:
                o->kind = O_FIELD;
                if (!field_operand(p, o))
                        return NONE;
        }
        return e->n_ops++;
}

static bool is_literal(uint8_t kind)
{
        return kind == T_NUM || kind == T_STR || kind == T_TRUE || kind == T_FALSE || kind == T_NULL;
}

static uint32_t parse_value(parser *p)
{
        if (!is_literal(p->tok.kind) && p->tok.kind != T_FIELD)
                return expected(p, "a value");
        uint32_t o = new_operand(p);
        if (o == NONE || !advance(p))
                return NONE;
        return o;
}

/* The list after 'in': literals only, so it can be checked at parse time. */
static uint32_t parse_list(parser *p, node *n)
{
        if (!advance(p))
                return NONE;
        if (p->tok.kind != T_LBRACKET)
                return expected(p, "'['");
        do {
                if (!advance(p))
                        return NONE;
                if (!is_literal(p->tok.kind))
                        return expected(p, "a literal (number, string, true, false or null)");
                uint32_t o = new_operand(p);
                if (o == NONE || !advance(p))
                        return NONE;
                if (n->b == NONE)
                        n->b = o;
                n->n++;
        } while (p->tok.kind == T_COMMA);
        if (p->tok.kind != T_RBRACKET)
                return fail(p, p->tok.pos, "expected ',' or ']' in the list, found %s", found(p));
        return advance(p) ? 0 : NONE;
}

/* A value, optionally compared with another. */
static uint32_t parse_test(parser *p)
{
        uint32_t lhs = parse_value(p);
        if (lhs == NONE)
                return NONE;
        bool cmp = p->tok.kind == T_CMP || p->tok.kind == T_IN;
        uint32_t id = new_node(p, cmp ? N_CMP : N_TEST);
        if (id == NONE)
                return NONE;
        node *n = &p->e->nodes[id];
        n->a = lhs;
        if (p->tok.kind == T_IN) {
                n->op = OP_IN;
                return parse_list(p, n) == NONE ? NONE : id;
        }
        if (cmp) {
                n->op = p->tok.op;
                if (!advance(p) || (n->b = parse_value(p)) == NONE)
                        return NONE;
        }
        return id;
}

static uint32_t parse_or(parser *p);
static uint32_t parse_unary(parser *p);

/* Each '(' and 'not' counts against PEXPR_MAX_DEPTH, which bounds the
 * recursion below, whatever the input. */
static bool enter(parser *p)
{
        if (p->depth < PEXPR_MAX_DEPTH) {
                p->depth++;
                return true;
        }
        fail(p, p->tok.pos, "expression nested too deeply (more than %d levels of parentheses and 'not')",
             PEXPR_MAX_DEPTH);
        return false;
}

static uint32_t parse_not(parser *p)
{
        if (!enter(p))
                return NONE;
        uint32_t id = new_node(p, N_NOT);
        if (id == NONE || !advance(p))
                return NONE;
        uint32_t child = parse_unary(p);
        if (child == NONE)
                return NONE;
        p->e->nodes[id].a = child;
        p->depth--;
        return id;
}

static uint32_t parse_group(parser *p)
{
        size_t open = p->tok.pos;
        if (!enter(p) || !advance(p))
                return NONE;
        uint32_t inner = parse_or(p);
        if (inner == NONE)
                return NONE;
        if (p->tok.kind != T_RPAREN)
                return fail(p, p->tok.pos, "expected ')' to close the '(' at %zu, found %s", open, found(p));
        p->depth--;
        return advance(p) ? inner : NONE;
}

static uint32_t parse_unary(parser *p)
{
        if (p->tok.kind == T_NOT)
                return parse_not(p);
        if (p->tok.kind == T_LPAREN)
                return parse_group(p);
        return parse_test(p);
}

/* A run of SUB joined by the operator token OP becomes one node of KIND
 * with the operands as a list of children, which keeps the tree shallow. */
static uint32_t parse_chain(parser *p, uint8_t op, uint8_t kind, uint32_t (*sub)(parser *))
{
        uint32_t first = sub(p);
        if (first == NONE || p->tok.kind != op)
                return first;
        uint32_t id = new_node(p, kind);
        if (id == NONE)
                return NONE;
        p->e->nodes[id].a = first;
        for (uint32_t last = first; p->tok.kind == op;) {
                uint32_t next;
                if (!advance(p) || (next = sub(p)) == NONE)
                        return NONE;
                p->e->nodes[last].next = next;
                last = next;
        }
        return id;
}

static uint32_t parse_and(parser *p) { return parse_chain(p, T_AND, N_AND, parse_unary); }
static uint32_t parse_or(parser *p) { return parse_chain(p, T_OR, N_OR, parse_and); }

/* Sized so that the parser can never run out: see the top of the file. */
static pexpr *pexpr_alloc(size_t len)
{
        pexpr *e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        e->cap_nodes = e->cap_ops = (uint32_t)len + 1;
        e->cap_text = 4 * (uint32_t)len + 4;
        e->nodes = malloc(e->cap_nodes * sizeof(*e->nodes));
        e->ops = malloc(e->cap_ops * sizeof(*e->ops));
        e->text = malloc(e->cap_text);
        if (!e->nodes || !e->ops || !e->text) {
                pexpr_free(e);
                return NULL;
        }
        return e;
}

static uint32_t parse_top(parser *p)
{
        if (!lex(p))
                return NONE;
        if (p->tok.kind == T_END)
                return fail(p, p->tok.pos, "empty expression");
        uint32_t root = parse_or(p);
        if (root == NONE || p->tok.kind == T_END)
                return root;
        if (p->tok.kind == T_RPAREN)
                return fail(p, p->tok.pos, "unmatched ')'");
        return fail(p, p->tok.pos, "expected 'and', 'or' or end of expression, found %s", found(p));
}

pexpr *pexpr_parse(const char *src, pexpr_error *err)
{
        pexpr_error ignored;
        if (!err)
                err = &ignored;
        memset(err, 0, sizeof(*err));
        if (!src) {
                set_error(err, 0, "empty expression");
                return NULL;
        }
        size_t len = strnlen(src, PEXPR_MAX_SOURCE + 1);
        if (len > PEXPR_MAX_SOURCE) {
                set_error(err, PEXPR_MAX_SOURCE, "expression longer than %d bytes", PEXPR_MAX_SOURCE);
                return NULL;
        }
        pexpr *e = pexpr_alloc(len);
        if (!e) {
                set_error(err, 0, "out of memory");
                return NULL;
        }
        parser p = {.src = src, .e = e, .err = err};
        e->root = parse_top(&p);
        if (e->root == NONE) {
                pexpr_free(e);
                return NULL;
        }
        return e;
}

void pexpr_free(pexpr *e)
{
        if (!e)
                return;
        free(e->nodes);
        free(e->ops);
        free(e->text);
        free(e);
}

int pexpr_fields(const pexpr *e, int (*fn)(const char *name, size_t pos, void *data), void *data)
{
        /* Operands are stored in source order, so no tree walk is needed. */
        for (uint32_t i = 0; e && i < e->n_ops; i++) {
                const operand *o = &e->ops[i];
                int rc = o->kind == O_FIELD ? fn(e->text + o->off, o->pos, data) : 0;
                if (rc)
                        return rc;
        }
        return 0;
}

/* ---- evaluation ---- */

enum vkind { V_NULL, V_BOOL, V_INT, V_REAL, V_STR, V_ARRAY, V_OBJECT };

/* A literal or a JSON value, in one shape for comparing. */
typedef struct val {
        uint8_t kind;
        bool b;
        int64_t i;
        double d;
        const char *s;
        size_t len;
        const json_t *j;
} val;

static val from_json(const json_t *j)
{
        switch (j ? json_typeof(j) : JSON_NULL) {
        case JSON_OBJECT: return (val){.kind = V_OBJECT, .j = j};
        case JSON_ARRAY: return (val){.kind = V_ARRAY, .j = j};
        case JSON_STRING: return (val){.kind = V_STR, .s = json_string_value(j), .len = json_string_length(j)};
        case JSON_INTEGER: return (val){.kind = V_INT, .i = (int64_t)json_integer_value(j)};
        case JSON_REAL: return (val){.kind = V_REAL, .d = json_real_value(j)};
        case JSON_TRUE: return (val){.kind = V_BOOL, .b = true};
        case JSON_FALSE: return (val){.kind = V_BOOL, .b = false};
        default: return (val){.kind = V_NULL};
        }
}

/* Walks the segments of a dotted name; anything missing on the way is null. */
static const json_t *lookup(const pexpr *e, const operand *o, const json_t *fields)
{
        const char *seg = e->text + o->off + o->len + 1, *end = seg + o->len;
        const json_t *cur = fields;
        for (; seg < end; seg += strlen(seg) + 1) {
                if (!json_is_object(cur))
                        return NULL;
                cur = json_object_get(cur, seg);
        }
        return cur;
}

static val resolve(const pexpr *e, uint32_t idx, const json_t *fields)
{
        const operand *o = &e->ops[idx];
        switch (o->kind) {
        case O_FIELD: return from_json(lookup(e, o, fields));
        case O_BOOL: return (val){.kind = V_BOOL, .b = o->b};
        case O_INT: return (val){.kind = V_INT, .i = o->i};
        case O_REAL: return (val){.kind = V_REAL, .d = o->d};
        case O_STR: return (val){.kind = V_STR, .s = e->text + o->off, .len = o->len};
        default: return (val){.kind = V_NULL};
        }
}

static bool truthy(const val *v)
{
        switch (v->kind) {
        case V_BOOL: return v->b;
        case V_INT: return v->i != 0;
        case V_REAL: return v->d != 0;
        case V_STR: return v->len > 0;
        default: return false;
        }
}

static bool is_number(const val *v) { return v->kind == V_INT || v->kind == V_REAL; }

/* Exact even where a double cannot hold the integer (ids above 2^53). */
static int cmp_int_real(int64_t i, double d)
{
        if (d >= 9223372036854775808.0)
                return -1;
        if (d < -9223372036854775808.0)
                return 1;
        int64_t t = (int64_t)d; /* in range, truncated toward zero */
        if (i != t)
                return i < t ? -1 : 1;
        double frac = d - (double)t;
        return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

static int cmp_number(const val *a, const val *b)
{
        if (a->kind == V_INT && b->kind == V_INT)
                return (a->i > b->i) - (a->i < b->i);
        if (a->kind == V_INT)
                return cmp_int_real(a->i, b->d);
        if (b->kind == V_INT)
                return -cmp_int_real(b->i, a->d);
        return (a->d > b->d) - (a->d < b->d);
}

/* strcmp order, but JSON strings may hold NUL bytes. */
static int cmp_string(const val *a, const val *b)
{
        int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
        if (c)
                return c < 0 ? -1 : 1;
        return (a->len > b->len) - (a->len < b->len);
}

static bool equal(const val *a, const val *b)
{
        if (is_number(a) && is_number(b))
                return cmp_number(a, b) == 0;
        if (a->kind != b->kind)
                return false;
        switch (a->kind) {
        case V_NULL: return true;
        case V_BOOL: return a->b == b->b;
        case V_STR: return cmp_string(a, b) == 0;
        default: return json_equal(a->j, b->j);
        }
}

/* Sets *C for two numbers or two strings; anything else has no order. */
static bool order(const val *a, const val *b, int *c)
{
        if (is_number(a) && is_number(b))
                *c = cmp_number(a, b);
        else if (a->kind == V_STR && b->kind == V_STR)
                *c = cmp_string(a, b);
        else
                return false;
        return true;
}

static bool contains(const val *a, const val *b)
{
        if (a->kind == V_STR && b->kind == V_STR)
                return b->len == 0 || memmem(a->s, a->len, b->s, b->len) != NULL;
        if (a->kind != V_ARRAY)
                return false;
        for (size_t i = 0; i < json_array_size(a->j); i++) {
                val item = from_json(json_array_get(a->j, i));
                if (equal(&item, b))
                        return true;
        }
        return false;
}

static bool in_list(const pexpr *e, const node *n, const val *a)
{
        for (uint32_t k = 0; k < n->n; k++) {
                val item = resolve(e, n->b + k, NULL);
                if (equal(a, &item))
                        return true;
        }
        return false;
}

static bool eval_cmp(const pexpr *e, const node *n, const json_t *fields)
{
        val a = resolve(e, n->a, fields);
        if (n->op == OP_IN)
                return in_list(e, n, &a);
        val b = resolve(e, n->b, fields);
        int c;
        switch (n->op) {
        case OP_EQ: return equal(&a, &b);
        case OP_NE: return !equal(&a, &b);
        case OP_CONTAINS: return contains(&a, &b);
        case OP_LT: return order(&a, &b, &c) && c < 0;
        case OP_LE: return order(&a, &b, &c) && c <= 0;
        case OP_GT: return order(&a, &b, &c) && c > 0;
        default: return order(&a, &b, &c) && c >= 0;
        }
}

static bool eval_node(const pexpr *e, uint32_t id, const json_t *fields)
{
        const node *n = &e->nodes[id];
        switch (n->kind) {
        case N_OR:
                for (uint32_t c = n->a; c != NONE; c = e->nodes[c].next)
                        if (eval_node(e, c, fields))
                                return true;
                return false;
        case N_AND:
                for (uint32_t c = n->a; c != NONE; c = e->nodes[c].next)
                        if (!eval_node(e, c, fields))
                                return false;
                return true;
        case N_NOT: return !eval_node(e, n->a, fields);
        case N_TEST: {
                val v = resolve(e, n->a, fields);
                return truthy(&v);
        }
        default: return eval_cmp(e, n, fields);
        }
}

bool pexpr_eval(const pexpr *e, const json_t *fields) { return e ? eval_node(e, e->root, fields) : false; }

/* ---- then ---- */

enum { A_QUEUE, A_DEFER, A_DROP };
static const char *const action_names[] = {"queue", "defer", "drop"};

static size_t skip_spaces(const char *s, size_t i)
{
        while (is_space((unsigned char)s[i]))
                i++;
        return i;
}

static bool is_queue_char(int c) { return is_alnum(c) || c == '.' || c == '-'; }
static bool is_action_end(int c) { return c == '\0' || c == ',' || c == ';' || is_space(c); }

/* Returns the index after the name, or 0 on error (a name never starts at 0). */
static size_t parse_queue(const char *s, size_t i, paction *act, pexpr_error *err)
{
        char buf[8];
        size_t n = 0;
        while (is_queue_char((unsigned char)s[i + n]))
                n++;
        if (n == 0)
                set_error(err, i, "expected a queue name after 'queue=', found %s",
                          char_name((unsigned char)s[i], "end of actions", buf));
        else if (n >= sizeof(act->queue))
                set_error(err, i + sizeof(act->queue) - 1, "queue name longer than %zu characters",
                          sizeof(act->queue) - 1);
        else if (!is_action_end((unsigned char)s[i + n]))
                set_error(err, i + n, "invalid character %s in queue name",
                          char_name((unsigned char)s[i + n], "", buf));
        else {
                memcpy(act->queue, s + i, n);
                act->queue[n] = '\0';
                return i + n;
        }
        return 0;
}

static int64_t unit_ms(const char *u, size_t n)
{
        if (n == 0 || word_is(u, n, "s"))
                return 1000;
        if (word_is(u, n, "ms"))
                return 1;
        if (word_is(u, n, "m"))
                return 60 * 1000;
        if (word_is(u, n, "h"))
                return 3600 * 1000;
        if (word_is(u, n, "d"))
                return 24 * 3600 * 1000;
        return -1;
}

/* Returns the index after the duration, or 0 on error. */
static size_t parse_duration(const char *s, size_t i, paction *act, pexpr_error *err)
{
        char buf[8];
        size_t start = i, unit;
        uint64_t v = 0;
        for (; is_digit((unsigned char)s[i]); i++)
                if (v <= (uint64_t)MAX_DEFER_MS) /* stop before it can overflow: it is too long already */
                        v = v * 10 + (uint64_t)(s[i] - '0');
        for (unit = i; (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z');)
                i++;
        int64_t mult = unit_ms(s + unit, i - unit);
        if (unit == start)
                set_error(err, start,
                          "expected a duration (a positive whole number with ms, s, m, h or d) after "
                          "'defer=', found %s",
                          char_name((unsigned char)s[start], "end of actions", buf));
        else if (mult < 0)
                set_error(err, unit, "unknown duration unit '%.*s' (use ms, s, m, h or d)",
                          i - unit > SHOW ? SHOW : (int)(i - unit), s + unit);
        else if (!is_action_end((unsigned char)s[i]))
                set_error(err, i, "invalid character %s in duration", char_name((unsigned char)s[i], "", buf));
        else if (v == 0)
                set_error(err, start, "duration must be positive");
        else if (v > (uint64_t)(MAX_DEFER_MS / mult))
                set_error(err, start, "duration longer than the maximum of 30d");
        else {
                act->defer_ms = (int64_t)v * mult;
                return i;
        }
        return 0;
}

/* The action named at S+I, or -1 with ERR set. */
static int action_kind(const char *s, size_t i, size_t n, pexpr_error *err)
{
        char buf[8];
        for (int k = A_QUEUE; k <= A_DROP; k++)
                if (word_is(s + i, n, action_names[k]))
                        return k;
        if (n == 0)
                set_error(err, i, "expected an action (queue=, defer= or drop), found %s",
                          char_name((unsigned char)s[i], "end of actions", buf));
        else
                set_error(err, i, "unknown action '%.*s' (expected queue=, defer= or drop)", n > SHOW ? SHOW : (int)n,
                          s + i);
        return -1;
}

/* Parses one action at S+I into ACT; returns the index after it, or 0. */
static size_t parse_action(const char *s, size_t i, paction *act, bool seen[3], pexpr_error *err)
{
        char buf[8];
        size_t n = 0;
        while (is_alnum((unsigned char)s[i + n]))
                n++;
        int k = action_kind(s, i, n, err);
        if (k < 0)
                return 0;
        if (seen[k]) {
                set_error(err, i, "duplicate action '%s'", action_names[k]);
                return 0;
        }
        if (k == A_DROP ? seen[A_QUEUE] || seen[A_DEFER] : seen[A_DROP]) {
                set_error(err, i, "'drop' cannot be combined with queue= or defer=");
                return 0;
        }
        seen[k] = true;
        size_t eq = skip_spaces(s, i + n);
        if (k == A_DROP) {
                act->drop = true;
                if (s[eq] != '=')
                        return i + n;
                set_error(err, eq, "'drop' takes no value");
                return 0;
        }
        if (s[eq] != '=') {
                set_error(err, eq, "expected '=' after '%s', found %s", action_names[k],
                          char_name((unsigned char)s[eq], "end of actions", buf));
                return 0;
        }
        size_t v = skip_spaces(s, eq + 1);
        return k == A_QUEUE ? parse_queue(s, v, act, err) : parse_duration(s, v, act, err);
}

static int parse_actions(const char *s, paction *act, pexpr_error *err)
{
        char buf[8];
        bool seen[3] = {false};
        size_t i = skip_spaces(s, 0);
        if (s[i] == '\0') {
                set_error(err, i, "empty action list");
                return -1;
        }
        for (;;) {
                if ((i = parse_action(s, i, act, seen, err)) == 0)
                        return -1;
                i = skip_spaces(s, i);
                if (s[i] == '\0')
                        return 0;
                if (s[i] != ',' && s[i] != ';') {
                        set_error(err, i, "expected ',' or ';' between actions, found %s",
                                  char_name((unsigned char)s[i], "", buf));
                        return -1;
                }
                char sep = s[i];
                i = skip_spaces(s, i + 1);
                if (s[i] == '\0') {
                        set_error(err, i, "expected an action after '%c', found end of actions", sep);
                        return -1;
                }
        }
}

int pparse_then(const char *src, paction *out, pexpr_error *err)
{
        pexpr_error ignored;
        paction act = {.queue = ""};
        if (!err)
                err = &ignored;
        memset(err, 0, sizeof(*err));
        int rc = src ? parse_actions(src, &act, err) : -1;
        if (!src)
                set_error(err, 0, "empty action list");
        if (out)
                *out = rc == 0 ? act : (paction){.queue = ""};
        return rc;
}
