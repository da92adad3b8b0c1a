/*
 * drivers/mem/mem_calls.c — call bookkeeping of the mem driver: the call
 * log, per-op counters and fault injection.
 *
 * Every op starts with mem_begin() and leaves through mem_end(), so no op can
 * forget to count, log or honour an injected failure. mem_begin() reserves
 * the log slot before the op does anything, so a successful op is always
 * logged (a log that cannot grow fails the call with VMT_E_NOMEM before any
 * change). With cfg.log_limit the log is a fixed ring that keeps the newest
 * calls, so long runs do not grow memory. An injected failure is decided in mem_begin(), before the op
 * touches state, which is what makes "a failed call changes nothing" hold.
 */
#include <stdlib.h>
#include <string.h>

#include "drivers/mem/mem_internal.h"

static const char *const op_names[VMT_MEM_OP_COUNT] = {
    [VMT_MEM_OP_ANY] = "any",
    [VMT_MEM_OP_READ_PHYS] = "read_phys",
    [VMT_MEM_OP_WRITE_PHYS] = "write_phys",
    [VMT_MEM_OP_GET_REGS] = "get_regs",
    [VMT_MEM_OP_SET_REGS] = "set_regs",
    [VMT_MEM_OP_PAUSE] = "pause",
    [VMT_MEM_OP_RESUME] = "resume",
    [VMT_MEM_OP_VIEW_CREATE] = "view_create",
    [VMT_MEM_OP_VIEW_DESTROY] = "view_destroy",
    [VMT_MEM_OP_VIEW_SWITCH] = "view_switch",
    [VMT_MEM_OP_VIEW_CURRENT] = "view_current",
    [VMT_MEM_OP_VIEW_REMAP] = "view_remap",
    [VMT_MEM_OP_VIEW_SET_ACCESS] = "view_set_access",
    [VMT_MEM_OP_VIEW_GET_ACCESS] = "view_get_access",
    [VMT_MEM_OP_FRAME_ALLOC] = "frame_alloc",
    [VMT_MEM_OP_FRAME_FREE] = "frame_free",
    [VMT_MEM_OP_HW_BREAKPOINT] = "hw_breakpoint",
    [VMT_MEM_OP_INJECT] = "inject",
    [VMT_MEM_OP_MONITOR] = "monitor",
    [VMT_MEM_OP_WAIT_EVENT] = "wait_event",
    [VMT_MEM_OP_RESPOND] = "respond",
    [VMT_MEM_OP_SET_LIMIT] = "set_limit",
    [VMT_MEM_OP_STATS] = "stats",
    [VMT_MEM_OP_GET_VCPU_STATE] = "get_vcpu_state",
    [VMT_MEM_OP_SET_VCPU_STATE] = "set_vcpu_state",
    [VMT_MEM_OP_DIRTY_LOG] = "dirty_log",
};

const char *vmt_mem_op_name(vmt_mem_op op)
{
    if ((unsigned)op >= VMT_MEM_OP_COUNT)
        return "unknown";
    return op_names[op];
}

mem_drv *mem_of(const vmt_driver *d)
{
    if (!d)
        return NULL;
    const char *name = vmt_driver_name(d); /* never read another driver's state */
    if (name != mem_driver_name && strcmp(name, mem_driver_name) != 0)
        return NULL;
    mem_drv *m = vmt_driver_impl((vmt_driver *)d);
    if (!m || m->magic != MEM_MAGIC)
        return NULL;
    return m;
}

int vmt_mem_is(const vmt_driver *d) { return mem_of(d) != NULL; }

static bool injection_fires(mem_drv *m, vmt_mem_op op)
{
    bool fire = false;
    if (m->fail_nth_left && (m->fail_nth_op == VMT_MEM_OP_ANY || m->fail_nth_op == op)) {
        m->fail_nth_left--;
        if (m->fail_nth_left == 0)
            fire = true;
    }
    if (m->fail_always & (1ull << op))
        fire = true;
    return fire;
}

vmt_status mem_begin(vmt_driver *d, mem_drv *m, vmt_mem_call *c)
{
    m->op_count[c->op]++;
    m->op_count[VMT_MEM_OP_ANY]++;
    if (!m->cfg.noop && m->log_count == m->log_cap && (!m->cfg.log_limit || m->log_cap == 0)) {
        size_t cap = m->cfg.log_limit ? m->cfg.log_limit : m->log_cap ? m->log_cap * 2 : 256;
        vmt_mem_call *n = realloc(m->log, cap * sizeof *n);
        if (!n)
            return vmt_driver_fail(d, VMT_E_NOMEM, "%s: call log cannot grow", vmt_mem_op_name(c->op));
        m->log = n;
        m->log_cap = cap;
    }
    if (injection_fires(m, c->op)) {
        m->injected++;
        return vmt_driver_fail(d, VMT_E_INJECTED, "injected failure of %s (call %llu of that op)",
                               vmt_mem_op_name(c->op), (unsigned long long)m->op_count[c->op]);
    }
    return VMT_OK;
}

vmt_status mem_end(mem_drv *m, vmt_mem_call *c, vmt_status st)
{
    c->status = st;
    if (m->cfg.noop || m->log_cap == 0)
        return st;
    if (m->log_count < m->log_cap) {
        m->log[(m->log_start + m->log_count) % m->log_cap] = *c;
        m->log_count++;
    } else if (m->cfg.log_limit) { /* full ring: replace the oldest */
        m->log[m->log_start] = *c;
        m->log_start = (m->log_start + 1) % m->log_cap;
        m->log_dropped++;
    }
    return st;
}

size_t vmt_mem_log_count(const vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    return m ? m->log_count : 0;
}

const vmt_mem_call *vmt_mem_log_at(const vmt_driver *d, size_t i)
{
    mem_drv *m = mem_of(d);
    if (!m || i >= m->log_count)
        return NULL;
    return &m->log[(m->log_start + i) % m->log_cap];
}

void vmt_mem_log_clear(vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    if (m)
        m->log_count = m->log_start = 0;
}

uint64_t vmt_mem_log_dropped(const vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    return m ? m->log_dropped : 0;
}

uint64_t vmt_mem_op_count(const vmt_driver *d, vmt_mem_op op)
{
    mem_drv *m = mem_of(d);
    if (!m || (unsigned)op >= VMT_MEM_OP_COUNT)
        return 0;
    return m->op_count[op];
}

void vmt_mem_fail_nth(vmt_driver *d, vmt_mem_op op, uint64_t n)
{
    mem_drv *m = mem_of(d);
    if (!m || (unsigned)op >= VMT_MEM_OP_COUNT)
        return;
    m->fail_nth_op = op;
    m->fail_nth_left = n;
}

void vmt_mem_fail_always(vmt_driver *d, vmt_mem_op op, bool on)
{
    mem_drv *m = mem_of(d);
    if (!m || op == VMT_MEM_OP_ANY || (unsigned)op >= VMT_MEM_OP_COUNT)
        return;
    if (on)
        m->fail_always |= 1ull << op;
    else
        m->fail_always &= ~(1ull << op);
}

void vmt_mem_fail_clear(vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    if (!m)
        return;
    m->fail_nth_left = 0;
    m->fail_always = 0;
}

uint64_t vmt_mem_injected(const vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    return m ? m->injected : 0;
}
