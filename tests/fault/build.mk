# libfault.so, the LD_PRELOAD shim of the fault-injection tests
# (tests/fault/README.md). Included by the top Makefile. It is built without
# SAN_FLAGS even in sanitizer builds: the harness loads it into an ASan
# server with ASAN_OPTIONS=verify_asan_link_order=0 instead.

$(BUILD)/libfault.so: tests/fault/libfault.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(WARN) -shared -fPIC -o $@ $< -ldl

test: $(BUILD)/libfault.so
