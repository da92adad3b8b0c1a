/*
 * tools/decode.c — turning a hook hit into a decoded call.
 *
 * Design: a small table of signatures for the workload guest's services
 * (svc_open(path) -> fd, svc_write(fd, buf, len) -> written,
 * svc_spawn(name) -> pid, svc_exit(pid)); any other symbol is shown as its
 * six SysV register arguments in hex. Arguments are read with vmt_hit_arg()
 * and guest memory with vmt_hit_read()/vmt_hit_read_str(), which translate
 * through the guest's own page tables: a paged-out string or buffer is
 * reported as such (read_status = VMT_E_NOT_PRESENT, fault_va), never
 * guessed. Guest values are adversarial: a length only bounds how much is
 * previewed (at most CLI_PREVIEW_MAX bytes), it never sizes an allocation.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct arg_sig {
    const char *name;
    cli_arg_kind kind;
    int len_arg; /* CLI_ARG_BUF: index of the length argument */
} arg_sig;

typedef struct call_sig {
    const char *symbol;
    unsigned nargs;
    arg_sig args[3];
    const char *ret_name; /* NULL: returns nothing of interest */
} call_sig;

static const call_sig services[] = {
    { "svc_open", 1, { { "path", CLI_ARG_STR, 0 } }, "fd" },
    { "svc_write", 3, { { "fd", CLI_ARG_INT, 0 }, { "buf", CLI_ARG_BUF, 2 }, { "len", CLI_ARG_INT, 0 } },
      "written" },
    { "svc_spawn", 1, { { "name", CLI_ARG_STR, 0 } }, "pid" },
    { "svc_exit", 1, { { "pid", CLI_ARG_INT, 0 } }, NULL },
};

static const char *const raw_names[6] = { "rdi", "rsi", "rdx", "rcx", "r8", "r9" };

static const call_sig *find_sig(const char *symbol)
{
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
        if (strcmp(services[i].symbol, symbol) == 0)
            return &services[i];
    return NULL;
}

int cli_known_service(const char *symbol)
{
    return find_sig(symbol) != NULL;
}

/* Escape bytes for a one-line preview: printable ASCII as is, the rest \xNN.
 * Returns how many of the n bytes fit (escaping can take 4 bytes per byte). */
static size_t escape_bytes(const uint8_t *b, size_t n, char *out, size_t out_len)
{
    size_t o = 0, i;
    for (i = 0; i < n && o + 5 < out_len; i++) {
        if (b[i] >= 0x80) { /* isprint() is locale-dependent: never pass high bytes */
            o += (size_t)snprintf(out + o, out_len - o, "\\x%02x", b[i]);
            continue;
        }
        if (b[i] == '\\' || b[i] == '"') {
            out[o++] = '\\';
            out[o++] = (char)b[i];
        } else if (isprint(b[i])) {
            out[o++] = (char)b[i];
        } else if (b[i] == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            o += (size_t)snprintf(out + o, out_len - o, "\\x%02x", b[i]);
        }
    }
    out[o < out_len ? o : out_len - 1] = 0;
    return i;
}

static void read_string_arg(const vmt_hit *hit, cli_arg *a)
{
    char buf[CLI_STR_MAX];
    vmt_va fault = 0;
    vmt_status st = vmt_hit_read_str(hit, a->value, buf, sizeof buf, &fault);
    a->read_status = st;
    a->fault_va = fault;
    a->nbytes = strlen(buf);
    /* A string that filled the buffer may go on: say so. */
    a->truncated = st == VMT_OK && a->nbytes == sizeof buf - 1;
    /* Guest bytes are shown escaped (printable ASCII as is), so a hostile
     * string can neither break a log line nor the JSON's UTF-8. */
    /* Escaping may not fit all of it: then what is shown is cut too. */
    if (escape_bytes((const uint8_t *)buf, a->nbytes, a->text, sizeof a->text) < a->nbytes)
        a->truncated = 1;
}

static void read_buffer_arg(const vmt_hit *hit, cli_arg *a, uint64_t len)
{
    uint8_t bytes[CLI_PREVIEW_MAX];
    size_t want = len < sizeof bytes ? (size_t)len : sizeof bytes;
    size_t done = 0;
    vmt_status st = want ? vmt_hit_read(hit, a->value, bytes, want, &done) : VMT_OK;
    if (st == VMT_OK)
        done = want;
    else if (st != VMT_E_NOT_PRESENT)
        done = 0;
    a->read_status = st;
    a->fault_va = st == VMT_E_NOT_PRESENT ? a->value + done : 0;
    a->nbytes = done;
    a->truncated = len > want;
    if (escape_bytes(bytes, done, a->text, sizeof a->text) < done)
        a->truncated = 1; /* escaping did not fit all of the preview */
}

void cli_decode_hit(const vmt_hit *hit, cli_call *out)
{
    memset(out, 0, sizeof *out);
    out->symbol = hit->symbol;
    out->is_return = hit->is_return;
    out->count = hit->count;
    out->vcpu = hit->vcpu;
    out->rip = hit->regs.rip;
    const call_sig *sig = find_sig(hit->symbol);
    if (hit->is_return) {
        out->ret_name = sig && sig->ret_name ? sig->ret_name : "value";
        out->ret_value = hit->regs.rax;
        return;
    }
    if (!sig) {
        out->nargs = 6;
        for (unsigned i = 0; i < 6; i++) {
            out->args[i].name = raw_names[i];
            out->args[i].kind = CLI_ARG_HEX;
            (void)vmt_hit_arg(hit, i, &out->args[i].value);
        }
        return;
    }
    out->nargs = sig->nargs;
    for (unsigned i = 0; i < sig->nargs; i++) {
        cli_arg *a = &out->args[i];
        a->name = sig->args[i].name;
        a->kind = sig->args[i].kind;
        (void)vmt_hit_arg(hit, i, &a->value);
    }
    for (unsigned i = 0; i < sig->nargs; i++) {
        cli_arg *a = &out->args[i];
        if (a->kind == CLI_ARG_STR)
            read_string_arg(hit, a);
        else if (a->kind == CLI_ARG_BUF)
            read_buffer_arg(hit, a, out->args[sig->args[i].len_arg].value);
    }
}
