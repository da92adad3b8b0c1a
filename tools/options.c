/*
 * tools/options.c — the command line of `vmtrap`.
 *
 * Design: a pure function from argv to vmtrap_options; nothing is opened or
 * started here, so every usage error is reported as one line before any
 * guest runs. --hook takes a comma-separated list and may be repeated; empty
 * names and duplicates are refused (a duplicate hook would double-count).
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_usage(FILE *f)
{
    fputs("usage: vmtrap run --guest IMAGE --driver emu|kvm --hook SYMBOL[,SYMBOL...]\n"
          "                  [--returns[=SYMBOL,...]] [--json] [--quiet] [--trace] [--limit SECONDS]\n"
          "                  [--ram MB] [--set SYMBOL=VALUE ...] [--breakpoints auto|shadow|exec|debug]\n"
          "                  [--overflow shadow|exec]\n"
          "       vmtrap run --driver qemu --hook SYMBOL[,...] [--symbols FILE | --guest ELF]\n"
          "                  (--gdb unix:PATH [--qmp unix:PATH] [--ram MB] | -- QEMU ARGS...)\n"
          "                  [--limit SECONDS] [--json] [--quiet] [--no-icount] [--dump CORE]\n"
          "       vmtrap demo [--guest IMAGE] [--driver emu|kvm] [--json] [--quiet]\n"
          "                  [--limit SECONDS] [--set SYMBOL=VALUE ...] [--breakpoints ...]\n"
          "       vmtrap ps CORE.elf [--json] [--system-map MAP]\n"
          "       vmtrap symbols CORE.elf PATTERN [--json] [--system-map MAP]\n"
          "       vmtrap --help\n"
          "\n"
          "run   boots IMAGE (an ELF64 guest) on the driver, puts hidden breakpoints on\n"
          "      the symbols and logs every call with its decoded arguments, the page-in/\n"
          "      page-out/remap events of the hooked pages and the guest's reports;\n"
          "      a summary table follows at exit (also on SIGINT/SIGTERM).\n"
          "demo  runs the bundled workload guest on the best available driver with\n"
          "      hooks on svc_open, svc_write, svc_spawn and svc_exit (and the returns of\n"
          "      svc_open and svc_spawn).\n"
          "ps    lists a Linux guest's processes read from its own memory (a QEMU ELF core).\n"
          "symbols  lists kernel symbols matching PATTERN (a glob) with addresses and BTF prototypes.\n"
          "--returns also logs each hooked function's return value (of all, or of those named).\n"
          "--json writes one JSON object per line instead of readable lines.\n"
          "--trace also logs every driver event with the monitor's response.\n"
          "--breakpoints chooses how breakpoints are made (default: the best the driver can do):\n"
          "      shadow = hidden INT3 in shadow frames, exec = execute traps, debug = debug registers.\n"
          "--set writes VALUE into the guest variable SYMBOL (1, 2, 4 or 8 bytes) before it\n"
          "      starts, e.g. --set workload_iterations=8 for a shorter workload run.\n",
          f);
}

static int fail(char *err, size_t err_len, const char *fmt, const char *arg)
{
    snprintf(err, err_len, fmt, arg);
    return CLI_EXIT_USAGE;
}

static int add_hooks(vmtrap_options *o, const char *list, char *err, size_t err_len)
{
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0)
            return fail(err, err_len, "--hook '%s': empty symbol name", list);
        if (n > 255)
            return fail(err, err_len, "--hook '%.64s...': symbol name too long", list);
        char *name = strndup(p, n);
        if (!name)
            return fail(err, err_len, "%s", "out of memory");
        for (size_t i = 0; i < o->nhooks; i++) {
            if (strcmp(o->hooks[i], name) == 0) {
                int rc = fail(err, err_len, "--hook: symbol '%s' given twice", name);
                free(name);
                return rc;
            }
        }
        if (o->nhooks == CLI_MAX_HOOKS) {
            free(name);
            return fail(err, err_len, "--hook: more than %s symbols", "64");
        }
        o->hooks[o->nhooks++] = name;
        if (!comma)
            return CLI_EXIT_OK;
        p = comma + 1;
    }
}

static int add_set(vmtrap_options *o, const char *arg, char *err, size_t err_len)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1])
        return fail(err, err_len, "--set '%s': expected SYMBOL=VALUE", arg);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(eq + 1, &end, 0);
    if (errno || *end || eq[1] == '-')
        return fail(err, err_len, "--set '%s': VALUE must be a non-negative integer", arg);
    if (o->nsets == CLI_MAX_SETS)
        return fail(err, err_len, "--set: more than %s variables", "16");
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name)
        return fail(err, err_len, "%s", "out of memory");
    o->sets[o->nsets].symbol = name;
    o->sets[o->nsets].value = v;
    o->nsets++;
    return CLI_EXIT_OK;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1e7)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_options(int argc, char **argv, vmtrap_options *o, char *err, size_t err_len)
{
    memset(o, 0, sizeof *o);
    err[0] = 0;
    if (argc < 2) {
        snprintf(err, err_len, "missing command (run, demo); try 'vmtrap --help'");
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        o->command = CLI_CMD_HELP;
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "run") == 0)
        o->command = CLI_CMD_RUN;
    else if (strcmp(cmd, "demo") == 0)
        o->command = CLI_CMD_DEMO;
    else
        return fail(err, err_len, "unknown command '%s' (expected run or demo)", cmd);

    enum { OPT_RETURNS = 256, OPT_RAM, OPT_TRACE, OPT_SET, OPT_BREAKPOINTS, OPT_OVERFLOW };
    static const struct option longopts[] = {
        { "guest", required_argument, NULL, 'g' },
        { "driver", required_argument, NULL, 'd' },
        { "hook", required_argument, NULL, 'k' },
        { "returns", optional_argument, NULL, OPT_RETURNS },
        { "trace", no_argument, NULL, OPT_TRACE },
        { "set", required_argument, NULL, OPT_SET },
        { "breakpoints", required_argument, NULL, OPT_BREAKPOINTS },
        { "overflow", required_argument, NULL, OPT_OVERFLOW },
        { "json", no_argument, NULL, 'j' },
        { "quiet", no_argument, NULL, 'q' },
        { "limit", required_argument, NULL, 'l' },
        { "ram", required_argument, NULL, OPT_RAM },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    /* Parse the arguments after the command: av[0] is the command word. */
    char **av = argv + 1;
    int ac = argc - 1;
    optind = 0; /* GNU: full re-initialisation */
    opterr = 0;
    int c;
    while ((c = getopt_long(ac, av, ":g:d:k:jql:h", longopts, NULL)) != -1) {
        int rc = CLI_EXIT_OK;
        switch (c) {
        case 'g': o->guest = optarg; break;
        case 'd':
            if (strcmp(optarg, "emu") != 0 && strcmp(optarg, "kvm") != 0)
                rc = fail(err, err_len, "unsupported driver '%s' (expected emu or kvm)", optarg);
            else
                o->driver = optarg;
            break;
        case 'k': rc = add_hooks(o, optarg, err, err_len); break;
        case OPT_RETURNS:
            o->returns = 1;
            if (optarg) {
                free(o->return_list);
                o->return_list = strdup(optarg);
            }
            break;
        case OPT_TRACE: o->trace = 1; break;
        case OPT_SET: rc = add_set(o, optarg, err, err_len); break;
        case OPT_BREAKPOINTS:
            if (strcmp(optarg, "auto") == 0)
                o->controller = VMT_BPM_CTL_AUTO;
            else if (strcmp(optarg, "shadow") == 0)
                o->controller = VMT_BPM_CTL_SHADOW;
            else if (strcmp(optarg, "exec") == 0)
                o->controller = VMT_BPM_CTL_EXEC;
            else if (strcmp(optarg, "debug") == 0)
                o->controller = VMT_BPM_CTL_DEBUG;
            else
                rc = fail(err, err_len, "--breakpoints '%s': expected auto, shadow, exec or debug", optarg);
            break;
        case OPT_OVERFLOW:
            if (strcmp(optarg, "shadow") == 0)
                o->overflow = VMT_BPM_CTL_SHADOW;
            else if (strcmp(optarg, "exec") == 0)
                o->overflow = VMT_BPM_CTL_EXEC;
            else
                rc = fail(err, err_len, "--overflow '%s': expected shadow or exec", optarg);
            break;
        case 'j': o->json = 1; break;
        case 'q': o->quiet = 1; break;
        case 'l':
            /* 0 means no limit (the default), as docs/cli.md says. */
            if (parse_double(optarg, &o->limit_seconds) != 0)
                rc = fail(err, err_len, "--limit '%s': expected a number of seconds (0: no limit)", optarg);
            break;
        case OPT_RAM: {
            double mb;
            if (parse_double(optarg, &mb) != 0 || mb < 1 || mb > 65536 || mb != (double)(uint64_t)mb)
                rc = fail(err, err_len, "--ram '%s': expected whole MiB between 1 and 65536", optarg);
            else
                o->ram_mb = (uint64_t)mb;
            break;
        }
        case 'h': o->command = CLI_CMD_HELP; return CLI_EXIT_OK;
        case ':':
            rc = fail(err, err_len, "option '%s' needs a value", av[optind - 1]);
            break;
        default:
            rc = fail(err, err_len, "unknown option '%s'", av[optind - 1]);
            break;
        }
        if (rc != CLI_EXIT_OK) {
            cli_free_options(o);
            return rc;
        }
    }
    if (optind < ac) {
        int rc = fail(err, err_len, "unexpected argument '%s'", av[optind]);
        cli_free_options(o);
        return rc;
    }
    if (o->command == CLI_CMD_RUN) {
        const char *missing = !o->guest ? "--guest IMAGE" : !o->driver ? "--driver emu|kvm"
                              : o->nhooks == 0                         ? "--hook SYMBOL"
                                                                       : NULL;
        if (missing) {
            cli_free_options(o);
            return fail(err, err_len, "run: missing %s", missing);
        }
    }
    if (o->return_list) {
        /* every symbol named must be hooked */
        char *copy = strdup(o->return_list), *save = NULL;
        int rc = copy ? CLI_EXIT_OK : fail(err, err_len, "%s", "out of memory");
        for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t && rc == CLI_EXIT_OK; t = strtok_r(NULL, ",", &save)) {
            size_t i;
            for (i = 0; i < o->nhooks && strcmp(o->hooks[i], t) != 0; i++)
                ;
            if (i == o->nhooks)
                rc = fail(err, err_len, "--returns: '%s' is not a --hook symbol", t);
        }
        free(copy);
        if (rc != CLI_EXIT_OK) {
            cli_free_options(o);
            return rc;
        }
    }
    if (o->command == CLI_CMD_DEMO && o->nhooks > 0) {
        cli_free_options(o);
        return fail(err, err_len, "%s", "demo: --hook is not accepted (the demo hooks the four services)");
    }
    return CLI_EXIT_OK;
}

void cli_free_options(vmtrap_options *o)
{
    for (size_t i = 0; i < o->nhooks; i++)
        free(o->hooks[i]);
    o->nhooks = 0;
    for (size_t i = 0; i < o->nsets; i++)
        free(o->sets[i].symbol);
    o->nsets = 0;
    free(o->return_list);
    o->return_list = NULL;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}
