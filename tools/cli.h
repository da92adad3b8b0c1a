/*
 * tools/cli.h — the pieces of the `vmtrap` command line tool.
 *
 * Layers, each in its own file:
 *   options.c  argv -> vmtrap_options (no side effects; errors as one line)
 *   decode.c   a hook hit -> decoded call: the symbol's prototype from the
 *              guest's DWARF (ELF guests) or BTF (Linux, vmtrap/os.h) gives
 *              names and kinds (integers, enums, strings, buffer previews,
 *              struct fields); symbols without one show six raw registers
 *   log.c      decoded calls, page events, guest reports -> readable lines
 *              or one JSON object per line; the summary table
 *   run.c      image + driver + session + monitor, the run, the summary
 *   vmtrap.c   main: sub-command dispatch and exit codes
 * Only run.c talks to the library's run-time objects; decode.c reads guest
 * memory through vmt_hit helpers only, so it never trusts a guest length.
 */
#ifndef VMTRAP_TOOLS_CLI_H
#define VMTRAP_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vmtrap/monitor.h"

/* Exit codes. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,   /* the run failed, or the guest/monitor reported a failure */
    CLI_EXIT_USAGE = 2,  /* bad command line, unknown symbol, missing image, bad driver */
};

#define CLI_MAX_HOOKS 64
#define CLI_MAX_SETS 16

/* --set SYMBOL=VALUE: a guest variable written before the first instruction. */
typedef struct cli_set {
    char *symbol; /* owned */
    uint64_t value;
} cli_set;

typedef enum cli_command { CLI_CMD_NONE = 0, CLI_CMD_RUN, CLI_CMD_DEMO, CLI_CMD_HELP } cli_command;

typedef struct vmtrap_options {
    cli_command command;
    const char *guest;        /* NULL: demo finds the bundled workload */
    const char *driver;       /* "emu", "kvm", or NULL (= best available) */
    size_t nhooks;
    char *hooks[CLI_MAX_HOOKS]; /* owned (strdup) */
    int returns;              /* also hook returns (--returns): of every hook... */
    char *return_list;        /* ...or of these (--returns=SYMBOL[,SYMBOL...]), owned */
    int json;
    int quiet;                /* no per-event lines, only the summary */
    int trace;                /* also every driver event and the response (--trace) */
    double limit_seconds;     /* 0: none */
    uint64_t ram_mb;          /* 0: default */
    size_t nsets;
    cli_set sets[CLI_MAX_SETS];
    vmt_bpm_controller controller; /* --breakpoints: AUTO (default), shadow, exec, debug */
    vmt_bpm_controller overflow;   /* --overflow: when the hooks do not fit the mechanism
                                      (debug registers), use this one for all of them
                                      instead of refusing; AUTO = refuse (default) */
} vmtrap_options;

/* Parse argv. On error returns CLI_EXIT_USAGE with a one-line message in
 * err; on --help returns CLI_EXIT_OK with command CLI_CMD_HELP. */
int cli_parse_options(int argc, char **argv, vmtrap_options *o, char *err, size_t err_len);
/* A whole unsigned number (decimal, 0x hex or 0 octal) that fits 64 bits:
 * 0, or -1 for empty text, a sign, trailing characters or overflow. */
int cli_parse_u64(const char *s, uint64_t *out);
void cli_free_options(vmtrap_options *o);
void cli_usage(FILE *f);

/* ---- decoding ---- */

typedef enum cli_arg_kind {
    CLI_ARG_HEX = 0,  /* unknown meaning: shown in hex */
    CLI_ARG_INT,      /* a number (fd, len, pid) */
    CLI_ARG_STR,      /* pointer to a NUL-terminated string */
    CLI_ARG_BUF,      /* pointer to `len_arg` bytes: a preview is read */
    CLI_ARG_STRUCT,   /* pointer to a struct: chosen fields (fields[]) */
} cli_arg_kind;

#define CLI_MAX_FIELDS 4

/* One shown field of a CLI_ARG_STRUCT argument. */
typedef struct cli_field {
    const char *name;
    int is_text;              /* text holds an escaped string */
    uint64_t value;
    char text[96];
    int read_status;          /* vmt_status of reading it */
    vmt_va fault_va;
} cli_field;

#define CLI_STR_MAX 128     /* longest string read from the guest */
#define CLI_PREVIEW_MAX 32  /* bytes of a buffer shown */

typedef struct cli_arg {
    const char *name;
    cli_arg_kind kind;
    uint64_t value;
    int read_status;          /* vmt_status of reading STR/BUF (VMT_OK when read) */
    vmt_va fault_va;          /* first unreadable address when NOT_PRESENT */
    char text[CLI_STR_MAX];   /* STR: the string; BUF: escaped preview */
    size_t nbytes;            /* STR: length, BUF: bytes previewed */
    int truncated;            /* the string/buffer is longer than shown */
    const char *enum_name;    /* CLI_ARG_INT from an enum: the value's name, or NULL */
    unsigned nfields;         /* CLI_ARG_STRUCT */
    cli_field fields[CLI_MAX_FIELDS];
} cli_arg;

typedef struct cli_call {
    const char *symbol;
    int is_return;
    uint64_t count;
    vmt_vcpu vcpu;
    vmt_va rip;
    unsigned nargs;
    cli_arg args[6];
    const char *ret_name;     /* for returns: "fd", "pid", ... or "value" */
    uint64_t ret_value;
    int have_task;            /* Linux guests: the vCPU's current task */
    int32_t pid, tgid;
    char comm[17];
    unsigned pf_injected;     /* --inject-pf: #PFs injected before this decode */
    char pf_refused[128];     /* --inject-pf: why a not-present argument got no #PF ("" none) */
} cli_call;

/* Where prototypes come from: an ELF guest's DWARF and/or a Linux guest's
 * BTF (either may be absent: then every symbol shows raw registers). The
 * decoder caches one prototype per symbol. */
typedef struct cli_decoder cli_decoder;
struct vmt_os;
/* elf_path may be NULL; os may be NULL. A guest without DWARF still gets a
 * decoder (note says why there are no types). 0, or -1 with err. */
int cli_decoder_open(const char *elf_path, struct vmt_os *os, cli_decoder **out, char *err, size_t err_len);
void cli_decoder_close(cli_decoder *dec);
/* "" or one line saying why arguments are raw. */
const char *cli_decoder_note(const cli_decoder *dec);
/* 1 when the decoder has a prototype for the symbol. */
int cli_decoder_knows(cli_decoder *dec, const char *symbol);
/* Decode a hit: arguments per the symbol's prototype (none: six raw SysV
 * registers), strings, buffer previews and struct fields from guest memory
 * through the hit's page tables. */
void cli_decode_hit(cli_decoder *dec, const vmt_hit *hit, cli_call *out);
/* The same from registers and a reader, for callers without a monitor hit
 * (out->is_return and out->count set by the caller beforehand). */
struct vmt_vreader;
void cli_decode_regs(cli_decoder *dec, const char *symbol, vmt_vcpu vcpu, const vmt_regs *regs,
                     const struct vmt_vreader *rd, cli_call *out);

/* ---- logging ---- */

typedef struct cli_log {
    FILE *out;
    int json;
    int quiet;
    uint64_t lines;
} cli_log;

void cli_log_call(cli_log *l, const cli_call *c);
void cli_log_page_event(cli_log *l, const vmt_ptm_event *ev, const char *symbol);
void cli_log_ucall(cli_log *l, const vmt_ucall *uc);
/* Guest-supplied text (ucall name/text, serial lines, detector results) made
 * safe for a log line: printable ASCII as is, a backslash doubled, any other
 * byte as \xNN. Always NUL-terminated, cut only between whole escapes.
 * Returns out. */
const char *cli_escape_guest_text(const char *in, char *out, size_t out_len);
void cli_log_serial(cli_log *l, const char *line);
void cli_log_note(cli_log *l, const char *what, const char *text);
/* The guest's hash of a function's entry bytes against the ELF's. */
void cli_log_entry_check(cli_log *l, const char *symbol, uint64_t guest_hash, uint64_t elf_hash);
void cli_log_trace(cli_log *l, const vmt_event *ev, const vmt_response *resp, vmt_status st);

/* What the summary shows. */
typedef struct cli_summary {
    const char *driver;
    const char *guest;
    const char *mechanism;      /* vmt_monitor_describe() */
    double wall_seconds;
    const vmtrap_options *opts;
    const vmt_monitor *monitor;
    const vmt_monitor_stats *stats;
    int have_driver_stats;
    vmt_driver_stats dstats;
    const char *end_reason;     /* "guest done", "time limit", "signal", ... */
    /* Guest's own counts per hook (from REPORT ucalls), -1 when not reported. */
    int64_t guest_counts[CLI_MAX_HOOKS];
    int counts_match;           /* every hook with a guest count matches */
    unsigned entry_checked;     /* d1.<symbol> hashes compared with the ELF */
    unsigned entry_mismatch;    /* ... that differ */
    vmt_bpm_controller controller;
} cli_summary;

void cli_log_summary(cli_log *l, const cli_summary *s);

/* ---- the ELF file as ground truth (elfbytes.c) ---- */

/* Copy len bytes of the file's PT_LOAD contents at va; 0, or -1 when va is
 * not backed by file bytes. */
int cli_elf_read_va(const char *path, uint64_t va, void *buf, size_t len);
/* Physical address the loader puts va at (PT_LOAD p_paddr); 0 or -1. */
int cli_elf_va_to_pa(const char *path, uint64_t va, size_t len, uint64_t *pa);
/* Why a detector can fail with this breakpoint mechanism ("" when no known
 * reason). */
const char *cli_detector_why(unsigned id, vmt_bpm_controller ctl);

/* ---- running ---- */

/* Run `vmtrap run` / `vmtrap demo`; returns the exit code. */
int cli_run(const vmtrap_options *o, const char *argv0);

/* `vmtrap run --driver qemu ...` (tools/qemu_cmd.c): argv as main's. */
int cli_is_qemu_run(int argc, char **argv);
int cli_qemu_main(int argc, char **argv);

/* `vmtrap snapshot info|convert ...` (tools/snapshot_cmd.c); argv[0] is "snapshot". */
int cli_snapshot_main(int argc, char **argv);

/* `vmtrap snapshot save ...` (tools/savepoint_cmd.c); argv[0] is "snapshot", argv[1] "save". */
int cli_snapshot_save_main(int argc, char **argv);

/* `vmtrap run --snapshot FILE ...` (tools/resume_cmd.c); argv[0] is "run". */
int cli_resume_main(int argc, char **argv);

/* ---- --watch-pages WHO:VA[,VA|START-END...] (tools/watch_pages.c) ---- */

#define CLI_WATCH_MAX 256
#define CLI_WATCH_GROUPS 8
#define CLI_WATCH_TAG_BASE (1ull << 48) /* ptm tags of these watches (above any hook index) */

typedef struct cli_watch_group {
    char who[32];           /* as given: pid or comm */
    int32_t pid;            /* parsed pid, -1 for a comm */
    size_t first, count;    /* its VAs in cli_watch.va */
    int32_t task_pid;       /* the task found */
    char comm[17];
    uint64_t root;          /* its mm->pgd, physical */
    int want_stack, want_heap; /* symbolic regions given ("stack", "heap") */
} cli_watch_group;

typedef struct cli_watch_va {
    uint64_t va;            /* page-aligned */
    unsigned group;
    int refused;
    char why[160];
    int present;
    uint64_t pa;
} cli_watch_va;

typedef struct cli_watch {
    cli_log *log;
    cli_watch_group groups[CLI_WATCH_GROUPS];
    unsigned ngroups;
    cli_watch_va va[CLI_WATCH_MAX];
    size_t n, refused;
    unsigned region_refusals; /* "stack"/"heap" that could not be resolved */
    vmt_view view;
    uint64_t events[4];     /* by vmt_ptm_event_kind */
} cli_watch;

struct vmt_os;
/* Add one --watch-pages value; -1 with a message on stderr. */
int cli_watch_parse(cli_watch *w, const char *spec);
/* Find each process (OS layer), monitor its VAs in `view`; prints one
 * "watch" line per VA (watching or refused, with the reason). Returns the
 * number of VAs watched. */
int cli_watch_arm(cli_watch *w, struct vmt_os *os, vmt_ptm *ptm, vmt_view view);
/* A page event: printed and counted when it is one of ours (returns 1). */
int cli_watch_on_event(cli_watch *w, const vmt_ptm_event *ev);
void cli_watch_summary(cli_watch *w, vmt_ptm *ptm);

#endif
