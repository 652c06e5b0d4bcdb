/* http_client.h - the daemon's side of relay/http_client.h. */
#ifndef RELAY_CORE_HTTP_CLIENT_H
#define RELAY_CORE_HTTP_CLIENT_H

#include "relay/http_client.h"

/* At shutdown, before plugins stop: every fetch in flight ends with
 * RELAY_HTTP_CANCELLED. */
void http_client_stop(void);
/* After the loop has closed. */
void http_client_free(void);

#endif
