/* fail_init.c - its init() fails. */
#include <relay/plugin.h>

static int init(relay_plugin *p)
{
        relay_log(p, RELAY_LOG_ERROR, "refusing to start, as a test");
        return RELAY_ERR;
}

RELAY_PLUGIN(fail_init, .version = "0.1.0", .init = init);
