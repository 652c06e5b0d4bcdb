/* abi_newer_minor.c - built for a newer minor of this ABI: it may call
 * functions this daemon lacks, so it is refused too. */
#include <relay/plugin.h>

RELAY_API const relay_plugin_desc abi_newer_minor_LTX_relay_plugin_descriptor = {
        .magic = RELAY_PLUGIN_MAGIC,
        .abi_major = RELAY_SDK_ABI_MAJOR,
        .abi_minor = RELAY_SDK_ABI_MINOR + 1,
        .size = sizeof(relay_plugin_desc),
        .name = "abi_newer_minor",
        .version = "1.0.0",
};
