/* net_addr.h - "HOST:PORT", "[V6]:PORT", ":PORT" to a socket address. */
#ifndef RELAY_NET_ADDR_H
#define RELAY_NET_ADDR_H

#include <sys/socket.h>
#include <stddef.h>

int net_addr_parse(const char *s, struct sockaddr_storage *out);
/* "127.0.0.1:8080" / "[::1]:8080" */
void net_addr_format(const struct sockaddr *sa, char *out, size_t len);
/* The address alone, no port. */
void net_addr_ip(const struct sockaddr *sa, char *out, size_t len);
/* A listening socket (SO_REUSEADDR; SO_REUSEPORT when REUSEPORT) bound to ADDR, not yet listening. */
int net_bind_socket(const struct sockaddr_storage *addr, int reuseport, char *err, size_t err_len);

#endif
