/* events_tool.c - the load side of contrib/bench/events-bench: one program,
 * three modes, plain epoll, one thread each, no dependencies.
 *
 *   events_tool sub  -u URL -n CONNS [-H HDR]... [-k KEY] [-K KEY2] [-E EVENT]
 *                    [-P PROGRESS] [-e TOTAL] [-t TIMEOUT] [-Q]
 *       CONNS Server-Sent Events subscribers of URL (GET, keep-alive, chunked
 *       or not).  Counts the events (a blank line after data: lines; EVENT:
 *       only events of that name) of each subscriber, and for each event the
 *       latency: receive time - the timestamp under KEY in its data (and,
 *       separately, under KEY2).  Writes "ready" to PROGRESS once every
 *       subscriber has its 200 answer, then every 100 ms
 *       "progress EVENTS FIRST_NS LAST_NS".  Stops when TOTAL events arrived
 *       (all subscribers together), on SIGTERM/SIGINT, or after TIMEOUT s.
 *       -Q: TCP_QUICKACK after every read, so the subscriber never delays
 *       its ACKs (a server that leaves Nagle on then does not wait for them).
 *
 *   events_tool recv -l PORT [-k KEY] [-K KEY2] [-P PROGRESS] [-R REPORT]
 *                    [-D DUMP] [-t TIMEOUT]
 *       An HTTP/1.1 receiver on 127.0.0.1:PORT answering every request
 *       200 with an empty body (keep-alive; 100 Continue when asked).  Counts
 *       requests, distinct webhook-id headers, and each request's latency
 *       (receive time - the timestamp under KEY / KEY2 in its body).
 *       PROGRESS: "ready", then every 100 ms "progress REQUESTS FIRST_NS
 *       LAST_NS GEN".  SIGUSR1 writes the figures so far to REPORT (with
 *       gen=GEN+1) and starts counting from zero: one receiver serves several
 *       measured runs without dropping the sender's connections.  DUMP gets
 *       the first request as received.  Stops on SIGTERM/SIGINT or after
 *       TIMEOUT s and prints the figures.
 *
 *   events_tool load -u URL -c CONNS -d SECONDS [-r RATE] [-m METHOD]
 *                    [-H HDR]... -b BODY
 *       CONNS keep-alive connections sending METHOD (POST) URL with BODY for
 *       SECONDS: as fast as answers come (RATE 0), or request i due at
 *       start + i / RATE (open loop on the free connections; requests that
 *       find no free connection wait: "late" is the most that were overdue).  In BODY, @US@
 *       becomes the send time in microseconds since the epoch (16 digits)
 *       and @TIME@ the send time as RFC 3339 with milliseconds (24 chars).
 *
 * Timestamps read by sub and recv: a JSON number (microseconds since the
 * epoch when above 1e14, else milliseconds) or a string in RFC 3339
 * ("2026-11-22T11:15:15.123Z", any fraction, Z or +hh:mm).  KEY is found as
 * the first "KEY": in the text, at any depth.
 *
 * Every mode prints its figures on stdout as KEY=VALUE lines:
 *   sub:  conns connected failed closed events per_sub_min per_sub_max
 *         first_ns last_ns window_s rate rate_per_sub lat_n lat_p50_us
 *         lat_p99_us lat_max_us lat2_n lat2_p50_us lat2_p99_us
 *   recv: gen requests unique connections bad first_ns last_ns window_s
 *         rate lat_* lat2_*
 *   load: sent ok non2xx errors late start_ns end_ns seconds rate
 *         lat_p50_us lat_p99_us (request latency)
 * A benchmark tool (contrib/bench/events-bench builds it with cc -O2). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static void die(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fputs("events_tool: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(2);
}

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static volatile sig_atomic_t stop_flag, usr1_flag;
static void on_signal(int sig)
{
        if (sig == SIGUSR1)
                usr1_flag = 1;
        else
                stop_flag = 1;
}

static void setup_signals(void)
{
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
}

static void *xrealloc(void *p, size_t n)
{
        p = realloc(p, n);
        if (!p)
                die("out of memory");
        return p;
}

/* latency samples in microseconds */
typedef struct {
        int32_t *v;
        size_t n, cap;
} samples;

static void sample_add(samples *s, int64_t us)
{
        if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 65536;
                s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
        }
        if (us > INT32_MAX)
                us = INT32_MAX;
        if (us < INT32_MIN)
                us = INT32_MIN;
        s->v[s->n++] = (int32_t)us;
}

static int cmp_i32(const void *a, const void *b)
{
        int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
        return (x > y) - (x < y);
}

static void fprint_samples(FILE *f, const char *prefix, samples *s)
{
        fprintf(f, "%s_n=%zu\n", prefix, s->n);
        if (!s->n) {
                fprintf(f, "%s_p50_us=-\n%s_p99_us=-\n%s_max_us=-\n", prefix, prefix, prefix);
                return;
        }
        qsort(s->v, s->n, sizeof(*s->v), cmp_i32);
        size_t i50 = (s->n - 1) * 50 / 100, i99 = (s->n - 1) * 99 / 100;
        fprintf(f, "%s_p50_us=%d\n%s_p99_us=%d\n%s_max_us=%d\n", prefix, s->v[i50], prefix, s->v[i99], prefix,
                s->v[s->n - 1]);
}

static void print_samples(const char *prefix, samples *s) { fprint_samples(stdout, prefix, s); }

/* days since 1970-01-01 of a civil date (Howard Hinnant's algorithm) */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned)(y - era * 400);
        unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *p, int n, int *out)
{
        int v = 0;
        for (int i = 0; i < n; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return -1;
                v = v * 10 + (p[i] - '0');
        }
        *out = v;
        return 0;
}

/* RFC 3339 at P (END bounds it) -> ns since the epoch, or -1 */
static int64_t parse_rfc3339(const char *p, const char *end)
{
        int Y, M, D, h, m, s;
        if (end - p < 20 || digits(p, 4, &Y) || p[4] != '-' || digits(p + 5, 2, &M) || p[7] != '-' ||
            digits(p + 8, 2, &D) || (p[10] != 'T' && p[10] != 't' && p[10] != ' ') || digits(p + 11, 2, &h) ||
            p[13] != ':' || digits(p + 14, 2, &m) || p[16] != ':' || digits(p + 17, 2, &s))
                return -1;
        const char *q = p + 19;
        int64_t frac = 0, scale = 1000000000;
        if (q < end && *q == '.') {
                q++;
                while (q < end && *q >= '0' && *q <= '9') {
                        if (scale > 1) {
                                scale /= 10;
                                frac += (*q - '0') * scale;
                        }
                        q++;
                }
        }
        int64_t off = 0;
        if (q < end && (*q == '+' || *q == '-')) {
                int oh, om;
                if (end - q < 6 || digits(q + 1, 2, &oh) || q[3] != ':' || digits(q + 4, 2, &om))
                        return -1;
                off = (oh * 3600 + om * 60) * (*q == '-' ? -1 : 1);
        } else if (!(q < end && (*q == 'Z' || *q == 'z')))
                return -1;
        int64_t secs = days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 + h * 3600 + m * 60 + s - off;
        return secs * 1000000000 + frac;
}

/* the timestamp under "KEY": in TEXT[0..LEN) -> ns since the epoch, or -1 */
static int64_t find_ts(const char *text, size_t len, const char *key)
{
        if (!key || !*key)
                return -1;
        char pat[128];
        int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
        if (pl <= 0 || pl >= (int)sizeof(pat))
                return -1;
        const char *end = text + len, *p = memmem(text, len, pat, (size_t)pl);
        if (!p)
                return -1;
        p += pl;
        while (p < end && (*p == ' ' || *p == ':'))
                p++;
        if (p >= end)
                return -1;
        if (*p == '"')
                return parse_rfc3339(p + 1, end);
        if (*p >= '0' && *p <= '9') {
                double v = strtod(p, NULL);
                if (v > 1e14)
                        return (int64_t)(v * 1000.0);
                return (int64_t)(v * 1000000.0);
        }
        return -1;
}

static void fmt_rfc3339(int64_t ns, char out[32])
{
        time_t secs = (time_t)(ns / 1000000000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ns / 1000000 % 1000));
}

/* http://HOST:PORT/PATH */
typedef struct {
        char host[300];
        char port[16];
        char path[2048];
        struct sockaddr_storage addr;
        socklen_t addrlen;
} url_t;

static void parse_url(const char *u, url_t *out)
{
        if (strncmp(u, "http://", 7) != 0)
                die("only http:// URLs: %s", u);
        const char *h = u + 7, *slash = strchr(h, '/');
        size_t hl = slash ? (size_t)(slash - h) : strlen(h);
        char hp[300];
        if (hl >= sizeof(hp))
                die("host too long");
        memcpy(hp, h, hl);
        hp[hl] = 0;
        char *colon = strrchr(hp, ':');
        if (colon) {
                *colon = 0;
                snprintf(out->port, sizeof(out->port), "%s", colon + 1);
        } else
                snprintf(out->port, sizeof(out->port), "80");
        snprintf(out->host, sizeof(out->host), "%s", hp);
        snprintf(out->path, sizeof(out->path), "%s", slash ? slash : "/");
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
        int rc = getaddrinfo(out->host, out->port, &hints, &ai);
        if (rc)
                die("cannot resolve %s: %s", out->host, gai_strerror(rc));
        memcpy(&out->addr, ai->ai_addr, ai->ai_addrlen);
        out->addrlen = ai->ai_addrlen;
        freeaddrinfo(ai);
}

static int connect_nb(const url_t *u)
{
        int fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                die("socket: %s", strerror(errno));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (const struct sockaddr *)&u->addr, u->addrlen) < 0 && errno != EINPROGRESS) {
                close(fd);
                return -1;
        }
        return fd;
}

static void write_progress(const char *path, const char *line)
{
        if (!path)
                return;
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f)
                return;
        fputs(line, f);
        fclose(f);
        rename(tmp, path);
}

/* growable byte buffer */
typedef struct {
        char *p;
        size_t len, cap;
} buf;

static void buf_add(buf *b, const char *s, size_t n)
{
        if (b->len + n + 1 > b->cap) {
                while (b->len + n + 1 > b->cap)
                        b->cap = b->cap ? b->cap * 2 : 4096;
                b->p = xrealloc(b->p, b->cap);
        }
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = 0;
}

static void buf_consume(buf *b, size_t n)
{
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
        if (b->p)
                b->p[b->len] = 0;
}

/* a header's value in the head H (ends at \r\n\r\n) or NULL; LEN its length */
static const char *header_value(const char *h, size_t hlen, const char *name, size_t *len)
{
        size_t nl = strlen(name);
        const char *p = h, *end = h + hlen;
        while (p < end) {
                const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
                if (!eol)
                        eol = end;
                if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
                        const char *v = p + nl + 1;
                        while (v < eol && (*v == ' ' || *v == '\t'))
                                v++;
                        *len = (size_t)(eol - v);
                        return v;
                }
                p = eol + 2;
        }
        return NULL;
}

/* chunked transfer decoding, incremental */
typedef struct {
        int state;     /* 0 size line, 1 data, 2 CRLF after data, 3 done */
        size_t remain; /* bytes left in the chunk */
        char line[64];
        size_t ll;
} chunked;

/* decodes IN[0..N) appending the payload to OUT; -1 on a malformed stream */
static int chunked_feed(chunked *c, const char *in, size_t n, buf *out)
{
        size_t i = 0;
        while (i < n) {
                if (c->state == 0 || c->state == 2) {
                        char ch = in[i++];
                        if (ch == '\n') {
                                c->line[c->ll] = 0;
                                if (c->state == 2) {
                                        c->state = 0;
                                        c->ll = 0;
                                        continue;
                                }
                                char *e;
                                unsigned long sz = strtoul(c->line, &e, 16);
                                if (e == c->line)
                                        return -1;
                                c->ll = 0;
                                if (sz == 0) {
                                        c->state = 3;
                                        return 0;
                                }
                                c->remain = sz;
                                c->state = 1;
                        } else if (ch != '\r' && c->ll + 1 < sizeof(c->line))
                                c->line[c->ll++] = ch;
                } else if (c->state == 1) {
                        size_t k = n - i < c->remain ? n - i : c->remain;
                        buf_add(out, in + i, k);
                        i += k;
                        c->remain -= k;
                        if (!c->remain)
                                c->state = 2;
                } else
                        return 0;
        }
        return 0;
}

static char *build_headers(char **hdrs, int nh)
{
        buf b = {0};
        for (int i = 0; i < nh; i++) {
                buf_add(&b, hdrs[i], strlen(hdrs[i]));
                buf_add(&b, "\r\n", 2);
        }
        if (!b.p)
                buf_add(&b, "", 0);
        return b.p;
}

/* ------------------------------------------------------------ sub */

typedef struct {
        int fd;
        int state; /* 0 connecting/sent, 1 reading head, 2 streaming, 3 dead */
        buf in;    /* raw bytes (head) */
        buf body;  /* decoded stream bytes */
        chunked ch;
        int is_chunked;
        size_t scan; /* start of the current event in body */
        int have_data;
        char event[64];
        long events;
} subconn;

static const char *sub_key, *sub_key2, *sub_event;
static int sub_quickack;
static samples sub_lat, sub_lat2;
static long sub_total;
static int64_t sub_first, sub_last;

/* parses complete events in C->body */
static void sub_parse(subconn *c)
{
        char *b = c->body.p;
        size_t len = c->body.len, pos = 0;
        while (pos < len) {
                char *nl = memchr(b + pos, '\n', len - pos);
                if (!nl)
                        break;
                size_t ll = (size_t)(nl - (b + pos));
                char *line = b + pos;
                if (ll && line[ll - 1] == '\r')
                        ll--;
                if (ll == 0) {
                        /* end of an event: data lines of it are between c->scan and pos */
                        if (c->have_data && (!sub_event || strcmp(c->event, sub_event) == 0)) {
                                int64_t t = now_ns();
                                const char *d = b + c->scan;
                                size_t dl = pos - c->scan;
                                c->events++;
                                sub_total++;
                                if (!sub_first)
                                        sub_first = t;
                                sub_last = t;
                                int64_t ts = find_ts(d, dl, sub_key);
                                if (ts > 0)
                                        sample_add(&sub_lat, (t - ts) / 1000);
                                if (sub_key2) {
                                        ts = find_ts(d, dl, sub_key2);
                                        if (ts > 0)
                                                sample_add(&sub_lat2, (t - ts) / 1000);
                                }
                        }
                        c->have_data = 0;
                        c->event[0] = 0;
                        pos = (size_t)(nl - b) + 1;
                        c->scan = pos;
                        continue;
                }
                if (ll >= 5 && memcmp(line, "data:", 5) == 0)
                        c->have_data = 1;
                else if (ll >= 6 && memcmp(line, "event:", 6) == 0) {
                        const char *v = line + 6;
                        size_t vl = ll - 6;
                        if (vl && *v == ' ')
                                v++, vl--;
                        if (vl >= sizeof(c->event))
                                vl = sizeof(c->event) - 1;
                        memcpy(c->event, v, vl);
                        c->event[vl] = 0;
                }
                pos = (size_t)(nl - b) + 1;
        }
        /* drop what is fully parsed: everything before the current event */
        if (c->scan) {
                buf_consume(&c->body, c->scan);
                c->scan = 0;
        }
}

static int cmd_sub(int argc, char **argv)
{
        const char *url = NULL, *progress = NULL;
        int n = 1, nh = 0;
        long expect = 0;
        double timeout = 3600;
        char *hdrs[64];
        int opt;
        while ((opt = getopt(argc, argv, "u:n:H:k:K:E:P:e:t:Q")) != -1) {
                switch (opt) {
                case 'Q': sub_quickack = 1; break;
                case 'u': url = optarg; break;
                case 'n': n = atoi(optarg); break;
                case 'H':
                        if (nh < 64)
                                hdrs[nh++] = optarg;
                        break;
                case 'k': sub_key = optarg; break;
                case 'K': sub_key2 = optarg; break;
                case 'E': sub_event = optarg; break;
                case 'P': progress = optarg; break;
                case 'e': expect = atol(optarg); break;
                case 't': timeout = atof(optarg); break;
                default: die("sub: bad option");
                }
        }
        if (!url || n < 1)
                die("sub: -u URL and -n CONNS are needed");
        url_t u;
        parse_url(url, &u);
        char *extra = build_headers(hdrs, nh);
        char req[8192];
        int rl = snprintf(
                req, sizeof(req),
                "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n%s\r\n",
                u.path, u.host, u.port, extra);
        if (rl <= 0 || rl >= (int)sizeof(req))
                die("sub: request too long");
        setup_signals();
        int ep = epoll_create1(EPOLL_CLOEXEC);
        subconn *cs = calloc((size_t)n, sizeof(*cs));
        if (!cs)
                die("out of memory");
        for (int i = 0; i < n; i++) {
                cs[i].fd = connect_nb(&u);
                if (cs[i].fd < 0)
                        die("sub: connect failed: %s", strerror(errno));
                struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        }
        int connected = 0, failed = 0, closed = 0, ready_said = 0;
        int64_t start = mono_ns(), next_progress = 0;
        struct epoll_event evs[256];
        char rbuf[65536];
        while (!stop_flag) {
                int64_t m = mono_ns();
                if ((double)(m - start) / 1e9 > timeout)
                        break;
                if (expect > 0 && sub_total >= expect)
                        break;
                if (connected + failed == n && !ready_said) {
                        char line[64];
                        snprintf(line, sizeof(line), "ready %d %d\n", connected, failed);
                        write_progress(progress, line);
                        ready_said = 1;
                        next_progress = m + 100000000;
                } else if (ready_said && m >= next_progress) {
                        char line[128];
                        snprintf(line, sizeof(line), "progress %ld %lld %lld\n", sub_total, (long long)sub_first,
                                 (long long)sub_last);
                        write_progress(progress, line);
                        next_progress = m + 100000000;
                }
                if (closed + failed == n && ready_said)
                        break;
                int k = epoll_wait(ep, evs, 256, 50);
                for (int j = 0; j < k; j++) {
                        subconn *c = &cs[evs[j].data.u32];
                        if (c->state == 3)
                                continue;
                        if (c->state == 0 && (evs[j].events & EPOLLOUT)) {
                                int err = 0;
                                socklen_t el = sizeof(err);
                                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                                if (err || write(c->fd, req, (size_t)rl) != rl) {
                                        c->state = 3;
                                        failed++;
                                        close(c->fd);
                                        continue;
                                }
                                c->state = 1;
                                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[j].data.u32};
                                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                                continue;
                        }
                        if (!(evs[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                                continue;
                        for (;;) {
                                ssize_t r = read(c->fd, rbuf, sizeof(rbuf));
                                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                        break;
                                if (r <= 0) {
                                        if (c->state == 2)
                                                closed++;
                                        else
                                                failed++;
                                        c->state = 3;
                                        close(c->fd);
                                        break;
                                }
                                if (sub_quickack) {
                                        int one = 1;
                                        setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
                                }
                                if (c->state == 1) {
                                        buf_add(&c->in, rbuf, (size_t)r);
                                        char *e = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
                                        if (!e)
                                                continue;
                                        size_t hl = (size_t)(e - c->in.p) + 4;
                                        if (c->in.len < 12 || memcmp(c->in.p + 9, "200", 3) != 0) {
                                                fprintf(stderr, "events_tool sub: answer: %.*s\n", (int)hl, c->in.p);
                                                failed++;
                                                c->state = 3;
                                                close(c->fd);
                                                break;
                                        }
                                        size_t vl;
                                        const char *te = header_value(c->in.p, hl, "Transfer-Encoding", &vl);
                                        c->is_chunked = te && vl >= 7 && strncasecmp(te, "chunked", 7) == 0;
                                        c->state = 2;
                                        connected++;
                                        const char *rest = c->in.p + hl;
                                        size_t rn = c->in.len - hl;
                                        if (c->is_chunked)
                                                chunked_feed(&c->ch, rest, rn, &c->body);
                                        else
                                                buf_add(&c->body, rest, rn);
                                        c->in.len = 0;
                                        sub_parse(c);
                                        continue;
                                }
                                if (c->is_chunked) {
                                        if (chunked_feed(&c->ch, rbuf, (size_t)r, &c->body) < 0)
                                                die("sub: malformed chunked stream");
                                } else
                                        buf_add(&c->body, rbuf, (size_t)r);
                                sub_parse(c);
                        }
                }
        }
        long mn = -1, mx = 0;
        for (int i = 0; i < n; i++) {
                if (mn < 0 || cs[i].events < mn)
                        mn = cs[i].events;
                if (cs[i].events > mx)
                        mx = cs[i].events;
        }
        char line[128];
        snprintf(line, sizeof(line), "done %ld %lld %lld\n", sub_total, (long long)sub_first, (long long)sub_last);
        write_progress(progress, line);
        double win = sub_last > sub_first ? (double)(sub_last - sub_first) / 1e9 : 0;
        printf("conns=%d\nconnected=%d\nfailed=%d\nclosed=%d\nevents=%ld\nper_sub_min=%ld\nper_sub_max=%ld\n", n,
               connected, failed, closed, sub_total, mn, mx);
        printf("first_ns=%lld\nlast_ns=%lld\nwindow_s=%.3f\n", (long long)sub_first, (long long)sub_last, win);
        printf("rate=%.1f\nrate_per_sub=%.1f\n", win > 0 ? sub_total / win : 0, win > 0 ? sub_total / win / n : 0);
        print_samples("lat", &sub_lat);
        print_samples("lat2", &sub_lat2);
        return 0;
}

/* ------------------------------------------------------------ recv */

typedef struct {
        int fd;
        buf in;
} rconn;

/* distinct webhook ids: open addressing on a 64-bit hash */
static uint64_t *idset;
static size_t idcap, idn;

static uint64_t hash64(const char *s, size_t n)
{
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < n; i++)
                h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
        return h ? h : 1;
}

static int idset_add(uint64_t h)
{
        if ((idn + 1) * 2 > idcap) {
                size_t oc = idcap;
                uint64_t *old = idset;
                idcap = idcap ? idcap * 2 : 1 << 16;
                idset = calloc(idcap, sizeof(*idset));
                if (!idset)
                        die("out of memory");
                idn = 0;
                for (size_t i = 0; i < oc; i++)
                        if (old[i])
                                idset_add(old[i]);
                free(old);
        }
        size_t i = h & (idcap - 1);
        while (idset[i]) {
                if (idset[i] == h)
                        return 0;
                i = (i + 1) & (idcap - 1);
        }
        idset[i] = h;
        idn++;
        return 1;
}

static long recv_requests, recv_conns, recv_bad, recv_gen;
static int64_t recv_first, recv_last;
static samples recv_lat, recv_lat2;

static void recv_report(FILE *f)
{
        double win = recv_last > recv_first ? (double)(recv_last - recv_first) / 1e9 : 0;
        fprintf(f, "gen=%ld\nrequests=%ld\nunique=%zu\nconnections=%ld\nbad=%ld\nfirst_ns=%lld\nlast_ns=%lld\n",
                recv_gen, recv_requests, idn, recv_conns, recv_bad, (long long)recv_first, (long long)recv_last);
        fprintf(f, "window_s=%.3f\nrate=%.1f\n", win, win > 0 ? recv_requests / win : 0);
        fprint_samples(f, "lat", &recv_lat);
        fprint_samples(f, "lat2", &recv_lat2);
}

/* SIGUSR1: the figures so far into REPORT (atomically), then all from zero */
static void recv_reset(const char *report)
{
        recv_gen++;
        if (report) {
                char tmp[4096];
                snprintf(tmp, sizeof(tmp), "%s.tmp", report);
                FILE *f = fopen(tmp, "w");
                if (f) {
                        recv_report(f);
                        fclose(f);
                        rename(tmp, report);
                }
        }
        recv_requests = recv_bad = recv_conns = 0;
        recv_first = recv_last = 0;
        recv_lat.n = recv_lat2.n = 0;
        if (idset)
                memset(idset, 0, idcap * sizeof(*idset));
        idn = 0;
}

static int cmd_recv(int argc, char **argv)
{
        const char *progress = NULL, *key = "timestamp", *key2 = NULL, *report = NULL, *dump = NULL;
        int port = 0, opt;
        double timeout = 3600;
        while ((opt = getopt(argc, argv, "l:k:K:P:t:R:D:")) != -1) {
                switch (opt) {
                case 'R': report = optarg; break;
                case 'D': dump = optarg; break;
                case 'l': port = atoi(optarg); break;
                case 'k': key = optarg; break;
                case 'K': key2 = optarg; break;
                case 'P': progress = optarg; break;
                case 't': timeout = atof(optarg); break;
                default: die("recv: bad option");
                }
        }
        if (port <= 0)
                die("recv: -l PORT is needed");
        setup_signals();
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1024) < 0)
                die("recv: cannot listen on 127.0.0.1:%d: %s", port, strerror(errno));
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
        write_progress(progress, "ready\n");
        int64_t start = mono_ns(), next_progress = start;
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        struct epoll_event evs[256];
        char rbuf[65536];
        while (!stop_flag) {
                int64_t m = mono_ns();
                if ((double)(m - start) / 1e9 > timeout)
                        break;
                if (usr1_flag) {
                        usr1_flag = 0;
                        recv_reset(report);
                        next_progress = m;
                }
                if (m >= next_progress) {
                        char line[128];
                        snprintf(line, sizeof(line), "progress %ld %lld %lld %ld\n", recv_requests,
                                 (long long)recv_first, (long long)recv_last, recv_gen);
                        write_progress(progress, line);
                        next_progress = m + 100000000;
                }
                int k = epoll_wait(ep, evs, 256, 50);
                for (int j = 0; j < k; j++) {
                        if (!evs[j].data.ptr) {
                                int fd;
                                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                                        rconn *c = calloc(1, sizeof(*c));
                                        c->fd = fd;
                                        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                                        struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                                        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                                        recv_conns++;
                                }
                                continue;
                        }
                        rconn *c = evs[j].data.ptr;
                        int dead = 0;
                        for (;;) {
                                ssize_t r = read(c->fd, rbuf, sizeof(rbuf));
                                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                        break;
                                if (r <= 0) {
                                        dead = 1;
                                        break;
                                }
                                buf_add(&c->in, rbuf, (size_t)r);
                        }
                        /* every complete request in the buffer */
                        for (;;) {
                                if (!c->in.len)
                                        break;
                                char *e = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
                                if (!e)
                                        break;
                                size_t hl = (size_t)(e - c->in.p) + 4, vl;
                                const char *v = header_value(c->in.p, hl, "Content-Length", &vl);
                                size_t clen = v ? strtoul(v, NULL, 10) : 0;
                                if (header_value(c->in.p, hl, "Transfer-Encoding", &vl)) {
                                        recv_bad++; /* not expected from the senders measured */
                                        dead = 1;
                                        break;
                                }
                                if (c->in.len < hl + clen) {
                                        /* 100 Continue once, when the body has not started */
                                        if (c->in.len == hl && header_value(c->in.p, hl, "Expect", &vl)) {
                                                if (write(c->fd, cont, sizeof(cont) - 1) < 0)
                                                        dead = 1;
                                        }
                                        break;
                                }
                                int64_t t = now_ns();
                                recv_requests++;
                                if (!recv_first)
                                        recv_first = t;
                                recv_last = t;
                                if (dump) {
                                        FILE *df = fopen(dump, "w");
                                        if (df) {
                                                fwrite(c->in.p, 1, hl + clen, df);
                                                fclose(df);
                                        }
                                        dump = NULL;
                                }
                                const char *id = header_value(c->in.p, hl, "webhook-id", &vl);
                                if (id)
                                        idset_add(hash64(id, vl));
                                int64_t ts = find_ts(c->in.p + hl, clen, key);
                                if (ts > 0)
                                        sample_add(&recv_lat, (t - ts) / 1000);
                                if (key2) {
                                        ts = find_ts(c->in.p + hl, clen, key2);
                                        if (ts > 0)
                                                sample_add(&recv_lat2, (t - ts) / 1000);
                                }
                                if (write(c->fd, ok, sizeof(ok) - 1) < 0)
                                        dead = 1;
                                buf_consume(&c->in, hl + clen);
                        }
                        if (dead) {
                                close(c->fd);
                                free(c->in.p);
                                free(c);
                        }
                }
        }
        char line[128];
        snprintf(line, sizeof(line), "done %ld %lld %lld %ld\n", recv_requests, (long long)recv_first,
                 (long long)recv_last, recv_gen);
        write_progress(progress, line);
        recv_report(stdout);
        return 0;
}

/* ------------------------------------------------------------ load */

typedef struct {
        int fd;
        int state; /* 0 connecting, 1 idle, 2 waiting for the answer, 3 dead */
        buf in;
        int64_t sent_at;
        chunked ch;
} lconn;

static int cmd_load(int argc, char **argv)
{
        const char *url = NULL, *method = "POST", *body = NULL;
        int conns = 1, nh = 0, opt;
        double seconds = 10, rate = 0;
        char *hdrs[64];
        while ((opt = getopt(argc, argv, "u:c:d:r:m:H:b:")) != -1) {
                switch (opt) {
                case 'u': url = optarg; break;
                case 'c': conns = atoi(optarg); break;
                case 'd': seconds = atof(optarg); break;
                case 'r': rate = atof(optarg); break;
                case 'm': method = optarg; break;
                case 'H':
                        if (nh < 64)
                                hdrs[nh++] = optarg;
                        break;
                case 'b': body = optarg; break;
                default: die("load: bad option");
                }
        }
        if (!url || !body || conns < 1)
                die("load: -u URL -c CONNS -b BODY are needed");
        url_t u;
        parse_url(url, &u);
        char *extra = build_headers(hdrs, nh);
        /* the request with the body's placeholders located */
        char head[8192];
        int hl;
        /* placeholders keep the body's length: @US@ -> 16 digits, @TIME@ -> 24 chars */
        buf tmpl = {0};
        size_t us_at[16], time_at[16];
        int nus = 0, ntime = 0;
        for (const char *p = body; *p;) {
                if (strncmp(p, "@US@", 4) == 0 && nus < 16) {
                        us_at[nus++] = tmpl.len;
                        buf_add(&tmpl, "0000000000000000", 16);
                        p += 4;
                } else if (strncmp(p, "@TIME@", 6) == 0 && ntime < 16) {
                        time_at[ntime++] = tmpl.len;
                        buf_add(&tmpl, "0000-00-00T00:00:00.000Z", 24);
                        p += 6;
                } else
                        buf_add(&tmpl, p++, 1);
        }
        hl = snprintf(
                head, sizeof(head),
                "%s %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                method, u.path, u.host, u.port, tmpl.len, extra);
        if (hl <= 0 || hl >= (int)sizeof(head))
                die("load: request head too long");
        size_t reqlen = (size_t)hl + tmpl.len;
        char *req = malloc(reqlen);
        memcpy(req, head, (size_t)hl);
        memcpy(req + hl, tmpl.p, tmpl.len);
        setup_signals();
        int ep = epoll_create1(EPOLL_CLOEXEC);
        lconn *cs = calloc((size_t)conns, sizeof(*cs));
        for (int i = 0; i < conns; i++) {
                cs[i].fd = connect_nb(&u);
                if (cs[i].fd < 0)
                        die("load: connect failed: %s", strerror(errno));
                struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        }
        /* wait for the connections */
        int up = 0;
        int64_t cstart = mono_ns();
        struct epoll_event evs[256];
        while (up < conns && mono_ns() - cstart < 10000000000LL) {
                int k = epoll_wait(ep, evs, 256, 100);
                for (int j = 0; j < k; j++) {
                        lconn *c = &cs[evs[j].data.u32];
                        if (c->state != 0)
                                continue;
                        int err = 0;
                        socklen_t el = sizeof(err);
                        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                        if (err)
                                die("load: connect: %s", strerror(err));
                        c->state = 1;
                        up++;
                        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[j].data.u32};
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
        }
        if (up < conns)
                die("load: only %d of %d connections came up", up, conns);
        samples lat = {0};
        long sent = 0, ok = 0, non2xx = 0, errors = 0, late = 0, inflight = 0;
        int64_t start = mono_ns(), end = start + (int64_t)(seconds * 1e9), wall0 = now_ns();
        int64_t lastdone = start;
        char rbuf[65536];
        int idle_hint = 0;
        while (!stop_flag) {
                int64_t m = mono_ns();
                int sending = m < end;
                if (!sending && inflight == 0)
                        break;
                if (!sending && m > end + 30000000000LL)
                        break; /* answers lost */
                /* send what is due on idle connections */
                if (sending) {
                        long due = rate > 0 ? (long)((double)(m - start) / 1e9 * rate) + 1 : -1;
                        for (int tries = 0; tries < conns && (due < 0 || sent < due); tries++) {
                                int i = (idle_hint + tries) % conns;
                                lconn *c = &cs[i];
                                if (c->state != 1)
                                        continue;
                                int64_t t = now_ns();
                                if (nus || ntime) {
                                        char ts[32];
                                        snprintf(ts, sizeof(ts), "%016lld", (long long)(t / 1000));
                                        for (int q = 0; q < nus; q++)
                                                memcpy(req + hl + us_at[q], ts, 16);
                                        fmt_rfc3339(t, ts);
                                        for (int q = 0; q < ntime; q++)
                                                memcpy(req + hl + time_at[q], ts, 24);
                                }
                                ssize_t w = write(c->fd, req, reqlen);
                                if (w != (ssize_t)reqlen) {
                                        errors++;
                                        c->state = 3;
                                        close(c->fd);
                                        continue;
                                }
                                c->sent_at = mono_ns();
                                c->state = 2;
                                sent++;
                                inflight++;
                                idle_hint = i + 1;
                        }
                        if (due > 0 && due - sent > late)
                                late = due - sent;
                }
                int timeout_ms = 50;
                if (sending && rate > 0) {
                        double next = (double)sent / rate * 1e9 + (double)start;
                        int64_t wait = (int64_t)next - mono_ns();
                        timeout_ms = wait <= 0 ? 0 : (int)(wait / 1000000);
                        if (timeout_ms > 50)
                                timeout_ms = 50;
                }
                int k = epoll_wait(ep, evs, 256, timeout_ms);
                for (int j = 0; j < k; j++) {
                        lconn *c = &cs[evs[j].data.u32];
                        if (c->state == 3)
                                continue;
                        for (;;) {
                                ssize_t r = read(c->fd, rbuf, sizeof(rbuf));
                                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                        break;
                                if (r <= 0) {
                                        if (c->state == 2) {
                                                errors++;
                                                inflight--;
                                        }
                                        c->state = 3;
                                        close(c->fd);
                                        break;
                                }
                                buf_add(&c->in, rbuf, (size_t)r);
                        }
                        while (c->state == 2 && c->in.len) {
                                char *e = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
                                if (!e)
                                        break;
                                size_t h = (size_t)(e - c->in.p) + 4, vl;
                                size_t total;
                                const char *te = header_value(c->in.p, h, "Transfer-Encoding", &vl);
                                if (te) {
                                        /* find the end of a chunked body: 0\r\n\r\n */
                                        char *z = memmem(c->in.p + h, c->in.len - h, "0\r\n\r\n", 5);
                                        if (!z)
                                                break;
                                        total = (size_t)(z - c->in.p) + 5;
                                } else {
                                        const char *v = header_value(c->in.p, h, "Content-Length", &vl);
                                        total = h + (v ? strtoul(v, NULL, 10) : 0);
                                        if (c->in.len < total)
                                                break;
                                }
                                int status = c->in.len >= 12 ? atoi(c->in.p + 9) : 0;
                                if (status >= 200 && status < 300)
                                        ok++;
                                else {
                                        if (non2xx < 3)
                                                fprintf(stderr, "events_tool load: answer %d: %.*s\n", status,
                                                        (int)(total < 400 ? total : 400), c->in.p);
                                        non2xx++;
                                }
                                lastdone = mono_ns();
                                sample_add(&lat, (lastdone - c->sent_at) / 1000);
                                inflight--;
                                buf_consume(&c->in, total);
                                c->state = 1;
                        }
                }
        }
        double secs = (double)(lastdone - start) / 1e9;
        printf("sent=%ld\nok=%ld\nnon2xx=%ld\nerrors=%ld\nlate=%ld\nstart_ns=%lld\nend_ns=%lld\nseconds=%.3f\n", sent,
               ok, non2xx, errors, late, (long long)wall0, (long long)(wall0 + (lastdone - start)), secs);
        printf("rate=%.1f\n", secs > 0 ? ok / secs : 0);
        print_samples("lat", &lat);
        return 0;
}

int main(int argc, char **argv)
{
        if (argc < 2)
                die("usage: events_tool sub|recv|load OPTIONS (see the source's header)");
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (strcmp(argv[1], "sub") == 0)
                return cmd_sub(argc - 1, argv + 1);
        if (strcmp(argv[1], "recv") == 0)
                return cmd_recv(argc - 1, argv + 1);
        if (strcmp(argv[1], "load") == 0)
                return cmd_load(argc - 1, argv + 1);
        die("unknown mode %s", argv[1]);
        return 2;
}
