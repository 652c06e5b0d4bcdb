# storage/: storage drivers, libtool modules loaded by name from
# $(relaystoragedir) ([storage] driver = sqlite | pgsql).
relaystoragedir = $(libdir)/relay/storage
relaystorage_LTLIBRARIES = storage/sqlite.la storage/pgsql.la
DRIVER_LINK = -module -avoid-version -shared -no-undefined
DRIVER_CF = $(AM_CFLAGS) -fvisibility=hidden $(JANSSON_CFLAGS)

storage_sqlite_la_SOURCES = storage/sqlite/sqlite.c
storage_sqlite_la_CFLAGS = $(DRIVER_CF) $(SQLITE3_CFLAGS)
storage_sqlite_la_LDFLAGS = $(DRIVER_LINK)
storage_sqlite_la_LIBADD = core/librelay.la $(SQLITE3_LIBS)

storage_pgsql_la_SOURCES = storage/pgsql/pgsql.c
storage_pgsql_la_CFLAGS = $(DRIVER_CF) $(LIBPQ_CFLAGS)
storage_pgsql_la_LDFLAGS = $(DRIVER_LINK)
storage_pgsql_la_LIBADD = core/librelay.la $(LIBPQ_LIBS)
