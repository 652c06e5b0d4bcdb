/* util.c - ids, time and encodings for plugins (relay/util.h). */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "relay/util.h"

RELAY_API int64_t relay_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

RELAY_API char *relay_time_format(int64_t ms, char *buf, size_t len)
{
        time_t secs = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
        return buf;
}

/* Days from 1970-01-01 to Y-M-D (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned)(y - era * 400);
        unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t)doe - 719468;
}

RELAY_API int relay_time_parse(const char *s, int64_t *ms)
{
        int y, mo, d, h, mi, sec, n = 0;
        if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
                return RELAY_ERR;
        if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
                return RELAY_ERR;
        const char *p = s + 19;
        int frac = 0;
        if (*p == '.') {
                int digits = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                        if (digits < 3)
                                frac = frac * 10 + (*p - '0');
                if (!digits)
                        return RELAY_ERR;
                for (; digits < 3; digits++)
                        frac *= 10;
        }
        int offset = 0;
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if (*p == '+' || *p == '-') {
                int oh, om;
                if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2 || strlen(p) != 6)
                        return RELAY_ERR;
                offset = (oh * 60 + om) * (*p == '+' ? 1 : -1);
                p += 6;
        } else {
                return RELAY_ERR;
        }
        if (*p)
                return RELAY_ERR;
        int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
        *ms = ((days * 86400 + h * 3600 + mi * 60 + sec) - (int64_t)offset * 60) * 1000 + frac;
        return RELAY_OK;
}

RELAY_API void relay_random(void *buf, size_t len) { randombytes_buf(buf, len); }

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

RELAY_API char *relay_id_new(const char *prefix, char *buf, size_t len)
{
        size_t plen = strlen(prefix);
        if (len < plen + RELAY_ULID_LEN + 1) {
                if (len)
                        buf[0] = '\0';
                return buf;
        }
        unsigned char bytes[16];
        uint64_t t = (uint64_t)relay_now_ms();
        for (int i = 5; i >= 0; i--, t >>= 8)
                bytes[i] = (unsigned char)(t & 0xff);
        randombytes_buf(bytes + 6, 10);
        memcpy(buf, prefix, plen);
        char *out = buf + plen;
        /* 128 bits as 26 base32 digits, the first carrying 3 bits. */
        for (int i = 0; i < RELAY_ULID_LEN; i++) {
                int bit = i == 0 ? 0 : 3 + (i - 1) * 5, width = i == 0 ? 3 : 5;
                unsigned v = 0;
                for (int k = 0; k < width; k++) {
                        int b = bit + k;
                        v = (v << 1) | ((bytes[b / 8] >> (7 - b % 8)) & 1);
                }
                out[i] = crockford[v];
        }
        out[RELAY_ULID_LEN] = '\0';
        return buf;
}

RELAY_API char *relay_uuid4(char *buf, size_t len)
{
        unsigned char b[16];
        randombytes_buf(b, sizeof(b));
        b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
        b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
        snprintf(buf, len, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
                 b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        return buf;
}

RELAY_API size_t relay_b64url_encode(const void *in, size_t n, char *out, size_t out_len)
{
        if (out_len < sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING))
                return 0;
        sodium_bin2base64(out, out_len, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return strlen(out);
}

RELAY_API int relay_b64url_decode(const char *in, void *out, size_t out_len)
{
        size_t n;
        if (sodium_base642bin(out, out_len, in, strlen(in), NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) !=
            0)
                return RELAY_ERR;
        return (int)n;
}

RELAY_API void relay_hash_hex(const void *data, size_t len, char out[65])
{
        unsigned char h[32];
        crypto_generichash(h, sizeof(h), data, len, NULL, 0);
        sodium_bin2hex(out, 65, h, sizeof(h));
}

RELAY_API bool relay_equal_ct(const void *a, const void *b, size_t len) { return sodium_memcmp(a, b, len) == 0; }
