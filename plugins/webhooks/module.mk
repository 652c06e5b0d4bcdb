# plugins/webhooks: RelaySync's signed webhook deliveries (Standard Webhooks).
relayplugins_LTLIBRARIES += plugins/webhooks.la
plugins_webhooks_la_SOURCES = plugins/webhooks/webhooks.c plugins/webhooks/webhooks.h \
	plugins/webhooks/migrations.c plugins/webhooks/endpoints.c plugins/webhooks/secret.c \
	plugins/webhooks/fanout.c plugins/webhooks/deliver.c plugins/webhooks/log.c
plugins_webhooks_la_CFLAGS = $(PLUGIN_CF) $(SODIUM_CFLAGS) $(LIBCURL_CFLAGS)
plugins_webhooks_la_LDFLAGS = $(PLUGIN_LINK)
plugins_webhooks_la_LIBADD = $(PLUGIN_LIBS) $(SODIUM_LIBS) $(LIBCURL_LIBS)
BUILT_PLUGINS += webhooks
