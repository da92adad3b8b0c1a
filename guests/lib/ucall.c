/*
 * guests/lib/ucall.c — guest half of the ucall protocol (vmtrap/ucall.h).
 *
 * One static record (the guests run one vCPU). It is cleared, filled, and
 * its physical address (image PA = VA - KERNEL_VMA, below 4 GiB) is written
 * to VMT_PORT_UCALL with a 4-byte out; the host decodes it while the vCPU is
 * stopped on that out, so the record is never reused under the host's feet.
 */
#include <stdarg.h>
#include <stdint.h>

#include "guest/guest.h"
#include "guest/ucall.h"
#include "guest/x86.h"

static vmt_ucall_wire ucall_record;
static uint64_t ucall_seq;

static vmt_ucall_wire *ucall_begin(vmt_ucall_cmd cmd)
{
    vmt_ucall_wire *w = &ucall_record;
    memset(w, 0, sizeof(*w));
    w->magic = VMT_UCALL_MAGIC;
    w->version = VMT_UCALL_VERSION;
    w->cmd = (uint16_t)cmd;
    w->size = sizeof(*w);
    w->seq = ++ucall_seq;
    return w;
}

static void ucall_send(vmt_ucall_wire *w)
{
    outl(VMT_PORT_UCALL, (uint32_t)kva_to_pa(w));
}

void ucall_print(const char *fmt, ...)
{
    vmt_ucall_wire *w = ucall_begin(VMT_UCALL_PRINT);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->text, sizeof(w->text), fmt, ap);
    va_end(ap);
    ucall_send(w);
}

void ucall_report(const char *key, uint64_t value)
{
    vmt_ucall_wire *w = ucall_begin(VMT_UCALL_REPORT);
    strlcpy(w->name, key, sizeof(w->name));
    w->nargs = 1;
    w->args[0] = value;
    ucall_send(w);
}

void ucall_step(const char *name, const char *text, unsigned nargs, ...)
{
    vmt_ucall_wire *w = ucall_begin(VMT_UCALL_STEP);
    strlcpy(w->name, name, sizeof(w->name));
    if (text)
        strlcpy(w->text, text, sizeof(w->text));
    if (nargs > VMT_UCALL_MAX_ARGS)
        nargs = VMT_UCALL_MAX_ARGS;
    va_list ap;
    va_start(ap, nargs);
    for (unsigned i = 0; i < nargs; i++)
        w->args[i] = va_arg(ap, uint64_t);
    va_end(ap);
    w->nargs = nargs;
    ucall_send(w);
}

void ucall_detector(unsigned id, int pass, const char *name, const char *fmt, ...)
{
    vmt_ucall_wire *w = ucall_begin(VMT_UCALL_DETECTOR);
    strlcpy(w->name, name, sizeof(w->name));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->text, sizeof(w->text), fmt, ap);
    va_end(ap);
    w->nargs = 2;
    w->args[0] = id;
    w->args[1] = pass ? 1 : 0;
    ucall_send(w);
}

void ucall_assert_fail(const char *file, unsigned line, const char *expr, unsigned nvals, ...)
{
    vmt_ucall_wire *w = ucall_begin(VMT_UCALL_ASSERT_FAIL);
    for (const char *p = file; *p; p++)
        if (*p == '/')
            file = p + 1;
    strlcpy(w->name, file, sizeof(w->name));
    strlcpy(w->text, expr, sizeof(w->text));
    if (nvals > VMT_UCALL_MAX_ARGS - 1)
        nvals = VMT_UCALL_MAX_ARGS - 1;
    w->args[0] = line;
    va_list ap;
    va_start(ap, nvals);
    for (unsigned i = 0; i < nvals; i++)
        w->args[1 + i] = va_arg(ap, uint64_t);
    va_end(ap);
    w->nargs = 1 + nvals;
    ucall_send(w);
    guest_halt();
}

void ucall_done(uint64_t exit_code)
{
    vmt_ucall_wire *w = ucall_begin(VMT_UCALL_DONE);
    w->nargs = 1;
    w->args[0] = exit_code;
    ucall_send(w);
}
