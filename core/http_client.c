/* http_client.c - relay_http_fetch(): libcurl's multi interface on the
 * control thread's libuv loop.
 *
 * curl tells us which sockets to watch (socket callback) and when to wake
 * (timer callback); uv_poll and one uv_timer do the watching, and
 * curl_multi_socket_action() does the work.  Nothing blocks: name
 * resolution runs in curl's resolver thread.  The SSRF guard sits in the
 * open-socket callback, so it sees the address curl actually connects to,
 * for the first hop and for every redirect. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <config.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <curl/curl.h>
#include <uv.h>
#include "buf.h"
#include "daemon.h"
#include "http_client.h"
#include "log.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_MAX_RESPONSE (64 * 1024)
#define MAX_HEADER_BYTES (32 * 1024)
#define MAX_KEPT_CONNECTIONS 512

/* A multi handle and its timer.  Two: connections opened under the SSRF
 * guard and connections opened without it (allow_private) live in
 * separate pools, so each can be kept alive and reused, and a guarded
 * fetch never rides a connection the guard did not vet. */
typedef struct pool {
        CURLM *multi;
        uv_timer_t timer;
} pool;

enum { POOL_GUARDED = 0, POOL_UNGUARDED = 1 };

typedef struct fetch {
        struct fetch *next, *prev;
        CURL *easy;
        relay_plugin *plugin;
        relay_http_done_fn done;
        void *data;
        struct curl_slist *headers;
        buf body; /* response body, up to max */
        buf head; /* response header lines of the last hop */
        size_t max;
        bool truncated;
        bool allow_private;
        pool *pool;
        bool blocked; /* the guard refused an address */
        char blocked_ip[INET6_ADDRSTRLEN];
        uint64_t start_ns;
} fetch;

typedef struct watch { /* one socket curl asked us to watch */
        uv_poll_t poll;
        curl_socket_t fd;
        pool *pool;
        struct watch *next, *prev; /* all of them, to close at shutdown */
} watch;

static watch *watches;

static pool pools[2];
static bool curl_ready;
static fetch *inflight;
static bool stopping;

/* ------------------------------------------------------------ SSRF guard */

static bool v4_public(const uint8_t *a)
{
        if (a[0] == 0 || a[0] == 10 || a[0] == 127 || a[0] >= 224) /* this net, private, loopback, multicast+ */
                return false;
        if (a[0] == 169 && a[1] == 254) /* link-local (cloud metadata) */
                return false;
        if (a[0] == 172 && (a[1] & 0xf0) == 16)
                return false;
        if (a[0] == 192 && a[1] == 168)
                return false;
        if (a[0] == 100 && (a[1] & 0xc0) == 64) /* shared address space (CGNAT) */
                return false;
        if (a[0] == 192 && a[1] == 0 && a[2] == 0) /* IETF protocol assignments */
                return false;
        if (a[0] == 198 && (a[1] & 0xfe) == 18) /* benchmarking */
                return false;
        return true;
}

static bool v6_public(const uint8_t *a)
{
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t zero[15] = {0};
        if (memcmp(a, mapped, 12) == 0) /* ::ffff:a.b.c.d is that IPv4 address */
                return v4_public(a + 12);
        if (memcmp(a, zero, 15) == 0) /* :: and ::1 */
                return false;
        if ((a[0] & 0xfe) == 0xfc) /* unique local fc00::/7 */
                return false;
        if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) /* link-local fe80::/10 */
                return false;
        if (a[0] == 0xff) /* multicast */
                return false;
        if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b) /* NAT64 64:ff9b::/96 */
                return v4_public(a + 12);
        return true;
}

static bool sockaddr_public(const struct sockaddr *sa)
{
        if (sa->sa_family == AF_INET)
                return v4_public((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr);
        if (sa->sa_family == AF_INET6)
                return v6_public(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
        return false; /* unix sockets and the rest: never */
}

RELAY_API bool relay_ip_is_public(const char *ip)
{
        uint8_t a[16];
        if (!ip)
                return false;
        if (inet_pton(AF_INET, ip, a) == 1)
                return v4_public(a);
        if (inet_pton(AF_INET6, ip, a) == 1)
                return v6_public(a);
        return false;
}

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
        fetch *f = clientp;
        if (purpose != CURLSOCKTYPE_IPCXN)
                return CURL_SOCKET_BAD;
        if (!f->allow_private && !sockaddr_public(&addr->addr)) {
                f->blocked = true;
                const void *where = addr->family == AF_INET6
                                            ? (const void *)&((struct sockaddr_in6 *)&addr->addr)->sin6_addr
                                            : (const void *)&((struct sockaddr_in *)&addr->addr)->sin_addr;
                inet_ntop(addr->family, where, f->blocked_ip, sizeof(f->blocked_ip));
                return CURL_SOCKET_BAD;
        }
        return socket(addr->family, addr->socktype, addr->protocol);
}

/* ------------------------------------------------------------ curl <-> uv */

static void check_done(pool *pl);

static void on_poll(uv_poll_t *h, int status, int events)
{
        watch *w = h->data;
        int flags = status < 0 ? CURL_CSELECT_ERR
                               : ((events & UV_READABLE) ? CURL_CSELECT_IN : 0) |
                                         ((events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0);
        int running;
        pool *pl = w->pool;
        curl_multi_socket_action(pl->multi, w->fd, flags, &running);
        check_done(pl);
}

static void on_watch_closed(uv_handle_t *h) { free(h->data); }

static void watch_close(watch *w)
{
        if (w->prev)
                w->prev->next = w->next;
        else
                watches = w->next;
        if (w->next)
                w->next->prev = w->prev;
        uv_poll_stop(&w->poll);
        uv_close((uv_handle_t *)&w->poll, on_watch_closed);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
        watch *w = socketp;
        pool *pl = userp;
        if (what == CURL_POLL_REMOVE) {
                if (w) {
                        watch_close(w);
                        curl_multi_assign(pl->multi, s, NULL);
                }
                return 0;
        }
        if (!w) {
                w = calloc(1, sizeof(*w));
                if (!w || uv_poll_init_socket(relay_daemon.loop, &w->poll, s) != 0) {
                        free(w);
                        return -1;
                }
                w->fd = s;
                w->pool = pl;
                w->poll.data = w;
                w->next = watches;
                if (watches)
                        watches->prev = w;
                watches = w;
                curl_multi_assign(pl->multi, s, w);
        }
        int events = (what == CURL_POLL_IN ? UV_READABLE : 0) | (what == CURL_POLL_OUT ? UV_WRITABLE : 0) |
                     (what == CURL_POLL_INOUT ? UV_READABLE | UV_WRITABLE : 0);
        uv_poll_start(&w->poll, events, on_poll);
        return 0;
}

static void on_timeout(uv_timer_t *t)
{
        int running;
        pool *pl = t->data;
        curl_multi_socket_action(pl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(pl);
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
        pool *pl = userp;
        if (timeout_ms < 0)
                uv_timer_stop(&pl->timer);
        else /* 0 means "now": from the next loop turn, never from inside curl */
                uv_timer_start(&pl->timer, on_timeout, (uint64_t)timeout_ms, 0);
        return 0;
}

static bool client_init(void)
{
        if (curl_ready)
                return true;
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return false;
        for (int i = 0; i < 2; i++) {
                pool *pl = &pools[i];
                if (!(pl->multi = curl_multi_init())) {
                        if (i == 1) {
                                curl_multi_cleanup(pools[0].multi);
                                uv_close((uv_handle_t *)&pools[0].timer, NULL);
                                pools[0].multi = NULL;
                        }
                        return false;
                }
                uv_timer_init(relay_daemon.loop, &pl->timer);
                pl->timer.data = pl;
                curl_multi_setopt(pl->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
                curl_multi_setopt(pl->multi, CURLMOPT_SOCKETDATA, pl);
                curl_multi_setopt(pl->multi, CURLMOPT_TIMERFUNCTION, on_timer);
                curl_multi_setopt(pl->multi, CURLMOPT_TIMERDATA, pl);
                /* keep a connection per receiver and per fetch in flight:
                 * curl's default cache (4 per handle added) churned
                 * connections when 64 deliveries ran at once */
                curl_multi_setopt(pl->multi, CURLMOPT_MAXCONNECTS, (long)MAX_KEPT_CONNECTIONS);
        }
        curl_ready = true;
        return true;
}

/* ------------------------------------------------------------ one exchange */

static size_t on_body(char *ptr, size_t size, size_t n, void *userp)
{
        fetch *f = userp;
        size_t len = size * n, room = f->max > f->body.len ? f->max - f->body.len : 0;
        if (len > room)
                f->truncated = true;
        buf_append(&f->body, ptr, len < room ? len : room);
        return len; /* the rest is read and dropped, so the connection ends cleanly */
}

static size_t on_header(char *ptr, size_t size, size_t n, void *userp)
{
        fetch *f = userp;
        size_t len = size * n;
        if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) { /* a new hop (redirect, 100-continue): start over */
                f->head.len = 0;
                f->body.len = 0;
                f->truncated = false;
        }
        if (f->head.len + len <= MAX_HEADER_BYTES)
                buf_append(&f->head, ptr, len);
        return len;
}

typedef struct fetch_result {
        relay_http_response res;
        char *head; /* header lines, NUL-separated "Name: value" */
        size_t head_len;
} fetch_result;

/* A response header of the last hop.  RES is the first member of a
 * fetch_result, which also holds the header lines. */
RELAY_API const char *relay_http_header(const relay_http_response *res, const char *name)
{
        if (!res || !name)
                return NULL;
        const fetch_result *r = (const fetch_result *)res;
        size_t nlen = strlen(name);
        for (const char *p = r->head; p && p < r->head + r->head_len; p += strlen(p) + 1)
                if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
                        const char *v = p + nlen + 1;
                        while (*v == ' ' || *v == '\t')
                                v++;
                        return v;
                }
        return NULL;
}

/* Turns the raw header block into NUL-separated lines without CR/LF. */
static void split_headers(buf *head, fetch_result *r)
{
        buf_append(head, "", 1);
        char *s = head->data, *out = head->data;
        r->head = head->data;
        while (s && *s) {
                /* measure the line break before the terminator overwrites
                 * its first byte (OUT == S on the first line) */
                size_t n = strcspn(s, "\r\n"), brk = strspn(s + n, "\r\n");
                memmove(out, s, n);
                out[n] = '\0';
                out += n + 1;
                s += n + brk;
        }
        r->head_len = s ? (size_t)(out - head->data) : 0;
}

static int64_t retry_after_ms(const relay_http_response *res)
{
        const char *v = relay_http_header(res, "Retry-After");
        if (!v || !*v)
                return -1;
        char *end;
        long long secs = strtoll(v, &end, 10);
        if (end != v && (*end == '\0' || *end == ' ') && secs >= 0)
                return secs > INT64_MAX / 1000 ? INT64_MAX : secs * 1000;
        time_t when = curl_getdate(v, NULL); /* an HTTP date */
        if (when < 0)
                return -1;
        int64_t delta = (int64_t)when * 1000 - relay_now_ms();
        return delta > 0 ? delta : 0;
}

static int classify(CURLcode rc, const fetch *f)
{
        /* a refused address counts only if no other one answered: a name
         * with a private and a public address connects to the public one */
        if (f->blocked && rc != CURLE_OK)
                return RELAY_HTTP_BLOCKED;
        switch (rc) {
        case CURLE_OK: return RELAY_HTTP_OK;
        case CURLE_OPERATION_TIMEDOUT: return RELAY_HTTP_TIMEOUT;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE: return RELAY_HTTP_CONNECT;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE: return RELAY_HTTP_TLS;
        case CURLE_TOO_MANY_REDIRECTS: return RELAY_HTTP_REDIRECTS;
        default: return RELAY_HTTP_FAILED;
        }
}

static void fetch_free(fetch *f)
{
        if (f->prev)
                f->prev->next = f->next;
        else
                inflight = f->next;
        if (f->next)
                f->next->prev = f->prev;
        curl_multi_remove_handle(f->pool->multi, f->easy);
        curl_easy_cleanup(f->easy);
        curl_slist_free_all(f->headers);
        buf_free(&f->body);
        buf_free(&f->head);
        free(f);
}

static void finish(fetch *f, CURLcode rc, int error)
{
        fetch_result r = {0};
        relay_http_response *res = &r.res;
        res->size = sizeof(*res);
        res->error = error;
        long status = 0;
        char *ip = NULL;
        curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(f->easy, CURLINFO_PRIMARY_IP, &ip);
        res->status = error == RELAY_HTTP_OK ? (int)status : 0;
        res->primary_ip = ip ? ip : "";
        char why[160];
        if (error == RELAY_HTTP_BLOCKED)
                snprintf(why, sizeof(why), "destination %s is private or loopback and not allowed", f->blocked_ip);
        else if (error == RELAY_HTTP_CANCELLED)
                snprintf(why, sizeof(why), "cancelled: the daemon is stopping");
        else
                snprintf(why, sizeof(why), "%s", curl_easy_strerror(rc));
        res->error_text = error == RELAY_HTTP_OK ? NULL : why;
        buf_append(&f->body, "", 1); /* NUL-terminate */
        res->body = f->body.data;
        res->body_len = f->body.len - 1;
        res->truncated = f->truncated;
        split_headers(&f->head, &r);
        res->retry_after_ms = error == RELAY_HTTP_OK ? retry_after_ms(res) : -1;
        res->elapsed_ms = (double)(uv_hrtime() - f->start_ns) / 1e6;
        f->done(f->plugin, res, f->data);
        fetch_free(f);
}

static void check_done(pool *pl)
{
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(pl->multi, &left))) {
                if (m->msg != CURLMSG_DONE)
                        continue;
                char *priv = NULL;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
                fetch *f = (fetch *)priv;
                CURLcode rc = m->data.result;
                finish(f, rc, classify(rc, f));
        }
}

static bool set_headers(fetch *f, const char *const *headers)
{
        /* libcurl adds "Expect: 100-continue" to larger POSTs: a round trip
         * receivers do not need. */
        f->headers = curl_slist_append(NULL, "Expect:");
        for (size_t i = 0; headers && headers[i]; i++) {
                if (strpbrk(headers[i], "\r\n"))
                        return false; /* header injection */
                struct curl_slist *l = curl_slist_append(f->headers, headers[i]);
                if (!l)
                        return false;
                f->headers = l;
        }
        return f->headers != NULL;
}

static bool http_url(const char *url)
{
        return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

static void set_protocols(CURL *e)
{
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85: the _STR options replace the bitmasks */
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
        curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

static void set_options(fetch *f, const relay_http_request *req)
{
        CURL *e = f->easy;
        curl_easy_setopt(e, CURLOPT_URL, req->url);
        curl_easy_setopt(e, CURLOPT_PRIVATE, f);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        /* No proxy from the environment (http_proxy...): behind a proxy the
         * SSRF guard would vet the proxy's address, not the destination's. */
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        set_protocols(e);
        curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
        curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, f);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->headers);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "relay/" PACKAGE_VERSION);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS));
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(req->connect_timeout_ms ? req->connect_timeout_ms : DEFAULT_CONNECT_MS));
        if (req->max_redirects > 0) {
                curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
                curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)req->max_redirects);
        }
        const char *method = req->method ? req->method : req->body ? "POST" : "GET";
        if (req->body) {
                curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
                curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body);
        }
        if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
                curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        else if (strcmp(method, "GET") == 0 && req->body)
                curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
}

RELAY_API int relay_http_fetch(relay_plugin *p, const relay_http_request *req, relay_http_done_fn done, void *data)
{
        if (!req || req->size < offsetof(relay_http_request, max_response) + sizeof(size_t) || !req->url || !done ||
            !http_url(req->url) || stopping || !relay_plugin_db(p) || !client_init())
                return RELAY_ERR; /* relay_plugin_db: NULL off the control thread */
        fetch *f = calloc(1, sizeof(*f));
        if (!f)
                return RELAY_ERR;
        f->plugin = p;
        f->done = done;
        f->data = data;
        f->max = req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE;
        f->allow_private = req->allow_private != 0;
        /* a reused connection never meets the guard again: guarded fetches
         * only reuse connections the guard vetted */
        f->pool = &pools[f->allow_private ? POOL_UNGUARDED : POOL_GUARDED];
        f->start_ns = uv_hrtime();
        if (!(f->easy = curl_easy_init()) || !set_headers(f, req->headers)) {
                if (f->easy)
                        curl_easy_cleanup(f->easy);
                curl_slist_free_all(f->headers);
                free(f);
                return RELAY_ERR;
        }
        set_options(f, req);
        f->next = inflight;
        if (inflight)
                inflight->prev = f;
        inflight = f;
        if (curl_multi_add_handle(f->pool->multi, f->easy) != CURLM_OK) {
                f->done = NULL;
                fetch_free(f);
                return RELAY_ERR;
        }
        return RELAY_OK;
}

/* ------------------------------------------------------------ lifecycle */

void http_client_stop(void)
{
        stopping = true;
        while (inflight)
                finish(inflight, CURLE_ABORTED_BY_CALLBACK, RELAY_HTTP_CANCELLED);
        if (curl_ready) {
                for (int i = 0; i < 2; i++) {
                        curl_multi_cleanup(pools[i].multi);
                        pools[i].multi = NULL;
                        uv_close((uv_handle_t *)&pools[i].timer, NULL);
                }
                while (watches) /* sockets of connections curl kept for reuse */
                        watch_close(watches);
                curl_ready = false;
        }
}

void http_client_free(void)
{
        if (stopping)
                curl_global_cleanup(); /* harmless when it was never initialised */
        stopping = false;
}
