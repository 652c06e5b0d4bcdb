# plugins/sync: the change feed, batch push and outbound queue.
relayplugins_LTLIBRARIES += plugins/sync.la
plugins_sync_la_SOURCES = plugins/sync/sync.c plugins/sync/sync.h plugins/sync/feed.c plugins/sync/push.c \
	plugins/sync/queue.c plugins/sync/outbound.c
plugins_sync_la_CFLAGS = $(PLUGIN_CF)
plugins_sync_la_LDFLAGS = $(PLUGIN_LINK)
plugins_sync_la_LIBADD = $(PLUGIN_LIBS)
BUILT_PLUGINS += sync
