/*
 * tools/watch_pages.c — `--watch-pages WHO:VA[,VA...]` on `vmtrap run
 * --snapshot` (emulator) and `vmtrap run --driver qemu`: the page-table
 * monitor on user virtual addresses of one Linux process, under that
 * process's own translation root.
 *
 * WHO is a pid or a comm (the first task with that name, in the kernel's
 * task-list order; kernel threads have no mm and are skipped); VA is an
 * address, a range START-END (end exclusive, every page of it), `heap`
 * (every page of [mm->start_brk, mm->brk), at most 64) or `stack` (the page
 * of the user stack pointer saved at the top of the task's kernel stack;
 * refused unless those registers are user mode). Regions are read with BTF
 * when the watches are armed; one that cannot be read is reported on stderr. The
 * process's root is its mm->pgd made physical through the direct map (the
 * OS layer's task list), so the watch follows the process's tables whatever
 * runs when a table is written. Each VA becomes one vmt_ptm_monitor() watch
 * (tag CLI_WATCH_TAG_BASE + index, far above the monitor's hook tags, so the
 * breakpoint manager ignores its events); a VA the monitor refuses (hostile
 * or unreadable path, a driver that cannot write-protect that frame) is
 * printed as refused with the reason, never dropped in silence. Every
 * PAGE_IN / PAGE_OUT / REMAP of a watched VA is one line ("page" text line
 * or {"event":"page",...} JSON) with pid, comm, va, frames; the summary line
 * counts them per kind.
 *
 * Limits: at most CLI_WATCH_MAX VAs; one process per option (repeat the
 * option for more); the process is looked up once, at the start (a process
 * that exits leaves its watches on tables the kernel frees: their events
 * then describe the reuse of those pages).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"
#include "vmtrap/os.h"
#include "vmtrap/ptm.h"

int cli_watch_parse(cli_watch *w, const char *spec)
{
    const char *colon = spec ? strrchr(spec, ':') : NULL;
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof w->groups[0].who) {
        fprintf(stderr, "vmtrap: --watch-pages '%s': expected PID:VA[,VA...] or COMM:VA[,...]\n", spec ? spec : "");
        return -1;
    }
    if (w->ngroups == CLI_WATCH_GROUPS) {
        fprintf(stderr, "vmtrap: --watch-pages: at most %d processes\n", CLI_WATCH_GROUPS);
        return -1;
    }
    cli_watch_group *g = &w->groups[w->ngroups];
    memset(g, 0, sizeof *g);
    memcpy(g->who, spec, (size_t)(colon - spec));
    uint64_t pid;
    g->pid = cli_parse_u64(g->who, &pid) == 0 && pid <= 0x7fffffff ? (int32_t)pid : -1;
    g->first = w->n;
    char *copy = strdup(colon + 1), *save = NULL;
    if (!copy)
        return -1;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "stack") == 0 || strcmp(t, "heap") == 0) {
            *(t[0] == 's' ? &g->want_stack : &g->want_heap) = 1;
            continue;
        }
        char *dash = strchr(t, '-');
        uint64_t lo, hi;
        if (dash)
            *dash = 0;
        if (cli_parse_u64(t, &lo) || (dash && cli_parse_u64(dash + 1, &hi))) {
            fprintf(stderr, "vmtrap: --watch-pages: '%s' is not an address or START-END\n", t);
            rc = -1;
            break;
        }
        if (!dash)
            hi = lo + 1;
        if (hi <= lo) {
            fprintf(stderr, "vmtrap: --watch-pages: empty range 0x%" PRIx64 "-0x%" PRIx64 "\n", lo, hi);
            rc = -1;
            break;
        }
        for (uint64_t va = lo & ~0xfffull; va < hi; va += 4096) {
            if (w->n == CLI_WATCH_MAX) {
                fprintf(stderr, "vmtrap: --watch-pages: at most %d pages in all\n", CLI_WATCH_MAX);
                rc = -1;
                break;
            }
            memset(&w->va[w->n], 0, sizeof w->va[0]);
            w->va[w->n].va = va;
            w->va[w->n].group = w->ngroups;
            w->n++;
        }
    }
    free(copy);
    if (rc)
        return rc;
    g->count = w->n - g->first;
    w->ngroups++;
    return 0;
}

static int add_va(cli_watch *w, unsigned group, uint64_t va)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->va[i].group == group && w->va[i].va == va)
            return 0;
    if (w->n == CLI_WATCH_MAX)
        return -1;
    memset(&w->va[w->n], 0, sizeof w->va[0]);
    w->va[w->n].va = va;
    w->va[w->n].group = group;
    w->n++;
    return 0;
}

#define HEAP_PAGES_MAX 64
#define LINUX_THREAD_SIZE 16384 /* x86-64 without KASAN; checked: the saved registers must be user mode */

/* "heap": every page of [mm->start_brk, mm->brk) (at most HEAP_PAGES_MAX);
 * "stack": the page of the user stack pointer the task saved when it last
 * entered the kernel (pt_regs at the top of its kernel stack). Refusals
 * come back as the reason in why. */
static void add_regions(cli_watch *w, unsigned gi, vmt_os *os, const vmt_os_task *t, char *why, size_t why_len)
{
    cli_watch_group *g = &w->groups[gi];
    why[0] = 0;
    if (g->want_heap) {
        uint64_t o_start, o_brk, start = 0, brk = 0;
        if (vmt_os_member_offset(os, "mm_struct", "start_brk", &o_start) ||
            vmt_os_member_offset(os, "mm_struct", "brk", &o_brk) ||
            vmt_os_read_kernel(os, t->mm_va + o_start, &start, 8, NULL) ||
            vmt_os_read_kernel(os, t->mm_va + o_brk, &brk, 8, NULL))
            snprintf(why, why_len, "heap: mm_struct.start_brk/brk unreadable: %s", vmt_os_error(os));
        else if (brk <= start)
            snprintf(why, why_len, "heap: empty (start_brk 0x%" PRIx64 ", brk 0x%" PRIx64 ")", start, brk);
        else
            for (uint64_t va = start & ~0xfffull, n = 0; va < brk && n < HEAP_PAGES_MAX; va += 4096, n++)
                if (add_va(w, gi, va))
                    break;
    }
    if (g->want_stack) {
        uint64_t o_stack, o_sp, o_cs, ksp = 0, sp = 0, cs = 0, regs_size;
        if (vmt_os_member_offset(os, "task_struct", "stack", &o_stack) ||
            vmt_os_member_offset(os, "pt_regs", "sp", &o_sp) || vmt_os_member_offset(os, "pt_regs", "cs", &o_cs) ||
            vmt_os_type_size(os, "pt_regs", &regs_size) ||
            vmt_os_read_kernel(os, t->va + o_stack, &ksp, 8, NULL)) {
            snprintf(why, why_len, "stack: task_struct.stack or pt_regs unknown: %s", vmt_os_error(os));
        } else {
            uint64_t regs = ksp + LINUX_THREAD_SIZE - regs_size;
            if (vmt_os_read_kernel(os, regs + o_sp, &sp, 8, NULL) || vmt_os_read_kernel(os, regs + o_cs, &cs, 8, NULL))
                snprintf(why, why_len, "stack: the saved registers are unreadable: %s", vmt_os_error(os));
            else if ((cs & 3) != 3 || !sp || sp >> 47)
                snprintf(why, why_len, "stack: no saved user-mode registers (cs 0x%" PRIx64 ", sp 0x%" PRIx64 ")", cs,
                         sp);
            else
                (void)add_va(w, gi, sp & ~0xfffull);
        }
    }
}

typedef struct find_ctx {
    const cli_watch_group *g;
    vmt_os_task found;
    int have;
} find_ctx;

static int find_task(void *ctx, const vmt_os_task *t)
{
    find_ctx *f = ctx;
    if (!t->mm_va || !t->pgd_pa)
        return 0;
    if (f->g->pid >= 0 ? t->pid == f->g->pid : strcmp(t->comm, f->g->who) == 0) {
        f->found = *t;
        f->have = 1;
        return 1;
    }
    return 0;
}

static void line_watch(cli_watch *w, const cli_watch_va *v, const char *state)
{
    const cli_watch_group *g = &w->groups[v->group];
    if (w->log->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "event", json_object_new_string("watch"));
        json_object_object_add(o, "state", json_object_new_string(state));
        json_object_object_add(o, "who", json_object_new_string(g->who));
        json_object_object_add(o, "pid", json_object_new_int(g->task_pid));
        json_object_object_add(o, "comm", json_object_new_string(g->comm));
        char b[24];
        snprintf(b, sizeof b, "0x%" PRIx64, v->va);
        json_object_object_add(o, "va", json_object_new_string(b));
        snprintf(b, sizeof b, "0x%" PRIx64, g->root);
        json_object_object_add(o, "root", json_object_new_string(b));
        if (v->refused)
            json_object_object_add(o, "reason", json_object_new_string(v->why));
        else if (v->present) {
            snprintf(b, sizeof b, "0x%" PRIx64, v->pa);
            json_object_object_add(o, "pa", json_object_new_string(b));
        }
        fprintf(w->log->out, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        json_object_put(o);
    } else if (v->refused) {
        fprintf(w->log->out, "watch   refused %s va=0x%" PRIx64 ": %s\n", g->who, v->va, v->why);
    } else {
        fprintf(w->log->out, "watch   %s pid=%d comm=%s root=0x%" PRIx64 " va=0x%" PRIx64 " %s", state, g->task_pid,
                g->comm, g->root, v->va, v->present ? "pa=" : "not present");
        if (v->present)
            fprintf(w->log->out, "0x%" PRIx64, v->pa);
        fputc('\n', w->log->out);
    }
    fflush(w->log->out);
}

int cli_watch_arm(cli_watch *w, struct vmt_os *os, vmt_ptm *ptm, vmt_view view)
{
    /* A fresh start (a --runs restore arms again): counts from zero. */
    w->refused = 0;
    w->region_refusals = 0;
    memset(w->events, 0, sizeof w->events);
    for (size_t i = 0; i < w->n; i++) {
        w->va[i].refused = 0;
        w->va[i].present = 0;
        w->va[i].why[0] = 0;
    }
    /* First every process and its symbolic regions, then the watches. */
    char group_why[CLI_WATCH_GROUPS][160];
    for (unsigned gi = 0; gi < w->ngroups; gi++) {
        cli_watch_group *g = &w->groups[gi];
        find_ctx f = { g, { 0 }, 0 };
        vmt_status st = os ? vmt_os_tasks(os, find_task, &f) : VMT_E_NOTSUP;
        const char *why = !os ? "no OS layer (the guest's processes are unknown)"
                          : st ? vmt_os_error(os)
                          : !f.have ? "no such process with an address space" : NULL;
        snprintf(group_why[gi], sizeof group_why[gi], "%s", why ? why : "");
        if (why && (g->want_stack || g->want_heap)) {
            cli_watch_va refused = { .va = 0, .group = gi, .refused = 1 };
            snprintf(refused.why, sizeof refused.why, "%s%s%s: %s", g->want_stack ? "stack" : "",
                     g->want_stack && g->want_heap ? "," : "", g->want_heap ? "heap" : "", why);
            line_watch(w, &refused, "refused");
            w->region_refusals++;
        }
        if (why)
            continue;
        g->task_pid = f.found.pid;
        snprintf(g->comm, sizeof g->comm, "%s", f.found.comm);
        g->root = f.found.pgd_pa;
        char rwhy[160];
        add_regions(w, gi, os, &f.found, rwhy, sizeof rwhy);
        if (rwhy[0]) {
            cli_watch_va refused = { .va = 0, .group = gi, .refused = 1 };
            snprintf(refused.why, sizeof refused.why, "%s", rwhy);
            line_watch(w, &refused, "refused");
            w->region_refusals++;
        }
    }
    int watching = 0;
    for (size_t i = 0; i < w->n; i++) {
        cli_watch_va *v = &w->va[i];
        const cli_watch_group *g = &w->groups[v->group];
        if (group_why[v->group][0]) {
            v->refused = 1;
            snprintf(v->why, sizeof v->why, "%s", group_why[v->group]);
        } else {
            vmt_addr_ctx ctx = vmt_addr_ctx_make(v->va, g->root);
            vmt_status st = vmt_ptm_monitor(ptm, ctx, view, CLI_WATCH_TAG_BASE + i);
            vmt_ptm_watch_info wi;
            if (st == VMT_OK && vmt_ptm_query(ptm, ctx, view, CLI_WATCH_TAG_BASE + i, &wi) == VMT_OK) {
                v->present = wi.present;
                v->pa = wi.pa;
            } else if (st != VMT_OK) {
                v->refused = 1;
                snprintf(v->why, sizeof v->why, "%s", vmt_ptm_error(ptm)[0] ? vmt_ptm_error(ptm) : vmt_strerror(st));
            }
        }
        if (v->refused)
            w->refused++;
        else
            watching++;
        line_watch(w, v, "watching");
    }
    w->view = view;
    return watching;
}

int cli_watch_on_event(cli_watch *w, const vmt_ptm_event *ev)
{
    if (ev->tag < CLI_WATCH_TAG_BASE || ev->tag - CLI_WATCH_TAG_BASE >= w->n || ev->kind < VMT_PTM_PAGE_IN ||
        ev->kind > VMT_PTM_REMAP)
        return 0;
    const cli_watch_va *v = &w->va[ev->tag - CLI_WATCH_TAG_BASE];
    const cli_watch_group *g = &w->groups[v->group];
    w->events[ev->kind]++;
    if (w->log->quiet)
        return 1;
    const char *kind = ev->kind == VMT_PTM_PAGE_IN ? "page-in" : ev->kind == VMT_PTM_PAGE_OUT ? "page-out" : "remap";
    if (w->log->json) {
        fprintf(w->log->out, "{\"event\":\"page\",\"kind\":\"%s\",\"pid\":%d,\"comm\":", kind, g->task_pid);
        json_object *c = json_object_new_string(g->comm);
        fputs(json_object_to_json_string(c), w->log->out);
        json_object_put(c);
        fprintf(w->log->out, ",\"va\":\"0x%" PRIx64 "\",\"root\":\"0x%" PRIx64 "\"", ev->ctx.va, ev->ctx.root);
        if (ev->kind != VMT_PTM_PAGE_IN)
            fprintf(w->log->out, ",\"old_pa\":\"0x%" PRIx64 "\"", ev->old_pa);
        if (ev->kind != VMT_PTM_PAGE_OUT)
            fprintf(w->log->out, ",\"new_pa\":\"0x%" PRIx64 "\",\"page_size\":%" PRIu64, ev->new_pa, ev->page_size);
        fputs("}\n", w->log->out);
    } else {
        fprintf(w->log->out, "page    %-8s pid=%d comm=%s va=0x%" PRIx64, kind, g->task_pid, g->comm, ev->ctx.va);
        if (ev->kind != VMT_PTM_PAGE_IN)
            fprintf(w->log->out, " old_pa=0x%" PRIx64, ev->old_pa);
        if (ev->kind != VMT_PTM_PAGE_OUT)
            fprintf(w->log->out, " new_pa=0x%" PRIx64 " (%" PRIu64 " KiB page)", ev->new_pa, ev->page_size / 1024);
        fputc('\n', w->log->out);
    }
    fflush(w->log->out);
    return 1;
}

void cli_watch_summary(cli_watch *w, vmt_ptm *ptm)
{
    vmt_ptm_stats ps;
    memset(&ps, 0, sizeof ps);
    if (ptm)
        vmt_ptm_get_stats(ptm, &ps);
    size_t watched = w->n - w->refused, refused = w->refused + w->region_refusals;
    uint64_t in = w->events[VMT_PTM_PAGE_IN], out = w->events[VMT_PTM_PAGE_OUT], rm = w->events[VMT_PTM_REMAP];
    if (w->log->json) {
        fprintf(w->log->out,
                "{\"event\":\"watch_summary\",\"pages\":%zu,\"refused\":%zu,\"page_in\":%" PRIu64 ",\"page_out\":%" PRIu64
                ",\"remap\":%" PRIu64 ",\"table_writes\":%" PRIu64 ",\"table_pages\":%" PRIu64 "}\n",
                watched, refused, in, out, rm, ps.writes, ps.table_pages);
    } else {
        fprintf(w->log->out,
                "watch   summary: %zu pages watched (%zu refused): %" PRIu64 " page-in, %" PRIu64 " page-out, %" PRIu64
                " remap; %" PRIu64 " table writes seen, %" PRIu64 " table pages write-protected now\n",
                watched, refused, in, out, rm, ps.writes, ps.table_pages);
    }
    fflush(w->log->out);
}
