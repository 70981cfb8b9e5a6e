# The client subcommands of the inferq binary (submit, status, wait,
# cancel, clear, metrics). Included by the top Makefile, which links
# CLI_OBJ, LIB_OBJ and LIB_LIBS (from src/lib/build.mk) into build/inferq.

CLI_SRC := $(wildcard src/cli/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)

$(CLI_OBJ): ALL_CFLAGS += $(LIB_CFLAGS)

-include $(CLI_OBJ:.o=.d)
