# libinferq, the C client library: build/libinferq.a, build/libinferq.so
# (soname libinferq.so.$(LIB_SOVERSION)) and build/inferq.pc. Included by
# the top Makefile. LIB_OBJ and LIB_LIBS also go into the inferq binary,
# whose CLI uses the library; the shared library gets its own -fPIC objects.

comma := ,
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include

LIB_SOVERSION := 0
LIB_SONAME := libinferq.so.$(LIB_SOVERSION)
LIB_REALNAME := libinferq.so.$(VERSION)

LIB_SRC := $(wildcard src/lib/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
# inferq_strerror() comes from src/common/error.c, which the core library
# also holds, so the binary takes it from there and LIB_OBJ leaves it out.
LIB_EXTRA_OBJ := $(BUILD)/src/common/error.o
LIB_PIC_OBJ := $(LIB_SRC:%.c=$(BUILD)/pic/%.o) $(BUILD)/pic/src/common/error.o
LIB_CFLAGS := $(shell pkg-config --cflags libcurl jansson 2>/dev/null)
LIB_LIBS := $(shell pkg-config --libs libcurl jansson 2>/dev/null)

$(LIB_OBJ): ALL_CFLAGS += $(LIB_CFLAGS)

.PHONY: lib install-lib

all: lib
install: install-lib

lib: $(BUILD)/libinferq.a $(BUILD)/libinferq.so $(BUILD)/inferq.pc

$(BUILD)/libinferq.a: $(LIB_OBJ) $(LIB_EXTRA_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -fPIC -MMD -MP -c -o $@ $<

# --no-undefined proves the library names every library it needs; the
# sanitizer runtimes are resolved by the program instead, so sanitized
# builds skip the check.
$(BUILD)/$(LIB_REALNAME): $(LIB_PIC_OBJ)
	$(CC) -shared -Wl,-soname,$(LIB_SONAME) $(if $(SANITIZE),,-Wl$(comma)--no-undefined) \
		-o $@ $^ $(LIB_LIBS) -pthread $(SAN_FLAGS)

$(BUILD)/libinferq.so: $(BUILD)/$(LIB_REALNAME)
	ln -sf $(LIB_REALNAME) $(BUILD)/$(LIB_SONAME)
	ln -sf $(LIB_SONAME) $@

# $(1): prefix, $(2): libdir, $(3): includedir
lib_pc = sed -e 's|@PREFIX@|$(1)|' -e 's|@LIBDIR@|$(2)|' -e 's|@INCLUDEDIR@|$(3)|' \
	-e 's|@VERSION@|$(VERSION)|' src/lib/inferq.pc.in

$(BUILD)/inferq.pc: src/lib/inferq.pc.in
	@mkdir -p $(dir $@)
	$(call lib_pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR)) > $@

install-lib: lib
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 0644 include/inferq.h include/inferq_error.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 0644 $(BUILD)/libinferq.a $(DESTDIR)$(LIBDIR)/libinferq.a
	install -m 0755 $(BUILD)/$(LIB_REALNAME) $(DESTDIR)$(LIBDIR)/$(LIB_REALNAME)
	ln -sf $(LIB_REALNAME) $(DESTDIR)$(LIBDIR)/$(LIB_SONAME)
	ln -sf $(LIB_SONAME) $(DESTDIR)$(LIBDIR)/libinferq.so
	$(call lib_pc,$(PREFIX),$(LIBDIR),$(INCLUDEDIR)) > $(DESTDIR)$(LIBDIR)/pkgconfig/inferq.pc

# The library test talks to a real server, so it links libcurl and the
# library besides cmocka; this rule replaces the generic unit-test rule.
$(BUILD)/tests/test_lib: tests/unit/test_lib.c $(BUILD)/libinferq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -o $@ $< $(BUILD)/libinferq.a $(LIB_LIBS) \
		$(LDLIBS_ALL) -lcmocka

# The admin views test talks to a real server too.
$(BUILD)/tests/test_lib_admin: tests/unit/test_lib_admin.c $(BUILD)/libinferq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -o $@ $< $(BUILD)/libinferq.a $(LIB_LIBS) \
		$(LDLIBS_ALL) -lcmocka

# The allocation-failure test also arms the allocator seam of src/lib/alloc.c,
# declared in src/lib/internal.h; like test_lib it replaces the generic rule.
$(BUILD)/tests/test_lib_oom: tests/unit/test_lib_oom.c $(BUILD)/libinferq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIB_CFLAGS) -Isrc/lib -o $@ $< $(BUILD)/libinferq.a $(LIB_LIBS) \
		$(LDLIBS_ALL) -lcmocka

-include $(LIB_OBJ:.o=.d) $(LIB_PIC_OBJ:.o=.d)
