# sdk/: the installed headers, relay-sdk.pc and an example plugin.
relayincludedir = $(includedir)/relay
relayinclude_HEADERS = \
	sdk/include/relay/common.h \
	sdk/include/relay/conf.h \
	sdk/include/relay/db.h \
	sdk/include/relay/driver.h \
	sdk/include/relay/events.h \
	sdk/include/relay/http_client.h \
	sdk/include/relay/idempotency.h \
	sdk/include/relay/jobs.h \
	sdk/include/relay/log.h \
	sdk/include/relay/plugin.h \
	sdk/include/relay/request.h \
	sdk/include/relay/sse.h \
	sdk/include/relay/stream.h \
	sdk/include/relay/util.h \
	sdk/include/relay/version.h

pkgconfig_DATA = sdk/relay-sdk.pc
DISTCLEANFILES += sdk/relay-sdk.pc
EXTRA_DIST += sdk/relay-sdk.pc.in sdk/README.md sdk/examples
