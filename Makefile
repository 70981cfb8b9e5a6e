# inferq build. `make` builds build/inferq; `make test` runs every test;
# `make SANITIZE=address,undefined test` builds with sanitizers.

CC ?= cc
PREFIX ?= /usr/local
BUILD ?= build
SANITIZE ?=

PKGS := libuv jansson sqlite3 libcrypto libssl libpq
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

WARN := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wno-unused-parameter
OPT ?= -O2 -g
VERSION := 0.1.0
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -DINFERQ_VERSION=\"$(VERSION)\" $(OPT) -fno-omit-frame-pointer -pthread
INCLUDES := -Iinclude -Isrc/common -Isrc/queue -Isrc/store -Isrc/server -I$(LLHTTP_INC)

ifneq ($(SANITIZE),)
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
BUILD := build-san
endif

ALL_CFLAGS = $(CFLAGS_BASE) $(WARN) $(INCLUDES) $(PKG_CFLAGS) $(SAN_FLAGS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lm -pthread $(SAN_FLAGS) $(LDFLAGS)

CORE_SRC := $(wildcard src/common/*.c src/queue/*.c src/store/*.c src/server/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
LLHTTP_OBJ := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
MAIN_OBJ := $(BUILD)/src/main.o
# The dashboard's files (web/) compiled into a C table by scripts/embed_web.py.
# The folder is a prerequisite too, so adding or removing a file regenerates it.
WEB_FILES := $(sort $(wildcard web/*))
WEB_C := $(BUILD)/gen/web_assets.c
WEB_OBJ := $(BUILD)/gen/web_assets.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# Build fragments of the client library and the CLI; they define LIB_OBJ,
# LIB_LIBS and CLI_OBJ, which the inferq binary links.
-include src/lib/build.mk src/cli/build.mk tests/fault/build.mk

.DEFAULT_GOAL := all

.PHONY: all run test unit integration deps check-deps check-test-deps clean install format lint
.PHONY: fuzz fuzz-ci fuzz-long stress valgrind bench

all: check-deps $(BUILD)/inferq

$(BUILD)/inferq: $(MAIN_OBJ) $(CLI_OBJ) $(LIB_OBJ) $(BUILD)/libinferq-core.a
	$(CC) -o $@ $^ $(LIB_LIBS) $(LDLIBS_ALL)

$(BUILD)/libinferq-core.a: $(CORE_OBJ) $(LLHTTP_OBJ) $(WEB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(WEB_C): scripts/embed_web.py web $(WEB_FILES)
	@mkdir -p $(dir $@)
	python3 scripts/embed_web.py $@ $(WEB_FILES)

$(WEB_OBJ): $(WEB_C) src/server/dashboard.h
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# llhttp ships as C sources in Debian's node-llhttp; they do not build under
# our warning flags, so they get their own.
$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -fno-omit-frame-pointer $(SAN_FLAGS) -I$(LLHTTP_INC) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libinferq-core.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libinferq-core.a $(LDLIBS_ALL) -lcmocka

# The store's writer alone, without HTTP (bench/README.md).
$(BUILD)/bench/store_writer: bench/store_writer.c $(BUILD)/libinferq-core.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libinferq-core.a $(LDLIBS_ALL)

run: all
	$(BUILD)/inferq serve $(ARGS)

unit: all $(UNIT_BIN)
integration: all

test: check-test-deps all $(UNIT_BIN)
	BUILD=$(BUILD) tests/run.sh

# libFuzzer targets (fuzz/README.md): build, a short run for CI, a long run.
fuzz:
	$(MAKE) -C fuzz
fuzz-ci:
	$(MAKE) -C fuzz ci
fuzz-long:
	$(MAKE) -C fuzz long

# Long reliability runs, too slow for CI (docs/reliability.md): kill -9
# under load, 10,000 idle connections, the integration tests under valgrind.
stress: all
	/usr/bin/python3 tests/stress/crash_loop.py --kills 20 --seconds 120 --binary $(BUILD)/inferq
	INFERQ_BIN=$(CURDIR)/$(BUILD)/inferq INFERQ_TEST_CONNECTIONS=10000 /usr/bin/python3 -m pytest \
		-q -p no:cacheprovider tests/integration/test_hostile.py -k many_idle
valgrind: all
	BUILD=$(BUILD) tests/valgrind.sh

# inferq against nginx and the peer queues (bench/README.md); ARGS=--quick for a smoke run.
bench:
	bench/run.sh $(ARGS)

deps:
	scripts/deps.sh install

check-deps:
	@scripts/deps.sh check build || scripts/deps.sh install build

check-test-deps:
	@scripts/deps.sh check all || scripts/deps.sh install all

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/inferq $(DESTDIR)$(PREFIX)/bin/inferq

format:
	clang-format -i $(CORE_SRC) src/main.c $(UNIT_SRC)

clean:
	rm -rf build build-san

-include $(CORE_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
