/*
 * tools/decode.c — turning a hook hit into a decoded call.
 *
 * Design: the symbol's prototype comes from the guest's own type
 * information — an ELF guest's DWARF (vmt_dwarf_proto) or a Linux kernel's
 * BTF (vmt_os_proto) — and one shared decoder (vmt_proto_decode_*) reads
 * the arguments: integers and enums (with names), strings, buffers sized by
 * their length parameter, struct pointers by a few chosen fields. No
 * per-guest signature table: what the type information cannot say is only
 * NAMED below (C return values have no names; svc_exit is assembly, its C
 * declaration has no parameter names), so the JSON keys stay the ones
 * tests/cli checks. A symbol with no prototype shows its six SysV register
 * arguments in hex. With a Linux OS handle every hit also carries the
 * current task (pid, tgid, comm) of its vCPU.
 *
 * Bounds: guest memory is read through vmt_hit_read() (the hit's page
 * tables): a paged-out string or buffer is reported as such
 * (read_status = VMT_E_NOT_PRESENT, fault_va), never guessed; a guest
 * length only bounds a preview (CLI_PREVIEW_MAX bytes). Shown text is
 * escaped, and `truncated` says when escaping or the bound cut it.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vmtrap/os.h"
#include "vmtrap/proto.h"

#define CLI_DECODER_MAX_PROTOS 256

/* Names the type information cannot carry (see the header comment). */
static const struct {
    const char *symbol, *ret, *arg0;
} names_not_in_types[] = {
    { "svc_open", "fd", NULL },
    { "svc_write", "written", NULL },
    { "svc_spawn", "pid", NULL },
    { "svc_exit", NULL, "pid" },
};

typedef struct cached_proto {
    char *symbol;
    int have;               /* 0: known to have no prototype */
    vmt_proto p;
} cached_proto;

struct cli_decoder {
    vmt_dwarf *dw;
    vmt_os *os;
    char note[200];
    size_t n;
    cached_proto *cache[CLI_DECODER_MAX_PROTOS];
};

static const char *const raw_names[6] = { "rdi", "rsi", "rdx", "rcx", "r8", "r9" };

int cli_decoder_open(const char *elf_path, struct vmt_os *os, cli_decoder **out, char *err, size_t err_len)
{
    cli_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, err_len, "no memory for the decoder");
        return -1;
    }
    d->os = os;
    if (elf_path) {
        char why[256];
        if (vmt_dwarf_open(elf_path, &d->dw, why, sizeof why) != VMT_OK)
            snprintf(d->note, sizeof d->note, "arguments are raw registers: %.160s", why);
    }
    if (os) {
        vmt_os_info in;
        vmt_os_get_info(os, &in);
        if (!in.has_btf)
            snprintf(d->note, sizeof d->note, "arguments are raw registers: %.160s", in.btf_note);
    }
    *out = d;
    return 0;
}

void cli_decoder_close(cli_decoder *dec)
{
    if (!dec)
        return;
    for (size_t i = 0; i < dec->n; i++) {
        free(dec->cache[i]->symbol);
        free(dec->cache[i]);
    }
    vmt_dwarf_close(dec->dw);
    free(dec);
}

const char *cli_decoder_note(const cli_decoder *dec)
{
    return dec ? dec->note : "";
}

static void apply_names(vmt_proto *p, const char *symbol)
{
    snprintf(p->ret.name, sizeof p->ret.name, "value");
    for (size_t i = 0; i < sizeof names_not_in_types / sizeof names_not_in_types[0]; i++) {
        if (strcmp(names_not_in_types[i].symbol, symbol) != 0)
            continue;
        if (names_not_in_types[i].ret)
            snprintf(p->ret.name, sizeof p->ret.name, "%s", names_not_in_types[i].ret);
        if (names_not_in_types[i].arg0 && p->nparams > 0 && strcmp(p->params[0].name, "arg0") == 0)
            snprintf(p->params[0].name, sizeof p->params[0].name, "%s", names_not_in_types[i].arg0);
    }
}

static const vmt_proto *proto_of(cli_decoder *dec, const char *symbol)
{
    if (!dec || !symbol)
        return NULL;
    for (size_t i = 0; i < dec->n; i++)
        if (strcmp(dec->cache[i]->symbol, symbol) == 0)
            return dec->cache[i]->have ? &dec->cache[i]->p : NULL;
    cached_proto *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->symbol = strdup(symbol);
    if (!c->symbol) {
        free(c);
        return NULL;
    }
    c->have = (dec->os && vmt_os_proto(dec->os, symbol, &c->p) == VMT_OK) ||
              (dec->dw && vmt_dwarf_proto(dec->dw, symbol, &c->p) == VMT_OK);
    if (c->have)
        apply_names(&c->p, symbol);
    if (dec->n == CLI_DECODER_MAX_PROTOS) { /* not cached: decode, then forget */
        free(dec->cache[0]->symbol);
        free(dec->cache[0]);
        memmove(dec->cache, dec->cache + 1, sizeof dec->cache[0] * (CLI_DECODER_MAX_PROTOS - 1));
        dec->n--;
    }
    dec->cache[dec->n++] = c;
    return c->have ? &c->p : NULL;
}

int cli_decoder_knows(cli_decoder *dec, const char *symbol)
{
    return proto_of(dec, symbol) != NULL;
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

static vmt_status hit_vread(void *ctx, uint64_t va, void *buf, size_t len, size_t *done)
{
    size_t got = 0;
    vmt_status st = vmt_hit_read(ctx, va, buf, len, &got);
    *done = st == VMT_OK ? len : got;
    return st;
}

static void to_cli_arg(const vmt_value *v, cli_arg *a)
{
    a->name = v->name;
    a->value = v->raw;
    a->read_status = v->read_status;
    a->fault_va = v->fault_va;
    switch (v->kind) {
    case VMT_PARAM_INT:
    case VMT_PARAM_UINT:
    case VMT_PARAM_ENUM:
        a->kind = CLI_ARG_INT;
        a->enum_name = v->enum_name;
        break;
    case VMT_PARAM_STRING:
    case VMT_PARAM_BUFFER:
        a->kind = v->kind == VMT_PARAM_STRING ? CLI_ARG_STR : CLI_ARG_BUF;
        a->nbytes = v->nbytes;
        a->truncated = v->truncated;
        /* Guest bytes are shown escaped, so a hostile string can neither
         * break a log line nor the JSON's UTF-8; cut by escaping = truncated. */
        if (escape_bytes((const uint8_t *)v->text, v->nbytes, a->text, sizeof a->text) < v->nbytes)
            a->truncated = 1;
        break;
    case VMT_PARAM_STRUCT:
        a->kind = v->raw ? CLI_ARG_STRUCT : CLI_ARG_HEX;
        a->nfields = v->nfields < CLI_MAX_FIELDS ? v->nfields : CLI_MAX_FIELDS;
        for (unsigned i = 0; i < a->nfields; i++) {
            const vmt_field_value *f = &v->fields[i];
            cli_field *c = &a->fields[i];
            c->name = f->name;
            c->value = f->raw;
            c->read_status = f->read_status;
            c->fault_va = f->fault_va;
            c->is_text = f->kind == VMT_PARAM_STRING || f->kind == VMT_PARAM_CHARS;
            if (c->is_text)
                escape_bytes((const uint8_t *)f->text, f->nbytes, c->text, sizeof c->text);
        }
        break;
    default:
        a->kind = CLI_ARG_HEX;
    }
}

void cli_decode_regs(cli_decoder *dec, const char *symbol, vmt_vcpu vcpu, const vmt_regs *regs,
                     const vmt_vreader *rd, cli_call *out)
{
    out->symbol = symbol;
    out->vcpu = vcpu;
    out->rip = regs->rip;
    if (dec && dec->os) {
        vmt_os_task t;
        if (vmt_os_current_task(dec->os, vcpu, &t) == VMT_OK) {
            out->have_task = 1;
            out->pid = t.pid;
            out->tgid = t.tgid;
            snprintf(out->comm, sizeof out->comm, "%s", t.comm);
        }
    }
    const vmt_proto *p = proto_of(dec, symbol);
    if (out->is_return) {
        out->ret_name = p ? p->ret.name : "value";
        out->ret_value = regs->rax;
        return;
    }
    if (!p) {
        out->nargs = 6;
        for (unsigned i = 0; i < 6; i++) {
            out->args[i].name = raw_names[i];
            out->args[i].kind = CLI_ARG_HEX;
            out->args[i].value = vmt_regs_sysv_arg(regs, i);
        }
        return;
    }
    vmt_value v[VMT_PROTO_MAX_PARAMS];
    vmt_proto_decode_args(p, regs, rd, v);
    out->nargs = p->nparams;
    for (unsigned i = 0; i < p->nparams; i++)
        to_cli_arg(&v[i], &out->args[i]);
}

void cli_decode_hit(cli_decoder *dec, const vmt_hit *hit, cli_call *out)
{
    memset(out, 0, sizeof *out);
    out->is_return = hit->is_return;
    out->count = hit->count;
    vmt_vreader rd = { hit_vread, (void *)hit };
    cli_decode_regs(dec, hit->symbol, hit->vcpu, &hit->regs, &rd, out);
}
