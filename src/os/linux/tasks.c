/*
 * os/linux/tasks.c — tasks from kernel memory: the current task per CPU,
 * one task's identity, and the process list (init_task.tasks).
 *
 * Offsets come from BTF (os_offsets_load); without BTF these calls fail
 * with the note saying why. The list walk is bounded (VMT_OS_MAX_TASKS) and
 * checks each link's back pointer, so a corrupt or cyclic list ends with
 * VMT_E_FORMAT naming the task where it broke.
 */
#include "os/linux/os_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static vmt_status need(vmt_os *os, uint64_t off, const char *what)
{
    if (!os->btf)
        return vmt_errbuf_set(&os->err, VMT_E_NOTSUP, "os: tasks need BTF (%s)", os->info.btf_note);
    if (off == UINT64_MAX)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: BTF does not give %s", what);
    return VMT_OK;
}

static vmt_status rk(vmt_os *os, uint64_t va, void *buf, size_t len)
{
    return vmt_os_read_kernel(os, va, buf, len, NULL);
}

vmt_status vmt_os_task_at(vmt_os *os, uint64_t task_va, vmt_os_task *out)
{
    os_offsets *o = &os->off;
    vmt_status st;
    if ((st = need(os, o->task_pid, "task_struct.pid")) || (st = need(os, o->task_tgid, "task_struct.tgid")) ||
        (st = need(os, o->task_comm, "task_struct.comm")))
        return st;
    memset(out, 0, sizeof *out);
    out->va = task_va;
    out->ppid = -1;
    if ((st = rk(os, task_va + o->task_pid, &out->pid, 4)) || (st = rk(os, task_va + o->task_tgid, &out->tgid, 4)) ||
        (st = rk(os, task_va + o->task_comm, out->comm, VMT_OS_COMM_LEN)))
        return st;
    out->comm[VMT_OS_COMM_LEN] = 0;
    if (o->task_parent != UINT64_MAX && rk(os, task_va + o->task_parent, &out->parent_va, 8) == VMT_OK &&
        out->parent_va && rk(os, out->parent_va + o->task_tgid, &out->ppid, 4) != VMT_OK)
        out->ppid = -1;
    if (o->task_mm != UINT64_MAX && (st = rk(os, task_va + o->task_mm, &out->mm_va, 8)))
        return st;
    if (out->mm_va && o->mm_pgd != UINT64_MAX) {
        uint64_t pgd;
        if ((st = rk(os, out->mm_va + o->mm_pgd, &pgd, 8)))
            return st;
        /* pgd is a direct-map address: PA = VA - page_offset_base. */
        if (os->info.page_offset_base && pgd >= os->info.page_offset_base &&
            pgd - os->info.page_offset_base < os->ram_bytes)
            out->pgd_pa = pgd - os->info.page_offset_base;
    }
    vmt_errbuf_clear(&os->err);
    return VMT_OK;
}

vmt_status vmt_os_current_task(vmt_os *os, unsigned cpu, vmt_os_task *out)
{
    uint64_t pco, cur_sym, per_cpu, task;
    vmt_status st;
    if ((st = os_sym(os, "__per_cpu_offset", &pco)))
        return st;
    if (cpu >= 8192)
        return vmt_errbuf_set(&os->err, VMT_E_INVAL, "os: cpu %u out of range", cpu);
    if ((st = rk(os, pco + 8ull * cpu, &per_cpu, 8)))
        return st;
    if (os_sym(os, "current_task", &cur_sym) != VMT_OK) {
        if ((st = os_sym(os, "pcpu_hot", &cur_sym)))
            return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: neither current_task nor pcpu_hot in kallsyms");
        if ((st = need(os, os->off.pcpu_hot_current, "pcpu_hot.current_task")))
            return st;
        cur_sym += os->off.pcpu_hot_current;
    }
    if ((st = rk(os, per_cpu + cur_sym, &task, 8)))
        return st;
    if (!task)
        return vmt_errbuf_set(&os->err, VMT_E_NOTFOUND, "os: cpu %u has no current task (offline?)", cpu);
    return vmt_os_task_at(os, task, out);
}

vmt_status vmt_os_tasks(vmt_os *os, int (*fn)(void *ctx, const vmt_os_task *t), void *ctx)
{
    uint64_t init;
    vmt_status st;
    if ((st = need(os, os->off.task_tasks, "task_struct.tasks")) || (st = os_sym(os, "init_task", &init)))
        return st;
    uint64_t head = init + os->off.task_tasks, prev = head, link;
    vmt_os_task t;
    if ((st = vmt_os_task_at(os, init, &t)))
        return st;
    if (fn(ctx, &t))
        return VMT_OK;
    if ((st = rk(os, head, &link, 8)))
        return st;
    for (unsigned n = 0; link != head; n++) {
        if (n >= VMT_OS_MAX_TASKS)
            return vmt_errbuf_set(&os->err, VMT_E_FORMAT, "os: task list longer than %u (a cycle?)", VMT_OS_MAX_TASKS);
        uint64_t back, next;
        if ((st = rk(os, link + 8, &back, 8)) || (st = rk(os, link, &next, 8)))
            return st;
        if (back != prev)
            return vmt_errbuf_set(&os->err, VMT_E_FORMAT,
                                  "os: task list broken at 0x%" PRIx64 ": its prev is 0x%" PRIx64 ", not 0x%" PRIx64,
                                  link - os->off.task_tasks, back, prev - os->off.task_tasks);
        if ((st = vmt_os_task_at(os, link - os->off.task_tasks, &t)))
            return st;
        if (fn(ctx, &t))
            return VMT_OK;
        prev = link;
        link = next;
    }
    return VMT_OK;
}
