/*
 * tools/log.c — the run's output: readable lines or one JSON object per line.
 *
 * Design: every event is rendered by exactly one function here, in both
 * forms, so the readable log and the JSON log always carry the same facts.
 * JSON objects are built with json-c and printed compactly, one per line,
 * each with an "event" field ("call", "return", "page-in", "page-out",
 * "remap", "guest", "detector", "serial", "note", "summary") so `jq` can
 * select them. Addresses are hex strings ("0x..."), counts and small values
 * are JSON numbers. Output is flushed per line so a pipe sees events live.
 */
#include <inttypes.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

static json_object *hex(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "0x%" PRIx64, v);
    return json_object_new_string(b);
}

static void emit_json(cli_log *l, json_object *o)
{
    fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
          l->out);
    fputc('\n', l->out);
    fflush(l->out);
    json_object_put(o);
    l->lines++;
}

static void emit_text(cli_log *l, const char *tag, const char *text)
{
    fprintf(l->out, "%-7s %s\n", tag, text);
    fflush(l->out);
    l->lines++;
}

const char *cli_escape_guest_text(const char *in, char *out, size_t out_len)
{
    if (!out || !out_len)
        return out;
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)(in ? in : ""); *c; c++) {
        char esc[5];
        size_t n;
        if (*c == '\\') {
            memcpy(esc, "\\\\", 2);
            n = 2;
        } else if (*c >= 0x20 && *c < 0x7f) { /* not isprint(): locale-independent */
            esc[0] = (char)*c;
            n = 1;
        } else {
            snprintf(esc, sizeof esc, "\\x%02x", *c);
            n = 4;
        }
        if (o + n >= out_len)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = 0;
    return out;
}

/* A readable "name=value" for one argument. */
static void format_arg(const cli_arg *a, char *buf, size_t len)
{
    switch (a->kind) {
    case CLI_ARG_STRUCT: {
        size_t n = (size_t)snprintf(buf, len, "%s={", a->name);
        for (unsigned i = 0; i < a->nfields && n < len; i++) {
            const cli_field *f = &a->fields[i];
            const char *sep = i ? ", " : "";
            if (f->read_status != VMT_OK)
                n += (size_t)snprintf(buf + n, len - n, "%s%s=<%s at 0x%" PRIx64 ">", sep, f->name,
                                      f->read_status == VMT_E_NOT_PRESENT ? "not present" : "unreadable",
                                      f->fault_va);
            else if (f->is_text)
                n += (size_t)snprintf(buf + n, len - n, "%s%s=\"%s\"", sep, f->name, f->text);
            else
                n += (size_t)snprintf(buf + n, len - n, "%s%s=0x%" PRIx64, sep, f->name, f->value);
        }
        if (n < len)
            snprintf(buf + n, len - n, "}");
        break;
    }
    case CLI_ARG_INT:
        if (a->enum_name)
            snprintf(buf, len, "%s=%s", a->name, a->enum_name);
        else
            snprintf(buf, len, "%s=%" PRId64, a->name, (int64_t)a->value);
        break;
    case CLI_ARG_HEX: snprintf(buf, len, "%s=0x%" PRIx64, a->name, a->value); break;
    case CLI_ARG_STR:
    case CLI_ARG_BUF: {
        const char *more = a->truncated ? "..." : "";
        if (a->read_status == VMT_OK)
            snprintf(buf, len, "%s=\"%s\"%s", a->name, a->text, more);
        else if (a->read_status == VMT_E_NOT_PRESENT)
            snprintf(buf, len, "%s=0x%" PRIx64 " \"%s\"<paged out at 0x%" PRIx64 ">", a->name, a->value,
                     a->text, a->fault_va);
        else
            snprintf(buf, len, "%s=0x%" PRIx64 " <unreadable: %s>", a->name, a->value,
                     vmt_strerror((vmt_status)a->read_status));
        break;
    }
    }
}

static json_object *struct_json(const cli_arg *a)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "va", hex(a->value));
    for (unsigned i = 0; i < a->nfields; i++) {
        const cli_field *f = &a->fields[i];
        if (f->read_status != VMT_OK) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "error", json_object_new_string(f->read_status == VMT_E_NOT_PRESENT
                                                                          ? "paged-out"
                                                                          : vmt_strerror((vmt_status)f->read_status)));
            json_object_object_add(e, "fault_va", hex(f->fault_va));
            json_object_object_add(o, f->name, e);
        } else if (f->is_text) {
            json_object *t = json_object_new_object();
            json_object_object_add(t, "string", json_object_new_string(f->text));
            json_object_object_add(o, f->name, t);
        } else {
            json_object_object_add(o, f->name, json_object_new_int64((int64_t)f->value));
        }
    }
    return o;
}

static json_object *arg_json(const cli_arg *a)
{
    switch (a->kind) {
    case CLI_ARG_STRUCT: return struct_json(a);
    case CLI_ARG_INT:
        if (a->enum_name)
            return json_object_new_string(a->enum_name);
        return json_object_new_int64((int64_t)a->value);
    case CLI_ARG_HEX: return hex(a->value);
    case CLI_ARG_STR:
    case CLI_ARG_BUF: break;
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "va", hex(a->value));
    if (a->read_status == VMT_OK) {
        json_object_object_add(o, a->kind == CLI_ARG_STR ? "string" : "preview",
                               json_object_new_string(a->text));
        json_object_object_add(o, "truncated", json_object_new_boolean(a->truncated));
    } else {
        json_object_object_add(o, "partial", json_object_new_string(a->text));
        json_object_object_add(o, "error", json_object_new_string(a->read_status == VMT_E_NOT_PRESENT
                                                                      ? "paged-out"
                                                                      : vmt_strerror((vmt_status)a->read_status)));
        if (a->read_status == VMT_E_NOT_PRESENT)
            json_object_object_add(o, "fault_va", hex(a->fault_va));
    }
    return o;
}

void cli_log_call(cli_log *l, const cli_call *c)
{
    if (l->quiet)
        return;
    if (l->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string(c->is_return ? "return" : "call"));
        json_object_object_add(o, "symbol", json_object_new_string(c->symbol));
        json_object_object_add(o, "n", json_object_new_int64((int64_t)c->count));
        json_object_object_add(o, "vcpu", json_object_new_int64(c->vcpu));
        json_object_object_add(o, "rip", hex(c->rip));
        if (c->have_task) {
            char comm[sizeof c->comm * 4];
            cli_escape_guest_text(c->comm, comm, sizeof comm);
            json_object_object_add(o, "pid", json_object_new_int(c->pid));
            json_object_object_add(o, "tgid", json_object_new_int(c->tgid));
            json_object_object_add(o, "comm", json_object_new_string(comm));
        }
        if (c->is_return) {
            json_object_object_add(o, c->ret_name, json_object_new_int64((int64_t)c->ret_value));
        } else {
            json_object *args = json_object_new_object();
            for (unsigned i = 0; i < c->nargs; i++)
                json_object_object_add(args, c->args[i].name, arg_json(&c->args[i]));
            json_object_object_add(o, "args", args);
        }
        emit_json(l, o);
        return;
    }
    char line[1024];
    size_t n;
    if (c->is_return) {
        snprintf(line, sizeof line, "%s #%" PRIu64 " -> %s=%" PRId64, c->symbol, c->count, c->ret_name,
                 (int64_t)c->ret_value);
        emit_text(l, "return", line);
        return;
    }
    n = 0;
    if (c->have_task) {
        char comm[sizeof c->comm * 4];
        cli_escape_guest_text(c->comm, comm, sizeof comm);
        n = (size_t)snprintf(line, sizeof line, "%d %s ", c->pid, comm);
    }
    n += (size_t)snprintf(line + n, sizeof line - n, "%s(", c->symbol);
    for (unsigned i = 0; i < c->nargs && n < sizeof line; i++) {
        char a[400];
        format_arg(&c->args[i], a, sizeof a);
        n += (size_t)snprintf(line + n, sizeof line - n, "%s%s", i ? ", " : "", a);
    }
    if (n < sizeof line)
        snprintf(line + n, sizeof line - n, ") #%" PRIu64 " vcpu%u", c->count, c->vcpu);
    emit_text(l, "call", line);
}

static const char *page_event_name(vmt_ptm_event_kind k)
{
    switch (k) {
    case VMT_PTM_PAGE_IN: return "page-in";
    case VMT_PTM_PAGE_OUT: return "page-out";
    case VMT_PTM_REMAP: return "remap";
    }
    return "page-?";
}

void cli_log_page_event(cli_log *l, const vmt_ptm_event *ev, const char *symbol)
{
    if (l->quiet)
        return;
    const char *name = page_event_name(ev->kind);
    if (l->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string(name));
        json_object_object_add(o, "symbol", json_object_new_string(symbol ? symbol : "?"));
        json_object_object_add(o, "va", hex(ev->ctx.va));
        json_object_object_add(o, "root", hex(ev->ctx.root));
        if (ev->kind != VMT_PTM_PAGE_IN)
            json_object_object_add(o, "old_pa", hex(ev->old_pa));
        if (ev->kind != VMT_PTM_PAGE_OUT) {
            json_object_object_add(o, "new_pa", hex(ev->new_pa));
            json_object_object_add(o, "page_size", json_object_new_int64((int64_t)ev->page_size));
        }
        emit_json(l, o);
        return;
    }
    char line[256];
    int n = snprintf(line, sizeof line, "%-8s %s va=0x%" PRIx64, name, symbol ? symbol : "?", ev->ctx.va);
    if (ev->kind != VMT_PTM_PAGE_IN && n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, " old_pa=0x%" PRIx64, ev->old_pa);
    if (ev->kind != VMT_PTM_PAGE_OUT && n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, " new_pa=0x%" PRIx64 " (%" PRIu64 " KiB page)",
                 ev->new_pa, ev->page_size / 1024);
    emit_text(l, "page", line);
}

void cli_log_ucall(cli_log *l, const vmt_ucall *uc)
{
    int detector = uc->cmd == VMT_UCALL_DETECTOR;
    /* Detector results and the final DONE are shown even in quiet mode. */
    if (l->quiet && !detector && uc->cmd != VMT_UCALL_DONE && uc->cmd != VMT_UCALL_ASSERT_FAIL)
        return;
    /* The guest wrote name and text: a hostile guest must neither forge log
     * lines nor make the JSON log invalid UTF-8. */
    vmt_ucall shown = *uc;
    cli_escape_guest_text(uc->name, shown.name, sizeof shown.name);
    cli_escape_guest_text(uc->text, shown.text, sizeof shown.text);
    uc = &shown;
    if (l->json) {
        json_object *o = json_object_new_object();
        if (detector) {
            json_object_object_add(o, "event", json_object_new_string("detector"));
            json_object_object_add(o, "id", json_object_new_int64((int64_t)uc->args[0]));
            json_object_object_add(o, "name", json_object_new_string(uc->name));
            json_object_object_add(o, "pass", json_object_new_boolean(uc->args[1] == 1));
            json_object_object_add(o, "detail", json_object_new_string(uc->text));
        } else {
            json_object_object_add(o, "event", json_object_new_string("guest"));
            json_object_object_add(o, "kind", json_object_new_string(vmt_ucall_cmd_name(uc->cmd)));
            json_object_object_add(o, "seq", json_object_new_int64((int64_t)uc->seq));
            if (uc->name[0])
                json_object_object_add(o, "name", json_object_new_string(uc->name));
            if (uc->text[0])
                json_object_object_add(o, "text", json_object_new_string(uc->text));
            json_object *args = json_object_new_array();
            for (uint32_t i = 0; i < uc->nargs && i < VMT_UCALL_MAX_ARGS; i++)
                json_object_array_add(args, json_object_new_int64((int64_t)uc->args[i]));
            json_object_object_add(o, "args", args);
        }
        emit_json(l, o);
        return;
    }
    char line[1024]; /* escaped name (< 64) + text (< 256) fit whole */
    if (detector) {
        snprintf(line, sizeof line, "%-4s #%" PRIu64 " %s%s%s", uc->args[1] == 1 ? "PASS" : "FAIL",
                 uc->args[0], uc->name, uc->text[0] ? ": " : "", uc->text);
        emit_text(l, "detect", line);
        return;
    }
    vmt_ucall_format(uc, line, sizeof line);
    emit_text(l, "guest", line);
}

void cli_log_serial(cli_log *l, const char *raw)
{
    if (l->quiet)
        return;
    char line[4 * 256 + 1]; /* the guest's bytes, escaped (longer lines are cut) */
    cli_escape_guest_text(raw, line, sizeof line);
    if (l->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string("serial"));
        json_object_object_add(o, "line", json_object_new_string(line));
        emit_json(l, o);
        return;
    }
    emit_text(l, "serial", line);
}

void cli_log_note(cli_log *l, const char *what, const char *text)
{
    if (l->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string("note"));
        json_object_object_add(o, "what", json_object_new_string(what));
        json_object_object_add(o, "text", json_object_new_string(text));
        emit_json(l, o);
        return;
    }
    char line[1024];
    snprintf(line, sizeof line, "%s: %s", what, text);
    emit_text(l, "vmtrap", line);
}

/* ---- --trace ---- */

static void actions_text(uint32_t a, char *buf, size_t len)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {
        { VMT_RESP_DENY, "deny" },           { VMT_RESP_REINJECT, "reinject" },
        { VMT_RESP_STEP, "step" },           { VMT_RESP_FAST_STEP, "fast-step" },
        { VMT_RESP_EMULATE, "emulate" },     { VMT_RESP_SWITCH_VIEW, "switch-view" },
        { VMT_RESP_SET_REGS, "set-regs" },   { VMT_RESP_IO_VALUE, "io-value" },
    };
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((a & names[i].bit) && n < len)
            n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "+" : "", names[i].name);
    if (!n)
        snprintf(buf, len, "continue");
}

static void event_detail(const vmt_event *ev, char *buf, size_t len)
{
    char acc[4];
    switch (ev->kind) {
    case VMT_EVENT_MEM_ACCESS:
        snprintf(buf, len, "%s gpa=0x%" PRIx64 " gva=0x%" PRIx64 "%s", vmt_access_str(ev->u.mem.access, acc),
                 ev->u.mem.gpa, ev->u.mem.gva, ev->u.mem.in_pt_walk ? " (pt walk)" : "");
        break;
    case VMT_EVENT_BREAKPOINT: snprintf(buf, len, "gpa=0x%" PRIx64, ev->u.bp.gpa); break;
    case VMT_EVENT_CR_WRITE:
        snprintf(buf, len, "cr%u 0x%" PRIx64 " -> 0x%" PRIx64, ev->u.cr.cr, ev->u.cr.old_value, ev->u.cr.new_value);
        break;
    case VMT_EVENT_HW_BREAKPOINT: snprintf(buf, len, "dr%u 0x%" PRIx64, ev->u.hwbp.index, ev->u.hwbp.address); break;
    case VMT_EVENT_IO:
        snprintf(buf, len, "port 0x%x %s 0x%x", ev->u.io.port, ev->u.io.is_write ? "out" : "in", ev->u.io.value);
        break;
    case VMT_EVENT_STOPPED: snprintf(buf, len, "%s", vmt_stop_reason_name(ev->u.stop.reason)); break;
    default: buf[0] = 0; break;
    }
}

void cli_log_trace(cli_log *l, const vmt_event *ev, const vmt_response *resp, vmt_status st)
{
    char acts[128], detail[160];
    actions_text(resp->actions, acts, sizeof acts);
    size_t n = strlen(acts);
    if (resp->actions & VMT_RESP_EMULATE)
        n += (size_t)snprintf(acts + n, sizeof acts - n, " emulate_view=%u", resp->emulate_view);
    if ((resp->actions & VMT_RESP_FAST_STEP) && n < sizeof acts)
        n += (size_t)snprintf(acts + n, sizeof acts - n, " step_view=%u", resp->step_view);
    if ((resp->actions & VMT_RESP_SWITCH_VIEW) && n < sizeof acts)
        snprintf(acts + n, sizeof acts - n, " new_view=%u", resp->new_view);
    event_detail(ev, detail, sizeof detail);
    if (l->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string("trace"));
        json_object_object_add(o, "seq", json_object_new_int64((int64_t)ev->seq));
        json_object_object_add(o, "kind", json_object_new_string(vmt_event_kind_name(ev->kind)));
        json_object_object_add(o, "rip", hex(ev->regs.rip));
        json_object_object_add(o, "view", json_object_new_int(ev->view));
        json_object_object_add(o, "detail", json_object_new_string(detail));
        json_object_object_add(o, "response", json_object_new_string(acts));
        if (st != VMT_OK)
            json_object_object_add(o, "error", json_object_new_string(vmt_strerror(st)));
        emit_json(l, o);
        return;
    }
    char line[512];
    snprintf(line, sizeof line, "#%" PRIu64 " %s rip=0x%" PRIx64 " view %u %s -> %s%s%s", ev->seq,
             vmt_event_kind_name(ev->kind), ev->regs.rip, ev->view, detail, acts, st != VMT_OK ? " FAILED: " : "",
             st != VMT_OK ? vmt_strerror(st) : "");
    emit_text(l, "trace", line);
}

void cli_log_entry_check(cli_log *l, const char *symbol, uint64_t guest_hash, uint64_t elf_hash)
{
    if (l->quiet)
        return;
    if (l->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string("entry-check"));
        json_object_object_add(o, "symbol", json_object_new_string(symbol));
        json_object_object_add(o, "guest_hash", hex(guest_hash));
        json_object_object_add(o, "elf_hash", hex(elf_hash));
        json_object_object_add(o, "match", json_object_new_boolean(guest_hash == elf_hash));
        emit_json(l, o);
        return;
    }
    char line[256];
    snprintf(line, sizeof line, "%s: the entry bytes the guest read %s the ELF file's", symbol,
             guest_hash == elf_hash ? "equal" : "DIFFER FROM");
    emit_text(l, "check", line);
}
