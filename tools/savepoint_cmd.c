/*
 * tools/savepoint_cmd.c — `vmtrap snapshot save`: resume a snapshot, run it
 * to a point and save the machine there as a vmtrap snapshot.
 *
 *   vmtrap snapshot save FILE OUT.vmts (--at-instructions N | --at-time SECONDS |
 *                        --at-hit SYMBOL[:COUNT]) [--state SIDECAR.json]
 *                        [--max-instructions N] [--limit SECONDS] [--json] [--quiet]
 *
 * --at-instructions N: after N instructions. --at-time S: when the guest's
 * virtual clock is S seconds past the snapshot's (guest time, not wall
 * time). --at-hit SYMBOL[:COUNT]: at the COUNT-th (default 1st) call of a
 * kernel function named by kallsyms, with the vCPU at its entry; a debug
 * register breakpoint is used, so the saved memory holds the guest's own
 * code bytes, and the tool re-reads the saved file to prove it (the entry
 * bytes in the saved file against the source's).
 * --max-instructions (default 2e9) and --limit (wall seconds) bound the
 * run when the point never comes.
 *
 * Prints the console lines before the point (serial events), each
 * reconstruction (notes), then one `saved` report: file, instructions,
 * guest time, RIP, and the reconstructions carried in the file.
 * Exit codes: 0 saved, 1 the point was not reached or saving failed, 2 a
 * usage or load error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "vmtrap/os.h"
#include "vmtrap/resume.h"

typedef enum { AT_NONE, AT_INSNS, AT_TIME, AT_HIT } save_at;

typedef struct save_opts {
    const char *in, *out, *state;
    save_at at;
    uint64_t insns, count, max_insns;
    double seconds, limit;
    char symbol[128];
    int json, quiet;
} save_opts;

static int usage(const char *msg)
{
    fprintf(stderr, "vmtrap snapshot save: %s (usage: vmtrap snapshot save FILE OUT.vmts "
                    "(--at-instructions N | --at-time SECONDS | --at-hit SYMBOL[:COUNT]) [--state SIDECAR.json] "
                    "[--max-instructions N] [--limit SECONDS] [--json] [--quiet])\n",
            msg);
    return CLI_EXIT_USAGE;
}

static int parse_seconds(const char *s, double *out)
{
    char *end = NULL;
    if (!s || !*s)
        return -1;
    double v = strtod(s, &end);
    if (*end || !(v >= 0) || v > 1e6)
        return -1;
    *out = v;
    return 0;
}

/* SYMBOL[:COUNT] */
static int parse_hit(const char *s, save_opts *o)
{
    const char *colon = strchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : strlen(s);
    if (n == 0 || n >= sizeof o->symbol)
        return -1;
    memcpy(o->symbol, s, n);
    o->symbol[n] = 0;
    o->count = 1;
    if (colon && (cli_parse_u64(colon + 1, &o->count) || o->count == 0))
        return -1;
    return 0;
}

/* Returns 0, or the usage exit code after printing why. */
static int parse(int argc, char **argv, save_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_insns = 2000000000u;
    int modes = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            o->quiet = 1;
        } else if (strcmp(a, "--state") == 0 && val) {
            o->state = argv[++i];
        } else if (strcmp(a, "--at-instructions") == 0) {
            if (cli_parse_u64(val, &o->insns) || o->insns == 0)
                return usage("--at-instructions needs a count >= 1");
            o->at = AT_INSNS, modes++, i++;
        } else if (strcmp(a, "--at-time") == 0) {
            if (parse_seconds(val, &o->seconds) || o->seconds <= 0)
                return usage("--at-time needs guest seconds > 0");
            o->at = AT_TIME, modes++, i++;
        } else if (strcmp(a, "--at-hit") == 0) {
            if (!val || parse_hit(val, o))
                return usage("--at-hit needs SYMBOL or SYMBOL:COUNT (COUNT >= 1)");
            o->at = AT_HIT, modes++, i++;
        } else if (strcmp(a, "--max-instructions") == 0) {
            if (cli_parse_u64(val, &o->max_insns) || o->max_insns == 0)
                return usage("--max-instructions needs a count >= 1");
            i++;
        } else if (strcmp(a, "--limit") == 0) {
            if (parse_seconds(val, &o->limit))
                return usage("--limit needs wall seconds >= 0");
            i++;
        } else if (a[0] == '-') {
            return usage("unknown option or missing value");
        } else if (!o->in) {
            o->in = a;
        } else if (!o->out) {
            o->out = a;
        } else {
            return usage("too many files");
        }
    }
    if (!o->in || !o->out)
        return usage("needs FILE and OUT.vmts");
    if (modes != 1)
        return usage("needs exactly one of --at-instructions, --at-time, --at-hit");
    return 0;
}

static void on_serial(void *ctx, const char *line)
{
    cli_log_serial(ctx, line);
}

static void on_note(void *ctx, const char *line)
{
    cli_log_note(ctx, "reconstructed", line);
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* The kernel VA of `sym` in the snapshot r runs from, and its first bytes. */
static int find_symbol(vmt_resume *r, const char *sym, uint64_t *va, uint8_t *bytes, size_t n)
{
    char why[512] = "";
    vmt_os *os = NULL;
    vmt_driver *ro = NULL;
    vmt_os_config oc;
    memset(&oc, 0, sizeof oc);
    int rc = CLI_EXIT_USAGE;
    vmt_os_symbol s;
    size_t done = 0;
    if (vmt_os_open_snapshot(vmt_resume_snapshot(r), &oc, &os, &ro, why, sizeof why) != VMT_OK)
        fprintf(stderr, "vmtrap snapshot save: --at-hit needs the guest's kernel symbols: %s\n", why);
    else if (vmt_os_symbol_by_name(os, sym, &s) != VMT_OK)
        fprintf(stderr, "vmtrap snapshot save: --at-hit: no kernel symbol '%s'\n", sym);
    else if (vmt_os_read_kernel(os, s.addr, bytes, n, &done) != VMT_OK || done != n)
        fprintf(stderr, "vmtrap snapshot save: --at-hit: cannot read %s's code at 0x%" PRIx64 "\n", sym, s.addr);
    else {
        *va = s.addr;
        rc = CLI_EXIT_OK;
    }
    vmt_os_close(os);
    vmt_driver_destroy(ro);
    return rc;
}

/* The first n code bytes at va in a saved file (its own memory, re-read). */
static int saved_bytes(const char *path, uint64_t va, uint8_t *bytes, size_t n, char *why, size_t why_len)
{
    vmt_snapshot *s = NULL;
    vmt_os *os = NULL;
    vmt_driver *ro = NULL;
    vmt_os_config oc;
    memset(&oc, 0, sizeof oc);
    size_t done = 0;
    int rc = -1;
    if (vmt_snapshot_open(path, NULL, &s, why, why_len) == VMT_OK &&
        vmt_os_open_snapshot(s, &oc, &os, &ro, why, why_len) == VMT_OK) {
        if (vmt_os_read_kernel(os, va, bytes, n, &done) == VMT_OK && done == n)
            rc = 0;
        else
            snprintf(why, why_len, "cannot read 0x%" PRIx64 " in %s", va, path);
    }
    vmt_os_close(os);
    vmt_driver_destroy(ro);
    vmt_snapshot_destroy(s);
    return rc;
}

enum { ENTRY_BYTES = 16 };

static void report(cli_log *log, const save_opts *o, vmt_resume *r, uint64_t insns, uint64_t ns0, uint64_t hits,
                   uint64_t va, const uint8_t *orig, const uint8_t *saved, int have_saved)
{
    uint64_t now = vmt_resume_now_ns(r);
    vmt_regs regs;
    memset(&regs, 0, sizeof regs);
    (void)vmt_drv_get_regs(vmt_resume_driver(r), 0, &regs);
    char ob[2 * ENTRY_BYTES + 1] = "", sb[2 * ENTRY_BYTES + 1] = "";
    if (o->at == AT_HIT) {
        hex(orig, ENTRY_BYTES, ob);
        if (have_saved)
            hex(saved, ENTRY_BYTES, sb);
    }
    int match = have_saved && memcmp(orig, saved, ENTRY_BYTES) == 0;
    const char *mode = o->at == AT_INSNS ? "instructions" : o->at == AT_TIME ? "time" : "hit";
    size_t notes = vmt_resume_note_count(r);
    if (log->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "event", json_object_new_string("saved"));
        json_object_object_add(j, "file", json_object_new_string(o->out));
        json_object_object_add(j, "from", json_object_new_string(o->in));
        json_object_object_add(j, "at", json_object_new_string(mode));
        json_object_object_add(j, "instructions", json_object_new_int64((int64_t)insns));
        json_object_object_add(j, "guest_ns", json_object_new_int64((int64_t)now));
        json_object_object_add(j, "guest_ns_run", json_object_new_int64((int64_t)(now - ns0)));
        char rip[24];
        snprintf(rip, sizeof rip, "0x%" PRIx64, regs.rip);
        json_object_object_add(j, "rip", json_object_new_string(rip));
        if (o->at == AT_HIT) {
            char a[24];
            snprintf(a, sizeof a, "0x%" PRIx64, va);
            json_object_object_add(j, "symbol", json_object_new_string(o->symbol));
            json_object_object_add(j, "address", json_object_new_string(a));
            json_object_object_add(j, "hits", json_object_new_int64((int64_t)hits));
            json_object_object_add(j, "entry_bytes_source", json_object_new_string(ob));
            json_object_object_add(j, "entry_bytes_saved", json_object_new_string(sb));
            json_object_object_add(j, "entry_bytes_match", json_object_new_boolean(match));
        }
        json_object *list = json_object_new_array();
        for (size_t i = 0; i < notes; i++)
            json_object_array_add(list, json_object_new_string(vmt_resume_note_at(r, i)));
        json_object_object_add(j, "reconstructions", list);
        fprintf(log->out, "%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        json_object_put(j);
    } else {
        fprintf(log->out,
                "saved: %s at %s: %" PRIu64 " instructions, guest time %.6f s (+%.6f s), rip 0x%" PRIx64
                ", %zu reconstructions carried (listed above)\n",
                o->out, mode, insns, (double)now / 1e9, (double)(now - ns0) / 1e9, regs.rip, notes);
        if (o->at == AT_HIT)
            fprintf(log->out, "saved: %s call %" PRIu64 " at 0x%" PRIx64 "; entry bytes in the saved file %s %s (source %s)\n",
                    o->symbol, hits, va, sb, match ? "equal the source's" : "DIFFER from the source's", ob);
    }
    fflush(log->out);
}

int cli_snapshot_save_main(int argc, char **argv)
{
    save_opts o;
    int prc = parse(argc, argv, &o);
    if (prc)
        return prc;
    cli_log log;
    memset(&log, 0, sizeof log);
    log.out = stdout;
    log.json = o.json;
    log.quiet = o.quiet;
    vmt_resume_config rc = { .sidecar = o.state, .serial = on_serial, .serial_ctx = &log, .note = on_note,
                             .note_ctx = &log, .quiet = o.quiet != 0 };
    vmt_resume *r = NULL;
    char why[512] = "";
    if (vmt_resume_open(o.in, &rc, &r, why, sizeof why) != VMT_OK) {
        fprintf(stderr, "vmtrap snapshot save: %s\n", why);
        return CLI_EXIT_USAGE;
    }
    uint64_t va = 0, insns = 0, hits = 0, ns0 = vmt_resume_now_ns(r);
    uint8_t orig[ENTRY_BYTES] = { 0 }, saved[ENTRY_BYTES] = { 0 };
    if (o.at == AT_HIT && find_symbol(r, o.symbol, &va, orig, sizeof orig) != CLI_EXIT_OK) {
        vmt_resume_close(r);
        return CLI_EXIT_USAGE;
    }
    vmt_stop_info stop;
    memset(&stop, 0, sizeof stop);
    bool reached = false;
    vmt_status st;
    if (o.at == AT_INSNS) {
        st = vmt_resume_run(r, o.insns, o.limit, &stop, &insns);
        reached = !st && stop.reason == VMT_STOP_INSN_LIMIT && insns == o.insns;
    } else if (o.at == AT_TIME) {
        st = vmt_resume_run_until_time(r, ns0 + (uint64_t)(o.seconds * 1e9 + 0.5), o.max_insns, o.limit, &reached,
                                       &stop, &insns);
    } else {
        st = vmt_resume_run_until_address(r, va, o.count, o.max_insns, o.limit, &reached, &hits, &stop, &insns);
    }
    vmt_platform_serial_flush(vmt_resume_platform(r));
    int rc_exit = CLI_EXIT_OK;
    if (st) {
        fprintf(stderr, "vmtrap snapshot save: %s\n", vmt_resume_error(r));
        rc_exit = CLI_EXIT_FAIL;
    } else if (!reached) {
        fprintf(stderr, "vmtrap snapshot save: the point was not reached (%s%s%s); nothing saved\n",
                vmt_stop_reason_name(stop.reason), stop.message[0] ? ": " : "", stop.message);
        rc_exit = CLI_EXIT_FAIL;
    } else if (vmt_resume_save(r, o.out) != VMT_OK) {
        fprintf(stderr, "vmtrap snapshot save: %s\n", vmt_resume_error(r));
        rc_exit = CLI_EXIT_FAIL;
    } else {
        int have_saved = 0;
        if (o.at == AT_HIT) {
            have_saved = saved_bytes(o.out, va, saved, sizeof saved, why, sizeof why) == 0;
            if (!have_saved)
                fprintf(stderr, "vmtrap snapshot save: re-reading the saved file: %s\n", why);
        }
        report(&log, &o, r, insns, ns0, hits, va, orig, saved, have_saved);
        if (o.at == AT_HIT && (!have_saved || memcmp(orig, saved, sizeof orig) != 0))
            rc_exit = CLI_EXIT_FAIL;
    }
    vmt_resume_close(r);
    return rc_exit;
}
