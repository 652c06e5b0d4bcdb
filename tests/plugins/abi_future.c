/* abi_future.c - claims to be built for the next ABI major, as a plugin
 * from a newer SDK would.  Written out by hand: RELAY_PLUGIN() would stamp
 * the real ABI. */
#include <relay/plugin.h>

RELAY_API const relay_plugin_desc abi_future_LTX_relay_plugin_descriptor = {
        .magic = RELAY_PLUGIN_MAGIC,
        .abi_major = RELAY_SDK_ABI_MAJOR + 1,
        .abi_minor = 0,
        .size = sizeof(relay_plugin_desc),
        .name = "abi_future",
        .version = "9.0.0",
};
