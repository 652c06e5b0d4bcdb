/* relay/version.h - the SDK's ABI version.
 *
 * A plugin records the ABI it was compiled against in its descriptor; the
 * daemon refuses a plugin whose major differs from its own, or whose minor is
 * newer (it may call functions this daemon lacks).  librelay's SONAME major
 * is the ABI major (librelay.so.1).  History: CHANGELOG.md. */
#ifndef RELAY_VERSION_H
#define RELAY_VERSION_H

#define RELAY_SDK_ABI_MAJOR 1
#define RELAY_SDK_ABI_MINOR 4

#endif
