# plugins/records: RelaySync's field records and the "records" service.
relayplugins_LTLIBRARIES += plugins/records.la
plugins_records_la_SOURCES = plugins/records/records.c plugins/records/records.h plugins/records/records_api.h \
	plugins/records/migrations.c plugins/records/model.c plugins/records/apply.c plugins/records/read.c \
	plugins/records/write.c
plugins_records_la_CFLAGS = $(PLUGIN_CF)
plugins_records_la_LDFLAGS = $(PLUGIN_LINK)
plugins_records_la_LIBADD = $(PLUGIN_LIBS)
BUILT_PLUGINS += records
