/*
 * inferq: one binary with subcommands, like git. `inferq serve` runs the
 * queue server; submit, status, wait, cancel, clear and metrics are its
 * HTTP clients (src/cli).
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int serve_main(int argc, char **argv);

static void usage(FILE *out)
{
	fprintf(out, "usage: inferq COMMAND [flags]\n"
		     "\n"
		     "A durable job queue for asynchronous model inference.\n"
		     "\n"
		     "commands:\n"
		     "  serve     run the queue server (inferq serve --help for its flags)\n");
	cli_print_commands(out);
	fprintf(out, "  version   print the version\n"
		     "  help      print this help, or with a command, that command's help\n"
		     "\n"
		     "Run `inferq COMMAND --help` for the flags of a command; client commands\n"
		     "take --server URL (default $INFERQ_URL, then http://127.0.0.1:8080) and an\n"
		     "API key from $INFERQ_API_KEY, then $TOGETHER_API_KEY, then --key-file\n"
		     "(default ./inferq-data/admin.key when readable).\n"
		     "\n");
	cli_print_exit_codes(out);
}

/* Runs `inferq help COMMAND`: the command's own --help. */
static int command_help(const char *command)
{
	char *args[] = {(char *)command, "--help", NULL};
	const char *near;

	if (strcmp(command, "serve") == 0)
		return serve_main(2, args);
	if (strcmp(command, "help") == 0 || strcmp(command, "version") == 0) {
		usage(stdout);
		return 0;
	}
	if (cli_is_command(command))
		return cli_main(2, args);
	near = cli_suggest_command(command);
	if (near)
		fprintf(stderr, "inferq help: unknown command \"%s\"; did you mean \"%s\"?\n",
			command, near);
	else
		fprintf(stderr, "inferq help: unknown command \"%s\"; inferq help lists the "
				"commands\n",
			command);
	return 2;
}

int main(int argc, char **argv)
{
	const char *near;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "serve") == 0)
		return serve_main(argc - 1, argv + 1);
	if (cli_is_command(argv[1]))
		return cli_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("inferq %s\n", INFERQ_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "help") == 0 && argc >= 3)
		return command_help(argv[2]);
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (argv[1][0] == '-') {
		fprintf(stderr, "inferq: unknown option \"%s\": options go after the command, as in "
				"inferq submit --model M\n",
			argv[1]);
		usage(stderr);
		return 2;
	}
	near = cli_suggest_command(argv[1]);
	if (near) {
		fprintf(stderr, "inferq: unknown command \"%s\"; did you mean \"%s\"? "
				"(inferq help lists the commands)\n",
			argv[1], near);
		return 2;
	}
	fprintf(stderr, "inferq: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
