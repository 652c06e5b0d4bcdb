/* fuzz_policy_expr - the policies plugin's expression parser and evaluator
 * (plugins/policies/expr.h) and its "then" clause parser.
 *
 * paction owns no memory (fixed-size members).
 *
 * Input: byte 0 chooses what to parse (bit 0: an expression, then evaluated
 * against a few records of every JSON type; bit 1: a "then" clause; neither:
 * both), the rest is the source text, cut at the first NUL. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "policies/expr.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *records[4];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        static const char *const docs[] = {
                "{}",
                "{\"model\":\"gpt-4\",\"tokens\":1200,\"cost\":0.37,\"stream\":true,\"user\":null,"
                "\"tags\":[\"pii\",\"eu\"],\"meta\":{\"tenant\":\"t1\",\"depth\":{\"n\":-3}}}",
                "{\"model\":\"\",\"tokens\":-9223372036854775808,\"cost\":1e308,\"stream\":false,\"tags\":[],"
                "\"meta\":{}}",
                "{\"model\":7,\"tokens\":\"1200\",\"cost\":null,\"stream\":\"true\",\"tags\":{\"a\":1},\"meta\":[1]}",
        };
        for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++)
                if (!(records[i] = json_loads(docs[i], 0, NULL)))
                        abort();
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        int what = data[0] & 3;
        char *src = strndup((const char *)data + 1, size - 1);
        if (!src)
                return 0;
        pexpr_error err;
        if (what != 2) {
                memset(&err, 0, sizeof(err));
                pexpr *e = pexpr_parse(src, &err);
                if (e) {
                        for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++)
                                (void)pexpr_eval(e, records[i]);
                        pexpr_free(e);
                }
        }
        if (what != 1) {
                paction action;
                memset(&action, 0, sizeof(action));
                memset(&err, 0, sizeof(err));
                (void)pparse_then(src, &action, &err);
                /* free ACTION here if pparse_then allocates */
        }
        free(src);
        return 0;
}
