/*
 * core/ucall.c — host half of the testbed guests' ucall protocol
 * (vmtrap/ucall.h).
 *
 * The guest is an adversary: the announcing I/O event, the record's address
 * and every field of the record are checked before anything is copied out.
 * The record is read into a local copy once (no double fetch), validated,
 * and only then converted into a vmt_ucall. On any failure the output is
 * zeroed and `why` names the first problem found.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/errbuf.h"
#include "vmtrap/machine.h"
#include "vmtrap/ucall.h"

static const char *const ucall_cmd_names[] = {
    [VMT_UCALL_PRINT] = "print",   [VMT_UCALL_REPORT] = "report",
    [VMT_UCALL_ASSERT_FAIL] = "assert-fail", [VMT_UCALL_STEP] = "step",
    [VMT_UCALL_DETECTOR] = "detector", [VMT_UCALL_DONE] = "done",
};

const char *vmt_ucall_cmd_name(int cmd)
{
    if (cmd <= 0 || (size_t)cmd >= sizeof(ucall_cmd_names) / sizeof(ucall_cmd_names[0]) ||
        !ucall_cmd_names[cmd])
        return "?";
    return ucall_cmd_names[cmd];
}

int vmt_ucall_is_ucall(const vmt_event *ev)
{
    return ev && ev->kind == VMT_EVENT_IO && ev->u.io.port == VMT_PORT_UCALL && ev->u.io.is_write &&
           ev->u.io.size == 4;
}

static int terminated(const char *buf, size_t len)
{
    return memchr(buf, 0, len) != NULL;
}

vmt_status vmt_ucall_decode(const vmt_phys_reader *mem, uint64_t ram_size, const vmt_event *io_event,
                            vmt_ucall *out, char *why, size_t why_len)
{
    if (out)
        memset(out, 0, sizeof(*out));
    if (!mem || !mem->read || !io_event || !out) {
        vmt_why(why, why_len, "ucall: NULL argument");
        return VMT_E_INVAL;
    }
    if (io_event->kind != VMT_EVENT_IO) {
        vmt_why(why, why_len, "ucall: event is %s, not io", vmt_event_kind_name(io_event->kind));
        return VMT_E_INVAL;
    }
    const vmt_io_info *io = &io_event->u.io;
    if (io->port != VMT_PORT_UCALL || !io->is_write || io->size != 4) {
        vmt_why(why, why_len, "ucall: io %s of size %u on port 0x%x is not a ucall (4-byte write to 0x%x)",
                io->is_write ? "write" : "read", (unsigned)io->size, (unsigned)io->port,
                (unsigned)VMT_PORT_UCALL);
        return VMT_E_INVAL;
    }
    uint64_t pa = io->value;
    /* pa < 2^32, so pa + size cannot overflow */
    if (pa + sizeof(vmt_ucall_wire) > ram_size) {
        vmt_why(why, why_len, "ucall: record at pa 0x%" PRIx64 " (%zu bytes) is outside guest RAM (0x%" PRIx64 " bytes)",
                pa, sizeof(vmt_ucall_wire), ram_size);
        return VMT_E_RANGE;
    }
    vmt_ucall_wire w;
    vmt_status st = mem->read(mem->ctx, pa, &w, sizeof(w));
    if (st != VMT_OK) {
        vmt_why(why, why_len, "ucall: cannot read the record at pa 0x%" PRIx64 ": %s", pa,
                vmt_strerror(st));
        return VMT_E_RANGE;
    }
    if (w.magic != VMT_UCALL_MAGIC) {
        vmt_why(why, why_len, "ucall: bad magic 0x%08x at pa 0x%" PRIx64 " (want 0x%08x)", w.magic, pa,
                VMT_UCALL_MAGIC);
        return VMT_E_FORMAT;
    }
    if (w.version != VMT_UCALL_VERSION) {
        vmt_why(why, why_len, "ucall: version %u, this host speaks %u", (unsigned)w.version,
                VMT_UCALL_VERSION);
        return VMT_E_FORMAT;
    }
    if (w.size != sizeof(vmt_ucall_wire)) {
        vmt_why(why, why_len, "ucall: record size %u, want %zu", w.size, sizeof(vmt_ucall_wire));
        return VMT_E_FORMAT;
    }
    if (!strcmp(vmt_ucall_cmd_name(w.cmd), "?")) {
        vmt_why(why, why_len, "ucall: unknown command %u", (unsigned)w.cmd);
        return VMT_E_FORMAT;
    }
    if (w.nargs > VMT_UCALL_MAX_ARGS) {
        vmt_why(why, why_len, "ucall: %s with %u arguments (at most %u)", vmt_ucall_cmd_name(w.cmd),
                w.nargs, VMT_UCALL_MAX_ARGS);
        return VMT_E_FORMAT;
    }
    if (!terminated(w.name, sizeof(w.name)) || !terminated(w.text, sizeof(w.text))) {
        vmt_why(why, why_len, "ucall: %s: %s field is not NUL-terminated within %zu bytes",
                vmt_ucall_cmd_name(w.cmd), terminated(w.name, sizeof(w.name)) ? "text" : "name",
                terminated(w.name, sizeof(w.name)) ? sizeof(w.text) : sizeof(w.name));
        return VMT_E_FORMAT;
    }
    static const uint32_t min_args[] = {
        [VMT_UCALL_PRINT] = 0, [VMT_UCALL_REPORT] = 1, [VMT_UCALL_ASSERT_FAIL] = 1,
        [VMT_UCALL_STEP] = 0,  [VMT_UCALL_DETECTOR] = 2, [VMT_UCALL_DONE] = 1,
    };
    if (w.nargs < min_args[w.cmd]) {
        vmt_why(why, why_len, "ucall: %s needs %u arguments, has %u", vmt_ucall_cmd_name(w.cmd),
                min_args[w.cmd], w.nargs);
        return VMT_E_FORMAT;
    }
    out->cmd = (vmt_ucall_cmd)w.cmd;
    out->nargs = w.nargs;
    out->seq = w.seq;
    out->pa = pa;
    for (uint32_t i = 0; i < w.nargs; i++)
        out->args[i] = w.args[i];
    memcpy(out->name, w.name, sizeof(out->name));
    memcpy(out->text, w.text, sizeof(out->text));
    return VMT_OK;
}

void vmt_ucall_format(const vmt_ucall *uc, char *buf, size_t len)
{
    if (!buf || !len)
        return;
    buf[0] = 0;
    if (!uc)
        return;
    size_t n = 0;
#define APPEND(...)                                                              \
    do {                                                                         \
        if (n < len) {                                                           \
            int k_ = snprintf(buf + n, len - n, __VA_ARGS__);                    \
            n = k_ < 0 ? len : n + (size_t)k_;                                   \
        }                                                                        \
    } while (0)
    switch (uc->cmd) {
    case VMT_UCALL_PRINT:
        APPEND("print %s", uc->text);
        break;
    case VMT_UCALL_REPORT:
        APPEND("report %s = %" PRIu64 " (0x%" PRIx64 ")", uc->name, uc->args[0], uc->args[0]);
        break;
    case VMT_UCALL_ASSERT_FAIL:
        APPEND("assert-fail %s:%" PRIu64 ": %s", uc->name, uc->args[0], uc->text);
        for (uint32_t i = 1; i < uc->nargs && i < VMT_UCALL_MAX_ARGS; i++)
            APPEND(" 0x%" PRIx64, uc->args[i]);
        break;
    case VMT_UCALL_STEP:
        APPEND("step %s", uc->name);
        for (uint32_t i = 0; i < uc->nargs && i < VMT_UCALL_MAX_ARGS; i++)
            APPEND(" 0x%" PRIx64, uc->args[i]);
        if (uc->text[0])
            APPEND(" (%s)", uc->text);
        break;
    case VMT_UCALL_DETECTOR:
        APPEND("detector %" PRIu64 " %s %s: %s", uc->args[0], uc->name, uc->args[1] ? "pass" : "FAIL",
               uc->text);
        break;
    case VMT_UCALL_DONE:
        APPEND("done %" PRId64, (int64_t)uc->args[0]);
        break;
    default:
        APPEND("?");
        break;
    }
#undef APPEND
}
