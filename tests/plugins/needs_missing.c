/* needs_missing.c - requires a plugin that is never there. */
#include <relay/plugin.h>

RELAY_PLUGIN(needs_missing, .version = "0.1.0", .requires = RELAY_REQUIRES("not_there"));
