# tests/fuzz: libFuzzer targets, built by ./configure --enable-fuzzing (with
# CC=clang); docs/fuzzing.md says how to run them, longer runs, reproducing
# a crash and adding a target.  Without --enable-fuzzing nothing here is
# built, and `make fuzz-run` says how to configure.

FUZZ_TARGETS = tests/fuzz/fuzz_http tests/fuzz/fuzz_json_routes tests/fuzz/fuzz_config tests/fuzz/fuzz_policy_expr
# Seeds: tests/fuzz/corpus/<target>/; `make fuzz-run` and CI run every target
# in FUZZ_TARGETS.

# The HTTP targets load these besides the product plugins (BUILT_PLUGINS).
FUZZ_TEST_PLUGINS = echo consumer styles storetest

EXTRA_DIST += tests/fuzz/run tests/fuzz/http.dict tests/fuzz/json.dict tests/fuzz/config.dict tests/fuzz/corpus \
	tests/fuzz/fuzz_policy_expr.c tests/fuzz/policy_expr.dict

if FUZZING
noinst_PROGRAMS += $(FUZZ_TARGETS)

FUZZ_CF = $(AM_CFLAGS) $(LIBUV_CFLAGS) $(JANSSON_CFLAGS) $(LLHTTP_CFLAGS) $(LTDLINCL) \
	-DFUZZ_BUILDDIR='"$(abs_top_builddir)"' -DFUZZ_PLUGINS='"$(BUILT_PLUGINS) $(FUZZ_TEST_PLUGINS)"'
# libFuzzer's main; -no-install: a real binary (no libtool wrapper) that
# finds the build tree's librelay.so through its RUNPATH.
FUZZ_LINK = $(FUZZ_LDFLAGS) -no-install
FUZZ_LIBS = core/librelay.la $(LIBUV_LIBS) $(JANSSON_LIBS)
# What the HTTP targets dlopen at start: build it with them.
FUZZ_MODULES = $(relayplugins_LTLIBRARIES) $(relaystorage_LTLIBRARIES) \
	$(FUZZ_TEST_PLUGINS:%=tests/plugins/%.la)

tests_fuzz_fuzz_http_SOURCES = tests/fuzz/fuzz_http.c tests/fuzz/harness.c tests/fuzz/harness.h
tests_fuzz_fuzz_http_CFLAGS = $(FUZZ_CF)
tests_fuzz_fuzz_http_LDFLAGS = $(FUZZ_LINK)
tests_fuzz_fuzz_http_LDADD = $(FUZZ_LIBS)
EXTRA_tests_fuzz_fuzz_http_DEPENDENCIES = $(FUZZ_MODULES)

tests_fuzz_fuzz_json_routes_SOURCES = tests/fuzz/fuzz_json_routes.c tests/fuzz/harness.c tests/fuzz/harness.h
tests_fuzz_fuzz_json_routes_CFLAGS = $(FUZZ_CF)
tests_fuzz_fuzz_json_routes_LDFLAGS = $(FUZZ_LINK)
tests_fuzz_fuzz_json_routes_LDADD = $(FUZZ_LIBS)
EXTRA_tests_fuzz_fuzz_json_routes_DEPENDENCIES = $(FUZZ_MODULES)

tests_fuzz_fuzz_config_SOURCES = tests/fuzz/fuzz_config.c
tests_fuzz_fuzz_config_CFLAGS = $(FUZZ_CF)
tests_fuzz_fuzz_config_LDFLAGS = $(FUZZ_LINK)
tests_fuzz_fuzz_config_LDADD = $(FUZZ_LIBS)

# the policies plugin's when/then parser, on its own (no daemon)
tests_fuzz_fuzz_policy_expr_SOURCES = tests/fuzz/fuzz_policy_expr.c plugins/policies/expr.c
tests_fuzz_fuzz_policy_expr_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/plugins
tests_fuzz_fuzz_policy_expr_CFLAGS = $(FUZZ_CF)
tests_fuzz_fuzz_policy_expr_LDFLAGS = $(FUZZ_LINK)
tests_fuzz_fuzz_policy_expr_LDADD = $(FUZZ_LIBS)

# make fuzz-run [FUZZ_SECONDS=60]: each target for that long on its seeds;
# fails on any crash, leak, timeout or sanitizer report.  Results (TAP) in
# tests/fuzz/fuzz-run.log; crashing inputs in tests/fuzz/crashes/TARGET/.
FUZZ_SECONDS = 60
fuzz-run: $(FUZZ_TARGETS)
	FUZZ_SECONDS='$(FUZZ_SECONDS)' $(SHELL) $(top_srcdir)/tests/fuzz/run \
		--srcdir '$(top_srcdir)/tests/fuzz' --builddir '$(abs_top_builddir)/tests/fuzz' \
		$(FUZZ_TARGETS:tests/fuzz/%=%)
else
fuzz-run:
	@echo "make fuzz-run: configure with CC=clang ./configure --enable-fuzzing (docs/fuzzing.md)" >&2; exit 1
endif
.PHONY: fuzz-run
CLEANFILES += tests/fuzz/fuzz-run.log

clean-local: clean-fuzz
clean-fuzz:
	-rm -rf tests/fuzz/crashes tests/fuzz/work $(FUZZ_TARGETS:=.log)
.PHONY: clean-fuzz
