/* relay/log.h - logging.  Lines go to the daemon's log (text or JSON lines,
 * per configuration) with the plugin's name, and the request id when logged
 * for a request.  Never log a secret: keys, tokens and passwords stay out. */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

#include <relay/common.h>

RELAY_BEGIN_DECLS

typedef enum { RELAY_LOG_ERROR = 0, RELAY_LOG_WARN = 1, RELAY_LOG_INFO = 2, RELAY_LOG_DEBUG = 3 } relay_log_level;

RELAY_API void relay_log(relay_plugin *p, relay_log_level level, const char *fmt, ...) RELAY_PRINTF(3, 4);
RELAY_API void relay_req_log(relay_req *req, relay_log_level level, const char *fmt, ...) RELAY_PRINTF(3, 4);

RELAY_END_DECLS
#endif
