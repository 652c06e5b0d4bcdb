/* net_addr.c - socket addresses and listening sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "net_addr.h"

int net_addr_parse(const char *s, struct sockaddr_storage *out)
{
        char host[128];
        const char *port;
        memset(out, 0, sizeof(*out));
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
                        return -1;
                snprintf(host, sizeof(host), "%.*s", (int)(end - s - 1), s + 1);
                port = end + 2;
        } else {
                const char *colon = strrchr(s, ':');
                if (!colon || (size_t)(colon - s) >= sizeof(host) || strchr(s, ':') != colon)
                        return -1;
                snprintf(host, sizeof(host), "%.*s", (int)(colon - s), s);
                port = colon + 1;
        }
        char *end;
        long p = strtol(port, &end, 10);
        if (!*port || *end || p < 0 || p > 65535)
                return -1;
        struct sockaddr_in *in4 = (struct sockaddr_in *)out;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
        if (!*host || strcmp(host, "*") == 0) {
                in4->sin_family = AF_INET;
                in4->sin_addr.s_addr = htonl(INADDR_ANY);
                in4->sin_port = htons((uint16_t)p);
        } else if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons((uint16_t)p);
        } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)p);
        } else {
                return -1;
        }
        return 0;
}

void net_addr_ip(const struct sockaddr *sa, char *out, size_t len)
{
        if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
                if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
                        inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], out, (socklen_t)len);
                else
                        inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)len);
        } else if (sa->sa_family == AF_INET) {
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
        } else {
                snprintf(out, len, "unknown");
        }
}

void net_addr_format(const struct sockaddr *sa, char *out, size_t len)
{
        char ip[INET6_ADDRSTRLEN];
        net_addr_ip(sa, ip, sizeof(ip));
        unsigned port = sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
                                                  : ntohs(((const struct sockaddr_in *)sa)->sin_port);
        if (sa->sa_family == AF_INET6)
                snprintf(out, len, "[%s]:%u", ip, port);
        else
                snprintf(out, len, "%s:%u", ip, port);
}

int net_bind_socket(const struct sockaddr_storage *addr, int reuseport, char *err, size_t err_len)
{
        int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                snprintf(err, err_len, "socket: %s", strerror(errno));
                return -1;
        }
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (reuseport)
                setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
        if (addr->ss_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        socklen_t len = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        if (bind(fd, (const struct sockaddr *)addr, len) != 0) {
                char a[80];
                net_addr_format((const struct sockaddr *)addr, a, sizeof(a));
                snprintf(err, err_len, "cannot listen on %s: %s", a, strerror(errno));
                close(fd);
                return -1;
        }
        return fd;
}
