/*
 * tools/qemu_cmd.c — `vmtrap run --driver qemu ...`: hooks in a live QEMU VM.
 *
 *   vmtrap run --driver qemu --hook SYM[,SYM...] [--symbols FILE | --guest ELF]
 *              (--gdb unix:PATH [--qmp unix:PATH] [--ram MB] | -- QEMU ARGS...)
 *              [--limit SECONDS] [--json] [--quiet] [--no-icount] [--dump CORE]
 *              [--watch-pages PID|COMM:VA[,VA|START-END...] [--map-base ADDR]]
 *
 * --watch-pages (tools/watch_pages.c): the page-table monitor on user pages
 * of a Linux process under its own root, through the driver's write-only
 * permission control (gdbstub watchpoints on the table frames through the
 * direct map: page_offset_base from the OS layer over the live VM, or
 * --map-base). Events are reported after the guest's store landed.
 *
 * Design: the qemu driver alone (no image is placed: the VM is QEMU's), one
 * gdbstub breakpoint per hook (invisible under TCG, no count limit). Symbols
 * come from --symbols (lines "ADDRESS TYPE NAME" as in /proc/kallsyms or
 * System.map; other lines are skipped, so a console log with a kallsyms
 * sample works too), from --guest (an ELF with symbols, e.g. a vmlinux), or
 * a hook is a literal 0xADDRESS. Each hit prints the six SysV argument
 * registers and, for each of the first three that points to a printable
 * NUL-terminated string (read through the guest's page tables with physical
 * reads), the string. The run ends after --limit seconds of wall time, on
 * SIGINT/SIGTERM, or when QEMU goes away; the summary gives hits per hook
 * and the driver's counters. --dump writes QEMU's dump-guest-memory core
 * (needs QMP: always there when vmtrap launched QEMU) at the end, and next
 * to it CORE.state.json, the sidecar with what the core lacks (EFER, ...).
 * Attach: QEMU keeps running after vmtrap detaches. Launch: QEMU is stopped.
 *
 * Exit codes as cli.h: 2 for usage errors (before anything runs), 1 when the
 * driver fails, 0 otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "vmtrap/image.h"
#include "vmtrap/paging.h"
#include "vmtrap/qemu.h"
#include "vmtrap/session.h"
#ifdef VMT_CLI_HAVE_OS
#include "vmtrap/os.h"
#endif

typedef struct qhook {
    char name[128];
    vmt_va va;
    uint64_t hits;
} qhook;

typedef struct qopts {
    const char *gdb, *qmp, *symbols, *guest, *dump;
    double limit;
    uint64_t ram_mb;
    int json, quiet, no_icount;
    qhook hooks[CLI_MAX_HOOKS];
    size_t nhooks;
    char **qemu_argv; /* points into argv (after "--") */
    cli_watch watch;  /* --watch-pages */
    uint64_t map_base; /* --map-base (0: the OS layer's page_offset_base) */
} qopts;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int usage_error(const char *fmt, const char *a)
{
    fprintf(stderr, "vmtrap: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return CLI_EXIT_USAGE;
}

int cli_is_qemu_run(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "run") != 0)
        return 0;
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--driver=qemu") == 0 || strcmp(argv[i], "-d=qemu") == 0)
            return 1;
        if ((strcmp(argv[i], "--driver") == 0 || strcmp(argv[i], "-d") == 0) && i + 1 < argc &&
            strcmp(argv[i + 1], "qemu") == 0)
            return 1;
    }
    return 0;
}

static int add_hooks(qopts *o, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return usage_error("%s", "out of memory");
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nhooks == CLI_MAX_HOOKS || strlen(t) >= sizeof o->hooks[0].name) {
            free(copy);
            return usage_error("--hook: too many hooks or a name too long ('%s')", t);
        }
        snprintf(o->hooks[o->nhooks++].name, sizeof o->hooks[0].name, "%s", t);
    }
    free(copy);
    return CLI_EXIT_OK;
}

static int parse(int argc, char **argv, qopts *o)
{
    memset(o, 0, sizeof *o);
    int end = argc;
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) {
            end = i;
            if (i + 1 < argc)
                o->qemu_argv = argv + i + 1;
            break;
        }
    enum { OPT_GDB = 300, OPT_QMP, OPT_SYMBOLS, OPT_RAM, OPT_NOICOUNT, OPT_DUMP, OPT_WATCH, OPT_MAPBASE };
    static const struct option longopts[] = {
        { "driver", required_argument, NULL, 'd' }, { "hook", required_argument, NULL, 'k' },
        { "gdb", required_argument, NULL, OPT_GDB }, { "qmp", required_argument, NULL, OPT_QMP },
        { "symbols", required_argument, NULL, OPT_SYMBOLS }, { "guest", required_argument, NULL, 'g' },
        { "ram", required_argument, NULL, OPT_RAM }, { "limit", required_argument, NULL, 'l' },
        { "json", no_argument, NULL, 'j' }, { "quiet", no_argument, NULL, 'q' },
        { "no-icount", no_argument, NULL, OPT_NOICOUNT }, { "dump", required_argument, NULL, OPT_DUMP },
        { "watch-pages", required_argument, NULL, OPT_WATCH }, { "map-base", required_argument, NULL, OPT_MAPBASE },
        { NULL, 0, NULL, 0 },
    };
    char **av = argv + 1;
    int ac = end - 1;
    optind = 0;
    opterr = 0;
    int c, rc;
    while ((c = getopt_long(ac, av, ":d:k:g:l:jq", longopts, NULL)) != -1) {
        char *e;
        switch (c) {
        case 'd': break; /* qemu: that is why we are here */
        case 'k':
            if ((rc = add_hooks(o, optarg)))
                return rc;
            break;
        case OPT_GDB: o->gdb = optarg; break;
        case OPT_QMP: o->qmp = optarg; break;
        case OPT_SYMBOLS: o->symbols = optarg; break;
        case 'g': o->guest = optarg; break;
        case OPT_DUMP: o->dump = optarg; break;
        case OPT_NOICOUNT: o->no_icount = 1; break;
        case OPT_WATCH:
#ifdef VMT_CLI_HAVE_OS
            if (cli_watch_parse(&o->watch, optarg))
                return CLI_EXIT_USAGE;
            break;
#else
            return usage_error("%s", "--watch-pages needs the OS layer, which this build lacks");
#endif
        case OPT_MAPBASE:
            if (cli_parse_u64(optarg, &o->map_base) || !o->map_base || (o->map_base & 0xfff))
                return usage_error("--map-base '%s': expected a page-aligned address", optarg);
            break;
        case 'j': o->json = 1; break;
        case 'q': o->quiet = 1; break;
        case OPT_RAM:
            errno = 0;
            o->ram_mb = strtoull(optarg, &e, 10);
            if (errno || *e || o->ram_mb == 0 || o->ram_mb > (1u << 20))
                return usage_error("--ram '%s': expected whole MiB", optarg);
            break;
        case 'l':
            errno = 0;
            o->limit = strtod(optarg, &e);
            if (errno || *e || !(o->limit > 0) || o->limit > 1e7)
                return usage_error("--limit '%s': expected a positive number of seconds", optarg);
            break;
        case ':': return usage_error("option '%s' needs a value", av[optind - 1]);
        default: return usage_error("unknown option '%s' for --driver qemu", av[optind - 1]);
        }
    }
    if (optind < ac)
        return usage_error("unexpected argument '%s' (QEMU's own arguments go after '--')", av[optind]);
    if (!o->nhooks && !o->watch.ngroups)
        return usage_error("%s", "run: missing --hook SYMBOL (or --watch-pages)");
    if (!o->gdb == !o->qemu_argv)
        return usage_error("%s", "--driver qemu needs either --gdb unix:PATH (attach) or '-- QEMU ARGS...' (launch)");
    if (o->gdb && strncmp(o->gdb, "unix:", 5) != 0)
        return usage_error("--gdb '%s': expected unix:PATH", o->gdb);
    if (o->qmp && strncmp(o->qmp, "unix:", 5) != 0)
        return usage_error("--qmp '%s': expected unix:PATH", o->qmp);
    if (o->gdb && !o->qmp && !o->ram_mb)
        return usage_error("%s", "attaching without --qmp needs --ram MB (the guest RAM size)");
    if (o->dump && o->dump[0] != '/')
        return usage_error("--dump '%s': give an absolute path", o->dump);
    return CLI_EXIT_OK;
}

/* Address of name in a kallsyms/System.map style file (0: not there). */
static vmt_va symbol_from_file(const char *path, const char *name, int *io_error)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *io_error = 1;
        return 0;
    }
    char line[512];
    vmt_va va = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long a;
        char type[8], sym[256];
        if (sscanf(line, "%llx %7s %255s", &a, type, sym) == 3 && strlen(type) == 1 && strcmp(sym, name) == 0) {
            va = a;
            break;
        }
    }
    fclose(f);
    return va;
}

static int resolve(qopts *o)
{
    vmt_image *img = NULL;
    char why[512];
    if (o->guest && vmt_image_load_elf(o->guest, 1ull << 30, &img, why, sizeof why) != VMT_OK)
        return usage_error("--guest: %s", why);
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < o->nhooks && rc == CLI_EXIT_OK; i++) {
        qhook *h = &o->hooks[i];
        char *e;
        if (strncmp(h->name, "0x", 2) == 0) {
            h->va = strtoull(h->name, &e, 16);
            if (*e || !h->va)
                rc = usage_error("--hook '%s': not an address", h->name);
            continue;
        }
        int io = 0;
        if (o->symbols)
            h->va = symbol_from_file(o->symbols, h->name, &io);
        if (io) {
            rc = usage_error("--symbols '%s': cannot read the file", o->symbols);
            break;
        }
        if (!h->va && img)
            (void)vmt_image_symbol(img, h->name, &h->va, NULL);
        if (!h->va)
            rc = usage_error(o->symbols || img ? "unknown symbol '%s'"
                                               : "cannot resolve '%s': give --symbols FILE, --guest ELF or 0xADDRESS",
                             h->name);
    }
    vmt_image_destroy(img);
    return rc;
}

static vmt_status rd(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    return vmt_drv_read_phys(ctx, pa, buf, len);
}

/* A printable NUL-terminated string at va (1..CLI_STR_MAX-1 chars), else 0. */
static int guest_string(vmt_driver *d, const vmt_regs *r, vmt_va va, char *out, size_t cap)
{
    if (!va || !(r->cr0 & VMT_CR0_PG))
        return 0;
    vmt_phys_reader reader = { rd, d };
    vmt_paging_config pc = { .levels = (r->cr4 & VMT_CR4_LA57) ? 5 : 4, .maxphyaddr = 40,
                             .nxe = (r->efer & VMT_EFER_NXE) != 0 };
    size_t n = 0;
    while (n + 1 < cap) {
        vmt_walk w;
        if (vmt_paging_walk(&reader, &pc, r->cr3 & VMT_PTE_ADDR_MASK, va + n, &w, NULL, 0) != VMT_OK)
            return 0;
        size_t in_page = 4096 - (size_t)((va + n) & 4095);
        size_t want = cap - 1 - n < in_page ? cap - 1 - n : in_page;
        if (vmt_drv_read_phys(d, w.pa, out + n, want) != VMT_OK)
            return 0;
        for (size_t i = 0; i < want; i++) {
            unsigned char ch = (unsigned char)out[n + i];
            if (ch == 0)
                return n + i > 0;
            if (ch < 32 || ch > 126)
                return 0;
        }
        n += want;
    }
    return 0; /* longer than we show: not taken as a string */
}

/* len bytes at va through the page tables; 0 when any is unreadable. */
static int guest_bytes(vmt_driver *d, const vmt_regs *r, vmt_va va, uint8_t *out, size_t len)
{
    if (!va || !(r->cr0 & VMT_CR0_PG))
        return 0;
    vmt_phys_reader reader = { rd, d };
    vmt_paging_config pc = { .levels = (r->cr4 & VMT_CR4_LA57) ? 5 : 4, .maxphyaddr = 40,
                             .nxe = (r->efer & VMT_EFER_NXE) != 0 };
    size_t n = 0;
    while (n < len) {
        vmt_walk w;
        if (vmt_paging_walk(&reader, &pc, r->cr3 & VMT_PTE_ADDR_MASK, va + n, &w, NULL, 0) != VMT_OK)
            return 0;
        size_t in_page = 4096 - (size_t)((va + n) & 4095);
        size_t want = len - n < in_page ? len - n : in_page;
        if (vmt_drv_read_phys(d, w.pa, out + n, want) != VMT_OK)
            return 0;
        n += want;
    }
    return 1;
}

/* Guest bytes as JSON string content (quotes, backslash, controls escaped). */
static void print_escaped(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\')
            printf("\\%c", p[i]);
        else if (p[i] == '\n')
            printf("\\n");
        else if (p[i] >= 32 && p[i] < 127)
            putchar(p[i]);
        else
            printf("\\u%04x", p[i]);
    }
}

static void log_hit(const qopts *o, const qhook *h, const vmt_event *ev, vmt_driver *d)
{
    static const char *const names[6] = { "rdi", "rsi", "rdx", "rcx", "r8", "r9" };
    char strs[3][CLI_STR_MAX];
    int is_str[3];
    for (int i = 0; i < 3; i++)
        is_str[i] = guest_string(d, &ev->regs, vmt_regs_sysv_arg(&ev->regs, (unsigned)i), strs[i], sizeof strs[i]);
    /* A (pointer, length) pair in rsi/rdx, as write(fd, buf, count): a preview. */
    uint8_t buf[CLI_PREVIEW_MAX * 2];
    uint64_t count = ev->regs.rdx;
    size_t blen = count > 0 && count <= (1u << 20) ? (size_t)(count < sizeof buf ? count : sizeof buf) : 0;
    int has_buf = !is_str[1] && blen && guest_bytes(d, &ev->regs, ev->regs.rsi, buf, blen);
    if (o->quiet)
        return;
    if (o->json) {
        printf("{\"event\":\"call\",\"symbol\":\"%s\",\"count\":%" PRIu64 ",\"rip\":\"0x%" PRIx64 "\",\"cr3\":\"0x%" PRIx64
               "\",\"args\":[",
               h->name, h->hits, ev->regs.rip, ev->regs.cr3);
        for (int i = 0; i < 6; i++)
            printf("%s\"0x%" PRIx64 "\"", i ? "," : "", vmt_regs_sysv_arg(&ev->regs, (unsigned)i));
        printf("],\"strings\":{");
        int first = 1;
        for (int i = 0; i < 3; i++) {
            if (!is_str[i])
                continue;
            printf("%s\"%s\":\"", first ? "" : ",", names[i]);
            for (const char *p = strs[i]; *p; p++)
                printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
            printf("\"");
            first = 0;
        }
        printf("}");
        if (has_buf) {
            printf(",\"buffers\":{\"rsi\":\"");
            print_escaped(buf, blen);
            printf("\"}");
        }
        printf("}\n");
    } else {
        printf("call %s #%" PRIu64 " rip=0x%" PRIx64, h->name, h->hits, ev->regs.rip);
        for (int i = 0; i < 6; i++)
            printf(" %s=0x%" PRIx64, names[i], vmt_regs_sysv_arg(&ev->regs, (unsigned)i));
        for (int i = 0; i < 3; i++)
            if (is_str[i])
                printf(" %s=\"%s\"", names[i], strs[i]);
        if (has_buf) {
            printf(" rsi[%zu]=\"", blen);
            print_escaped(buf, blen);
            printf("\"");
        }
        printf("\n");
    }
    fflush(stdout);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_ptm_event(void *ctx, const vmt_ptm_event *ev)
{
    (void)cli_watch_on_event(ctx, ev);
}

/* --watch-pages: the OS layer over the live VM finds the process and
 * page_offset_base (the direct map, through which the driver watches table
 * frames, unless --map-base), then a session + page-table monitor on view 0
 * (the driver's write-only permission control). The session takes the
 * driver (also on failure: *d is then NULL). */
static int watch_setup(qopts *o, vmt_driver **d, cli_log *log, vmt_session **ses, vmt_ptm **ptm, struct vmt_os **osp)
{
#ifdef VMT_CLI_HAVE_OS
    char why[512];
    vmt_os_config oc;
    memset(&oc, 0, sizeof oc);
    double t0 = now_s();
    vmt_os *os = NULL;
    if (vmt_os_open(*d, &oc, &os, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap: --watch-pages: the guest's kernel was not found: %s\n", why);
        return CLI_EXIT_FAIL;
    }
    *osp = os;
    vmt_os_info oi;
    vmt_os_get_info(os, &oi);
    uint64_t mb = o->map_base ? o->map_base : oi.page_offset_base;
    char msg[256];
    snprintf(msg, sizeof msg, "OS layer over the live VM in %.1f s; frames watched through the linear map at 0x%" PRIx64
             " (%s)", now_s() - t0, mb, o->map_base ? "--map-base" : "Linux page_offset_base");
    cli_log_note(log, "watch-pages", msg);
    if (!mb) {
        fprintf(stderr, "vmtrap: --watch-pages: the kernel's page_offset_base was not found; give --map-base ADDR\n");
        return CLI_EXIT_FAIL;
    }
    if (vmt_qemu_set_map_base(*d, mb) != VMT_OK) {
        fprintf(stderr, "vmtrap: --map-base: %s\n", vmt_driver_error(*d));
        return CLI_EXIT_FAIL;
    }
    vmt_driver *drv = *d;
    *d = NULL;
    if (vmt_session_create(drv, NULL, ses) != VMT_OK) {
        fprintf(stderr, "vmtrap: cannot create the session\n");
        return CLI_EXIT_FAIL;
    }
    *d = drv;
    if (vmt_ptm_create(*ses, ptm) != VMT_OK) {
        fprintf(stderr, "vmtrap: --watch-pages: the page-table monitor cannot run on this driver\n");
        return CLI_EXIT_FAIL;
    }
    o->watch.log = log;
    if (cli_watch_arm(&o->watch, os, *ptm, VMT_VIEW_DEFAULT) == 0) {
        fprintf(stderr, "vmtrap: --watch-pages: no page could be watched (see the refused lines)\n");
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
#else
    (void)o, (void)d, (void)log, (void)ses, (void)ptm, (void)osp;
    return CLI_EXIT_USAGE;
#endif
}

static void teardown(vmt_driver *d, vmt_session *ses, vmt_ptm *ptm, struct vmt_os *os)
{
    vmt_ptm_destroy(ptm);
#ifdef VMT_CLI_HAVE_OS
    vmt_os_close(os);
#else
    (void)os;
#endif
    if (ses)
        vmt_session_destroy(ses);
    else
        vmt_driver_destroy(d);
}

int cli_qemu_main(int argc, char **argv)
{
    qopts o;
    int rc = parse(argc, argv, &o);
    if (rc || (rc = resolve(&o)))
        return rc;
    vmt_qemu_config cfg = { .gdb_socket = o.gdb ? o.gdb + 5 : NULL, .qmp_socket = o.qmp ? o.qmp + 5 : NULL,
                            .ram_bytes = o.ram_mb << 20, .qemu_argv = (const char *const *)o.qemu_argv,
                            .no_icount = o.no_icount, .start_timeout_ms = 60000 };
    vmt_driver *d;
    char why[512];
    vmt_status st = vmt_qemu_driver_create(&cfg, &d, why, sizeof why);
    if (st) {
        fprintf(stderr, "vmtrap: driver 'qemu' unavailable: %s\n", why);
        return st == VMT_E_INVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    vmt_qemu_info info;
    vmt_qemu_get_info(d, &info);
    for (size_t i = 0; i < o.nhooks; i++) {
        /* Under KVM only the 4 debug-register slots are invisible. */
        st = info.kvm == 1 ? (i < 4 ? vmt_drv_hw_breakpoint(d, VMT_VCPU_ALL, (unsigned)i, o.hooks[i].va, 1) : VMT_E_NOTSUP)
                           : vmt_qemu_breakpoint(d, o.hooks[i].va, 1);
        if (st) {
            fprintf(stderr, "vmtrap: hook '%s' at 0x%" PRIx64 ": %s\n", o.hooks[i].name, o.hooks[i].va,
                    vmt_driver_error(d));
            vmt_driver_destroy(d);
            return CLI_EXIT_FAIL;
        }
    }
    cli_log log = { stdout, o.json, o.quiet, 0 };
    vmt_session *ses = NULL;
    vmt_ptm *ptm = NULL;
    struct vmt_os *os = NULL;
    if (o.watch.ngroups && (rc = watch_setup(&o, &d, &log, &ses, &ptm, &os))) {
        teardown(d, ses, ptm, os);
        return rc;
    }
    if (!o.quiet) {
        printf(o.json ? "{\"event\":\"note\",\"what\":\"run\",\"text\":\"driver qemu %s%s, pid %d, %s; %zu hooks\"}\n"
                      : "run: driver qemu %s%s (pid %d), %s; %zu hooks\n",
               info.launched ? "launched" : "attached", info.icount ? " with -icount" : "", info.pid,
               info.kvm == 1 ? "KVM (hooks in debug registers)" : "TCG (hooks invisible, no count limit)", o.nhooks);
        fflush(stdout);
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    double t0 = now_s();
    const char *end = "limit reached";
    rc = CLI_EXIT_OK;
    while (!g_stop) {
        double left = o.limit > 0 ? o.limit - (now_s() - t0) : 1e9;
        if (left <= 0)
            break;
        vmt_event ev;
        st = vmt_drv_wait_event(d, left < 0.5 ? (int)(left * 1000) + 1 : 500, &ev);
        if (st == VMT_E_TIMEOUT)
            continue;
        if (st) {
            fprintf(stderr, "vmtrap: run failed: %s\n", vmt_driver_error(d));
            end = "driver error";
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (ev.kind == VMT_EVENT_STOPPED) {
            end = "QEMU stopped";
            fprintf(stderr, "vmtrap: %s\n", ev.u.stop.message);
            rc = ev.u.stop.reason == VMT_STOP_SHUTDOWN ? CLI_EXIT_OK : CLI_EXIT_FAIL;
            break;
        }
        vmt_response resp = vmt_response_continue();
        bool handled = false;
        if (ptm && vmt_ptm_handle_event(ptm, &ev, &resp, on_ptm_event, &o.watch, &handled) != VMT_OK)
            fprintf(stderr, "vmtrap: page-table monitor: %s\n", vmt_ptm_error(ptm));
        for (size_t i = 0; i < o.nhooks && !handled; i++)
            if (ev.kind == VMT_EVENT_HW_BREAKPOINT && ev.u.hwbp.address == o.hooks[i].va) {
                o.hooks[i].hits++;
                log_hit(&o, &o.hooks[i], &ev, d);
            }
        if ((st = vmt_drv_respond(d, &ev, &resp))) {
            fprintf(stderr, "vmtrap: respond: %s\n", vmt_driver_error(d));
            rc = CLI_EXIT_FAIL;
            break;
        }
    }
    if (g_stop)
        end = "signal";
    double wall = now_s() - t0;
    if (o.dump && rc == CLI_EXIT_OK) {
        char state[4200];
        snprintf(state, sizeof state, "%s.state.json", o.dump);
        if (vmt_qemu_dump(d, o.dump) != VMT_OK || vmt_qemu_write_state(d, state) != VMT_OK) {
            fprintf(stderr, "vmtrap: --dump: %s\n", vmt_driver_error(d));
            rc = CLI_EXIT_FAIL;
        } else if (!o.quiet && !o.json) {
            printf("dump: %s (+ %s; make a vmtrap snapshot with: vmtrap snapshot convert %s OUT.vmts --state %s)\n",
                   o.dump, state, o.dump, state);
        }
    }
    vmt_driver_stats ds;
    memset(&ds, 0, sizeof ds);
    vmt_drv_stats(d, &ds);
    if (ptm)
        cli_watch_summary(&o.watch, ptm);
    if (o.json) {
        printf("{\"event\":\"summary\",\"driver\":\"qemu\",\"end\":\"%s\",\"wall_seconds\":%.3f,\"exits\":%" PRIu64
               ",\"hooks\":[",
               end, wall, ds.exits);
        for (size_t i = 0; i < o.nhooks; i++)
            printf("%s{\"symbol\":\"%s\",\"va\":\"0x%" PRIx64 "\",\"hits\":%" PRIu64 "}", i ? "," : "", o.hooks[i].name,
                   o.hooks[i].va, o.hooks[i].hits);
        printf("]}\n");
    } else {
        printf("summary: driver qemu, %s after %.1f s; %" PRIu64 " stops (%" PRIu64 " internal), guest ran %.1f s\n",
               end, wall, ds.exits, ds.internal_exits, ds.ns_guest / 1e9);
        for (size_t i = 0; i < o.nhooks; i++)
            printf("  %-32s 0x%016" PRIx64 " %10" PRIu64 " hits\n", o.hooks[i].name, o.hooks[i].va, o.hooks[i].hits);
    }
    teardown(d, ses, ptm, os);
    return rc;
}
