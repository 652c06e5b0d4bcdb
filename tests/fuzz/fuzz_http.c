/* fuzz_http - the request path: bytes in, through the real connection code
 * (core/conn.c: reads, llhttp, limits, pipelining, async replies, timeouts,
 * closing), the router, the authenticator chain and the loaded plugins'
 * handlers, to the response writer.
 *
 * Input: one byte of options, then the bytes the client sends.
 *
 *   byte 0, low four bits (so '0'..'9' in a text file):
 *     1  every timeout expires once everything is sent (408, idle close)
 *     2  a graceful shutdown begins once everything is sent (SIGTERM)
 *     4  the client closes without reading the replies
 *     8  the connection arrives while the worker drains (503)
 *   the rest: sent in one read, or in several: "|~|" marks where one read
 *   ends and the next begins (it is not sent).  "@APIKEY@" and "@TOKEN@"
 *   are replaced by a live admin API key and a bearer token for it.
 *
 * Checks beyond the sanitizers: whatever the server writes starts with a
 * status line, and the connection and its requests are gone at the end. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

#define SPLIT "|~|"
#define MAX_CHUNKS 256

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static buf input, reply;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        fuzz_setup();
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        int opts = data[0] & 15;
        fuzz_expand(data + 1, size - 1, &input);
        const char *chunks[MAX_CHUNKS];
        size_t lens[MAX_CHUNKS], n = 0;
        const char *p = input.data, *end = input.data + input.len;
        while (n < MAX_CHUNKS - 1) {
                const char *cut = memmem(p, (size_t)(end - p), SPLIT, sizeof(SPLIT) - 1);
                if (!cut)
                        break;
                chunks[n] = p, lens[n++] = (size_t)(cut - p);
                p = cut + sizeof(SPLIT) - 1;
        }
        chunks[n] = p, lens[n++] = (size_t)(end - p);
        fuzz_exchange(chunks, lens, n, opts, &reply);
        if (reply.len && (reply.len < 9 || memcmp(reply.data, "HTTP/1.1 ", 9) != 0)) {
                fprintf(stderr, "fuzz check failed: the server wrote something other than a response: %.*s\n",
                        (int)(reply.len < 200 ? reply.len : 200), reply.data);
                abort();
        }
        return 0;
}
