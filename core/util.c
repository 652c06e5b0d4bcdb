/* util.c - ids, time and encodings for plugins (relay/util.h). */
#include <stdbool.h>
#include <stdio.h>
#include <pthread.h>
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

/* Y-M-D of the day DAYS after 1970-01-01 (proleptic Gregorian; H. Hinnant's
 * civil_from_days): no gmtime_r, which takes glibc's time zone lock. */
static void civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
        days += 719468;
        int64_t era = (days >= 0 ? days : days - 146096) / 146097;
        unsigned doe = (unsigned)(days - era * 146097);
        unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        unsigned mp = (5 * doy + 2) / 153;
        *d = doy - (153 * mp + 2) / 5 + 1;
        *m = mp < 10 ? mp + 3 : mp - 9;
        *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static char *put_digits(char *p, unsigned v, int n)
{
        for (int i = n - 1; i >= 0; i--, v /= 10)
                p[i] = (char)('0' + v % 10);
        return p + n;
}

/* Every reply with a record carries three of these: digits, not printf. */
RELAY_API char *relay_time_format(int64_t ms, char *buf, size_t len)
{
        /* floor divisions by remainder, not by multiplying back: that
         * overflows near the ends of int64 (a corrupt or hostile value) */
        int64_t secs = ms / 1000, frac = ms % 1000;
        if (frac < 0)
                frac += 1000, secs--;
        int64_t days = secs / 86400, sod = secs % 86400, y;
        if (sod < 0)
                sod += 86400, days--;
        unsigned m, d;
        civil_from_days(days, &y, &m, &d);
        if (len < 25 || y < 0 || y > 9999) { /* printf's widths and truncation */
                snprintf(buf, len, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)y, m, d, (unsigned)(sod / 3600),
                         (unsigned)(sod / 60 % 60), (unsigned)(sod % 60), (unsigned)frac);
                return buf;
        }
        char *p = put_digits(buf, (unsigned)y, 4);
        *p++ = '-';
        p = put_digits(p, m, 2);
        *p++ = '-';
        p = put_digits(p, d, 2);
        *p++ = 'T';
        p = put_digits(p, (unsigned)(sod / 3600), 2);
        *p++ = ':';
        p = put_digits(p, (unsigned)(sod / 60 % 60), 2);
        *p++ = ':';
        p = put_digits(p, (unsigned)(sod % 60), 2);
        *p++ = '.';
        p = put_digits(p, (unsigned)frac, 3);
        memcpy(p, "Z", 2);
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

/* N decimal digits at S (no sign, no space): their value, or -1. */
static int digits(const char *s, int n)
{
        int v = 0;
        for (int i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                v = v * 10 + (s[i] - '0');
        }
        return v;
}

static bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m)
{
        static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        return m == 2 && leap(y) ? 29 : days[m - 1];
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM), every
 * field exactly its digits, the date a real one. */
RELAY_API int relay_time_parse(const char *s, int64_t *ms)
{
        if (!s || strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
            s[16] != ':')
                return RELAY_ERR;
        int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
        int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
        if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h < 0 || h > 23 || mi < 0 || mi > 59 ||
            sec < 0 || sec > 60)
                return RELAY_ERR;
        const char *p = s + 19;
        int frac = 0;
        if (*p == '.') {
                int n = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, n++)
                        if (n < 3)
                                frac = frac * 10 + (*p - '0');
                if (!n)
                        return RELAY_ERR;
                for (; n < 3; n++)
                        frac *= 10;
        }
        int offset = 0;
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if (*p == '+' || *p == '-') {
                int oh = digits(p + 1, 2), om = oh < 0 || p[3] != ':' ? -1 : digits(p + 4, 2);
                if (oh < 0 || oh > 23 || om < 0 || om > 59)
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

/* ULID's monotonic mode, for the whole process: an id made in the same
 * millisecond as the one before (or after the clock stepped back) takes
 * that one's time and its random part plus one, so ids sort in the order
 * they were made, not only to the millisecond ("newest first" lists). */
static void monotonic_tail(uint64_t *ms, unsigned char rnd[10])
{
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        static uint64_t last_ms;
        static unsigned char last[10];
        pthread_mutex_lock(&lock);
        if (*ms > last_ms) {
                randombytes_buf(last, sizeof(last));
                last[0] &= 0x7f; /* room to count up within the millisecond */
                last_ms = *ms;
        } else {
                int i = 9;
                while (i >= 0 && ++last[i] == 0)
                        i--;
                if (i < 0) /* 2^79 ids in one millisecond: borrow the next one */
                        last_ms++;
                *ms = last_ms;
        }
        memcpy(rnd, last, sizeof(last));
        pthread_mutex_unlock(&lock);
}

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
        monotonic_tail(&t, bytes + 6);
        for (int i = 5; i >= 0; i--, t >>= 8)
                bytes[i] = (unsigned char)(t & 0xff);
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

RELAY_API bool relay_id_valid(const char *prefix, const char *s)
{
        size_t plen = strlen(prefix);
        if (!s || strncmp(s, prefix, plen) != 0)
                return false;
        s += plen;
        /* 128 bits: the first of 26 digits carries only 3 */
        return strlen(s) == RELAY_ULID_LEN && strspn(s, crockford) == RELAY_ULID_LEN && s[0] <= '7';
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
