/* test_util.c - ids, time, base64url, buffers and the arena. */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include "arena.h"
#include "buf.h"
#include "relay/http_client.h"
#include "relay/util.h"
#include "tap.h"

int main(void)
{
        if (sodium_init() < 0)
                return 99;
        char a[64], b[64];
        relay_id_new("rec_", a, sizeof(a));
        ok(strlen(a) == 4 + RELAY_ULID_LEN && strncmp(a, "rec_", 4) == 0, "id has prefix and 26 chars (%s)", a);
        ok(strspn(a + 4, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") == RELAY_ULID_LEN, "Crockford base32");
        relay_id_new("rec_", b, sizeof(b));
        ok(strcmp(a, b) != 0, "two ids differ");
        ok(strncmp(a, b, 4 + 8) <= 0, "ids sort by time (first 8 chars carry the ms)");
        {
                char prev[40], next[40];
                bool sorted = true;
                relay_id_new("x_", prev, sizeof(prev));
                for (int i = 0; i < 10000; i++) { /* many per millisecond */
                        relay_id_new("x_", next, sizeof(next));
                        sorted = sorted && strcmp(prev, next) < 0;
                        memcpy(prev, next, sizeof(prev));
                }
                ok(sorted, "ids made one after the other sort in that order, within a millisecond too");
        }
        char tiny[8];
        relay_id_new("rec_", tiny, sizeof(tiny));
        ok(tiny[0] == '\0', "too small a buffer gives an empty id, not an overflow");
        relay_uuid4(a, sizeof(a));
        ok(strlen(a) == 36 && a[14] == '4' && strchr("89ab", a[19]), "uuid v4 (%s)", a);

        int64_t ms;
        ok(relay_time_parse("2026-11-22T06:01:31Z", &ms) == 0 && ms == 1795327291000LL, "RFC 3339 Z");
        ok(relay_time_parse("2026-11-22T07:01:31.5+01:00", &ms) == 0 && ms == 1795327291500LL, "offset and fraction");
        ok(relay_time_parse("2026-13-01T00:00:00Z", &ms) != 0, "month 13 refused");
        ok(relay_time_parse("2026-11-22 06:01:31Z", &ms) != 0, "space instead of T refused");
        ok(relay_time_parse("2026-11-22T06:01:31", &ms) != 0, "missing zone refused");
        ok(relay_time_parse("2024-02-29T00:00:00Z", &ms) == 0, "29 February of a leap year");
        ok(relay_time_parse("2023-02-29T00:00:00Z", &ms) != 0, "29 February of a common year refused");
        ok(relay_time_parse("2026-02-30T00:00:00Z", &ms) != 0, "30 February refused");
        ok(relay_time_parse("2026-04-31T00:00:00Z", &ms) != 0, "31 April refused");
        ok(relay_time_parse("+999-01-01T00:00:00Z", &ms) != 0, "a sign in the year refused");
        ok(relay_time_parse("2024-+1-01T00:00:00Z", &ms) != 0, "a sign in the month refused");
        ok(relay_time_parse("2024- 1-01T00:00:00Z", &ms) != 0, "a space in the month refused");
        ok(relay_time_parse("2026-11-22T06:01:31+-1:00", &ms) != 0, "a signed offset hour refused");
        ok(relay_time_parse("2026-11-22T06:01:31+01:60", &ms) != 0, "offset minutes over 59 refused");
        ok(relay_time_parse("2026-11-22T06:01:31+0100", &ms) != 0, "offset without colon refused");
        is_str(relay_time_format(1795327291123LL, a, sizeof(a)), "2026-11-22T06:01:31.123Z", "format");
        is_str(relay_time_format(0, a, sizeof(a)), "1970-01-01T00:00:00.000Z", "format: the epoch");
        is_str(relay_time_format(951782400999LL, a, sizeof(a)), "2000-02-29T00:00:00.999Z", "format: a leap day");
        is_str(relay_time_format(-1, a, sizeof(a)), "1969-12-31T23:59:59.999Z", "format: before the epoch");
        is_str(relay_time_format(253402300799999LL, a, sizeof(a)), "9999-12-31T23:59:59.999Z", "format: the last year");
        is_str(relay_time_format(253402300800000LL, a, sizeof(a)), "10000-01-01T00:00:00.000Z", "format: past it");
        /* the ends of int64 (what a corrupt row may hold): no overflow (UBSan) */
        is_str(relay_time_format(INT64_MAX, a, sizeof(a)), "292278994-08-17T07:12:55.807Z", "format: INT64_MAX");
        is_str(relay_time_format(INT64_MIN, a, sizeof(a)), "-292275055-05-16T16:47:04.192Z", "format: INT64_MIN");
        {
                bool same = true;
                for (int64_t t = -86400000LL * 800; t < 86400000LL * 366 * 60 && same; t += 86399999LL) {
                        int64_t back;
                        same = relay_time_parse(relay_time_format(t, a, sizeof(a)), &back) == 0 && back == t;
                        if (!same)
                                printf("# %lld -> %s -> %lld\n", (long long)t, a, (long long)back);
                }
                ok(same, "format then parse gives the same instant, day after day from 1967 to 2030");
        }
        is_str(relay_time_format(1795327291123LL, a, 10), "2026-11-2", "format: a short buffer is cut, not overrun");

        char enc[RELAY_B64_LEN(5)];
        relay_b64url_encode("\xfb\xff\x00"
                            "ab",
                            5, enc, sizeof(enc));
        is_str(enc, "-_8AYWI", "base64url without padding");
        unsigned char dec[8];
        ok(relay_b64url_decode(enc, dec, sizeof(dec)) == 5 && dec[0] == 0xfb && dec[4] == 'b', "decodes back");
        ok(relay_b64url_decode("!!", dec, sizeof(dec)) < 0, "garbage refused");

        buf x = {0};
        buf_printf(&x, "%s-%d", "abc", 42);
        for (int i = 0; i < 1000; i++)
                buf_puts(&x, "0123456789");
        ok(x.len == 6 + 10000 && memcmp(x.data, "abc-42", 6) == 0, "buffer grows");
        buf_consume(&x, 6);
        ok(x.len == 10000 && x.data[0] == '0', "consume drops the front");
        buf_free(&x);

        arena ar = {0};
        char *s1 = arena_strdup(&ar, "hello");
        char *big = arena_alloc(&ar, 10000);
        memset(big, 1, 10000);
        is_str(s1, "hello", "arena strings survive a large allocation");
        arena_reset(&ar);
        char *s2 = arena_strdup(&ar, "again");
        is_str(s2, "again", "arena reusable after reset");
        arena_free(&ar);

        /* the SSRF guard's idea of "public" */
        static const char *const private_ips[] = {"127.0.0.1",
                                                  "127.255.0.9",
                                                  "10.1.2.3",
                                                  "172.16.0.1",
                                                  "172.31.255.255",
                                                  "192.168.1.1",
                                                  "169.254.169.254",
                                                  "100.64.0.1",
                                                  "0.0.0.0",
                                                  "224.0.0.1",
                                                  "255.255.255.255",
                                                  "::1",
                                                  "::",
                                                  "fe80::1",
                                                  "fc00::1",
                                                  "fd12:3456::1",
                                                  "::ffff:127.0.0.1",
                                                  "::ffff:10.0.0.1",
                                                  "64:ff9b::a00:1",
                                                  "ff02::1",
                                                  "198.18.0.1",
                                                  "not-an-ip",
                                                  "",
                                                  "1.2.3.4.5"};
        for (size_t i = 0; i < sizeof(private_ips) / sizeof(*private_ips); i++)
                ok(!relay_ip_is_public(private_ips[i]), "%s is not public", private_ips[i]);
        static const char *const public_ips[] = {
                "8.8.8.8",        "1.1.1.1",         "172.32.0.1", "100.128.0.1", "2001:4860:4860::8888",
                "::ffff:8.8.8.8", "64:ff9b::808:808"};
        for (size_t i = 0; i < sizeof(public_ips) / sizeof(*public_ips); i++)
                ok(relay_ip_is_public(public_ips[i]), "%s is public", public_ips[i]);
        ok(!relay_ip_is_public(NULL), "NULL is not public");
        return tap_done();
}
