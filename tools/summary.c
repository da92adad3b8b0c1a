/*
 * tools/summary.c — the table printed when a run ends.
 *
 * Design: one cli_summary record (filled by run.c) rendered either as a
 * readable table or as one JSON object {"event":"summary", ...}. It shows
 * hits per hooked symbol next to the guest's own count of its calls when the
 * guest reported one (and whether they match), page events, exits by reason
 * (the driver's counters), detector results, and time.
 */
#include <inttypes.h>
#include <string.h>

#include <json-c/json.h>

#include "cli.h"

/* Why a detector can fail with a mechanism: the honest limits of each. */
const char *cli_detector_why(unsigned id, vmt_bpm_controller ctl)
{
    switch (id) {
    case 1:
    case 2:
        return ctl == VMT_BPM_CTL_SHADOW ? "reads of hooked pages must be served from the original frame (read traps)"
                                         : "no code byte is changed by this mechanism: a failure is not the monitor's";
    case 3:
        return "writes into hooked pages must land in the original frame and refresh the shadow copy";
    case 4:
        return "new code written into a hooked page must be what executes (shadow refresh, translated-code flush)";
    case 5:
        return "the guest's own INT3 must be told apart from the monitor's and reinjected into its IDT";
    case 6:
        return ctl == VMT_BPM_CTL_DEBUG ? "a debug-register hit is stepped with TF, which pushf can see unless the "
                                          "driver hides it"
                                        : "the displaced instruction is stepped; TF must not be visible to pushf "
                                          "(emulation avoids TF)";
    case 7:
        return "shadow frames must live outside guest-reachable physical memory";
    case 8:
        return ctl == VMT_BPM_CTL_DEBUG ? "the monitor's breakpoints occupy the debug registers, so the guest's own "
                                          "DR0-3/DR7 values cannot be kept in the hardware"
                                        : "debug registers are the guest's: the driver must keep them as written";
    case 9:
        return "the guest's own traps (CD 03, ICEBP, INTO) must reach its IDT, in hooked pages too";
    case 10:
        return "an instruction served from the unaltered frame must write back everything it changes "
               "(vector, x87, string registers, memory)";
    case 11:
        return "accesses crossing into a hooked page must be served from the original frame";
    case 12:
        return ctl == VMT_BPM_CTL_DEBUG ? "debug registers match virtual addresses: a call through another mapping "
                                          "is not seen"
                                        : "reads and calls through another mapping of a hooked frame must see the "
                                          "original and be served";
    case 13:
        return "a hooked frame walked as a page table must show its real entries";
    case 14:
        return "shadow frames must live outside guest-reachable physical memory";
    case 15:
        return "CPUID, the TSC MSR and APIC_BASE must agree with what the CPU does";
    case 16:
        return "monitor work must not be guest time (the emulator's virtual clock; TSC offsetting on KVM)";
    default:
        return "";
    }
}

static json_object *summary_json(const cli_summary *s)
{
    const vmt_monitor_stats *st = s->stats;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "event", json_object_new_string("summary"));
    json_object_object_add(o, "driver", json_object_new_string(s->driver ? s->driver : "?"));
    json_object_object_add(o, "guest", json_object_new_string(s->guest ? s->guest : "?"));
    json_object_object_add(o, "mechanism", json_object_new_string(s->mechanism ? s->mechanism : ""));
    json_object_object_add(o, "end", json_object_new_string(s->end_reason ? s->end_reason : "?"));
    json_object_object_add(o, "wall_seconds", json_object_new_double(s->wall_seconds));

    json_object *hooks = json_object_new_array();
    size_t n = s->monitor ? vmt_monitor_hook_count(s->monitor) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *h = json_object_new_object();
        json_object_object_add(h, "symbol", json_object_new_string(vmt_monitor_hook_symbol(s->monitor, i)));
        json_object_object_add(h, "hits", json_object_new_int64((int64_t)vmt_monitor_hook_hits(s->monitor, i)));
        if (vmt_monitor_hook_has_return(s->monitor, i))
            json_object_object_add(h, "returns",
                                   json_object_new_int64((int64_t)vmt_monitor_hook_returns(s->monitor, i)));
        if (i < CLI_MAX_HOOKS && s->guest_counts[i] >= 0)
            json_object_object_add(h, "guest_count", json_object_new_int64(s->guest_counts[i]));
        vmt_hook_status hs;
        if (vmt_monitor_hook_status(s->monitor, i, &hs) == VMT_OK) {
            json_object_object_add(h, "state", json_object_new_string(vmt_hook_state_name(hs.state)));
            json_object_object_add(h, "roots_armed", json_object_new_int64(hs.roots_armed));
            json_object_object_add(h, "roots_pending", json_object_new_int64(hs.roots_pending));
            json_object_object_add(h, "roots_refused", json_object_new_int64(hs.roots_refused));
            json_object_object_add(h, "refusals", json_object_new_int64((int64_t)hs.refusals));
            if (hs.refusals) {
                char root[24];
                snprintf(root, sizeof root, "0x%" PRIx64, hs.refused_root);
                json_object_object_add(h, "refused_root", json_object_new_string(root));
                json_object_object_add(h, "refused_why", json_object_new_string(hs.refused_why));
            }
        }
        json_object_array_add(hooks, h);
    }
    json_object_object_add(o, "hooks", hooks);
    json_object_object_add(o, "counts_match", json_object_new_boolean(s->counts_match));
    json_object *ec = json_object_new_object();
    json_object_object_add(ec, "checked", json_object_new_int64(s->entry_checked));
    json_object_object_add(ec, "mismatch", json_object_new_int64(s->entry_mismatch));
    json_object_object_add(o, "entry_checks", ec);

    if (st) {
        json_object *pe = json_object_new_object();
        json_object_object_add(pe, "page_in", json_object_new_int64((int64_t)st->page_in));
        json_object_object_add(pe, "page_out", json_object_new_int64((int64_t)st->page_out));
        json_object_object_add(pe, "remap", json_object_new_int64((int64_t)st->remap));
        json_object_object_add(pe, "pt_writes", json_object_new_int64((int64_t)st->pt_writes));
        json_object_object_add(o, "page_events", pe);
        json_object *mon = json_object_new_object();
        json_object_object_add(mon, "returns_missed", json_object_new_int64((int64_t)st->returns_missed));
        json_object_object_add(mon, "roots", json_object_new_int64((int64_t)st->roots));
        json_object_object_add(mon, "roots_failed", json_object_new_int64((int64_t)st->roots_failed));
        json_object_object_add(mon, "hook_refusals", json_object_new_int64((int64_t)st->hook_refusals));
        json_object_object_add(mon, "foreign_int3", json_object_new_int64((int64_t)st->foreign_int3));
        json_object_object_add(mon, "alias_hits", json_object_new_int64((int64_t)st->alias_hits));
        json_object_object_add(mon, "hidden_accesses", json_object_new_int64((int64_t)st->hidden_accesses));
        json_object_object_add(mon, "cr3_writes", json_object_new_int64((int64_t)st->cr3_writes));
        json_object_object_add(mon, "ucalls", json_object_new_int64((int64_t)st->ucalls));
        json_object_object_add(mon, "ucall_errors", json_object_new_int64((int64_t)st->ucall_errors));
        json_object_object_add(mon, "errors", json_object_new_int64((int64_t)st->errors));
        if (st->errors)
            json_object_object_add(mon, "first_error", json_object_new_string(vmt_monitor_first_error(s->monitor)));
        json_object_object_add(o, "monitor", mon);
        json_object *det = json_object_new_array();
        for (size_t i = 0; i < st->ndetectors; i++) {
            json_object *d = json_object_new_object();
            json_object_object_add(d, "id", json_object_new_int64(st->detectors[i].id));
            char name[sizeof st->detectors[i].name], detail[sizeof st->detectors[i].detail]; /* guest text */
            json_object_object_add(d, "name", json_object_new_string(cli_escape_guest_text(st->detectors[i].name, name,
                                                                                             sizeof name)));
            json_object_object_add(d, "pass", json_object_new_boolean(st->detectors[i].pass));
            json_object_object_add(d, "detail", json_object_new_string(cli_escape_guest_text(st->detectors[i].detail,
                                                                                               detail, sizeof detail)));
            if (!st->detectors[i].pass)
                json_object_object_add(d, "why",
                                       json_object_new_string(cli_detector_why(st->detectors[i].id, s->controller)));
            json_object_array_add(det, d);
        }
        json_object_object_add(o, "detectors", det);
        if (st->guest_done)
            json_object_object_add(o, "guest_exit_code", json_object_new_int64((int64_t)st->guest_exit_code));
    }
    if (s->have_driver_stats) {
        const vmt_driver_stats *d = &s->dstats;
        json_object *ex = json_object_new_object();
        json_object_object_add(ex, "total", json_object_new_int64((int64_t)d->exits));
        json_object_object_add(ex, "internal", json_object_new_int64((int64_t)d->internal_exits));
        for (int k = 1; k < VMT_EVENT_KIND_COUNT; k++)
            json_object_object_add(ex, vmt_event_kind_name((vmt_event_kind)k),
                                   json_object_new_int64((int64_t)d->events[k]));
        json_object_object_add(o, "exits", ex);
        json_object_object_add(o, "guest_seconds", json_object_new_double((double)d->ns_guest / 1e9));
        json_object_object_add(o, "monitor_seconds", json_object_new_double((double)d->ns_monitor / 1e9));
        if (d->instructions)
            json_object_object_add(o, "instructions", json_object_new_int64((int64_t)d->instructions));
    }
    return o;
}

static void summary_text(FILE *f, const cli_summary *s)
{
    const vmt_monitor_stats *st = s->stats;
    fprintf(f, "\n== vmtrap summary: guest %s on driver %s, %s\n", s->guest ? s->guest : "?",
            s->driver ? s->driver : "?", s->end_reason ? s->end_reason : "?");
    if (s->mechanism && s->mechanism[0])
        fprintf(f, "   breakpoints: %s\n", s->mechanism);
    size_t n = s->monitor ? vmt_monitor_hook_count(s->monitor) : 0;
    fprintf(f, "   %-24s %10s %10s %12s  %s\n", "hook", "hits", "returns", "guest count", "state");
    for (size_t i = 0; i < n; i++) {
        char gc[32] = "-";
        const char *verdict = "";
        if (i < CLI_MAX_HOOKS && s->guest_counts[i] >= 0) {
            snprintf(gc, sizeof gc, "%" PRId64, s->guest_counts[i]);
            verdict = (uint64_t)s->guest_counts[i] == vmt_monitor_hook_hits(s->monitor, i) ? "  ok"
                                                                                           : "  MISMATCH";
        }
        char rets[32] = "-";
        if (vmt_monitor_hook_has_return(s->monitor, i))
            snprintf(rets, sizeof rets, "%" PRIu64, vmt_monitor_hook_returns(s->monitor, i));
        vmt_hook_status hs;
        const char *state = vmt_monitor_hook_status(s->monitor, i, &hs) == VMT_OK ? vmt_hook_state_name(hs.state) : "?";
        fprintf(f, "   %-24s %10" PRIu64 " %10s %12s  %s%s\n", vmt_monitor_hook_symbol(s->monitor, i),
                vmt_monitor_hook_hits(s->monitor, i), rets, gc, state, verdict);
    }
    /* Every refusal named with its root and reason: a hook lost silently
     * is the worst failure for an analyst. */
    for (size_t i = 0; i < n; i++) {
        vmt_hook_status hs;
        if (vmt_monitor_hook_status(s->monitor, i, &hs) != VMT_OK || !hs.refusals)
            continue;
        fprintf(f, "   hook %s: refused under root 0x%" PRIx64 ": %s%s\n", vmt_monitor_hook_symbol(s->monitor, i),
                hs.refused_root, hs.refused_why,
                hs.state == VMT_HOOK_REFUSED ? "" : hs.roots_refused ? " (armed or pending under other roots)"
                                                                     : " (since armed again)");
    }
    if (st) {
        fprintf(f, "   page events: %" PRIu64 " page-in, %" PRIu64 " page-out, %" PRIu64
                   " remap (%" PRIu64 " monitored page-table writes)\n",
                st->page_in, st->page_out, st->remap, st->pt_writes);
        fprintf(f, "   monitor: %" PRIu64 " hidden reads/writes served, %" PRIu64 " guest INT3 reinjected, %" PRIu64
                   " CR3 writes, %" PRIu64 " guest reports (%" PRIu64 " malformed)\n",
                st->hidden_accesses, st->foreign_int3, st->cr3_writes, st->ucalls, st->ucall_errors);
        fprintf(f, "   address spaces: %" PRIu64 " followed", st->roots);
        if (st->roots_failed || st->roots_ignored || st->hook_refusals)
            fprintf(f, ", %" PRIu64 " with a hook refused (hostile tables; %" PRIu64 " refusals), %" PRIu64
                       " past the limit",
                    st->roots_failed, st->hook_refusals, st->roots_ignored);
        if (st->returns_missed)
            fprintf(f, "; %" PRIu64 " returns could not be hooked (no breakpoint resource or unreadable stack)",
                    st->returns_missed);
        fputc('\n', f);
        if (st->alias_hits)
            fprintf(f, "   %" PRIu64 " hits came through another virtual address of a hooked frame (counted as hits)\n",
                    st->alias_hits);
        if (s->controller == VMT_BPM_CTL_DEBUG)
            fprintf(f, "   debug registers match virtual addresses: calls through another mapping of a hooked "
                       "function are not seen\n");
        if (st->errors)
            fprintf(f, "   MONITOR ERRORS: %" PRIu64 " (survived, watches re-walked %" PRIu64 " times); first: %s\n",
                    st->errors, st->resyncs, vmt_monitor_first_error(s->monitor));
    }
    if (s->have_driver_stats) {
        const vmt_driver_stats *d = &s->dstats;
        fprintf(f, "   exits: %" PRIu64 " total, %" PRIu64 " handled inside the driver;", d->exits, d->internal_exits);
        for (int k = 1; k < VMT_EVENT_KIND_COUNT; k++)
            if (d->events[k])
                fprintf(f, " %s %" PRIu64, vmt_event_kind_name((vmt_event_kind)k), d->events[k]);
        fputc('\n', f);
    }
    if (st && st->ndetectors) {
        unsigned pass = 0;
        for (size_t i = 0; i < st->ndetectors; i++)
            pass += st->detectors[i].pass ? 1u : 0u;
        fprintf(f, "   stealth detectors: %u of %zu pass\n", pass, st->ndetectors);
        for (size_t i = 0; i < st->ndetectors; i++) {
            char name[sizeof st->detectors[i].name], detail[sizeof st->detectors[i].detail]; /* guest text */
            fprintf(f, "     %-4s %u %-28s %s\n", st->detectors[i].pass ? "pass" : "FAIL", st->detectors[i].id,
                    cli_escape_guest_text(st->detectors[i].name, name, sizeof name),
                    cli_escape_guest_text(st->detectors[i].detail, detail, sizeof detail));
            if (!st->detectors[i].pass)
                fprintf(f, "          why: %s\n", cli_detector_why(st->detectors[i].id, s->controller));
        }
    }
    if (s->entry_checked)
        fprintf(f, "   entry bytes the guest read vs the ELF file: %u of %u functions equal\n",
                s->entry_checked - s->entry_mismatch, s->entry_checked);
    if (st && st->guest_done)
        fprintf(f, "   guest finished with exit code %" PRIu64 "\n", st->guest_exit_code);
    fprintf(f, "   time: %.3f s wall", s->wall_seconds);
    if (s->have_driver_stats)
        fprintf(f, ", %.3f s guest, %.3f s monitor", (double)s->dstats.ns_guest / 1e9,
                (double)s->dstats.ns_monitor / 1e9);
    if (s->have_driver_stats && s->dstats.instructions)
        fprintf(f, ", %" PRIu64 " instructions", s->dstats.instructions);
    fputc('\n', f);
    int have_guest_counts = 0;
    for (size_t i = 0; i < n && i < CLI_MAX_HOOKS; i++)
        have_guest_counts |= s->guest_counts[i] >= 0;
    if (have_guest_counts)
        fprintf(f, "   hook counts %s the guest's own counts\n", s->counts_match ? "equal" : "DO NOT equal");
}

void cli_log_summary(cli_log *l, const cli_summary *s)
{
    if (l->json) {
        json_object *o = summary_json(s);
        fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), l->out);
        fputc('\n', l->out);
        json_object_put(o);
    } else {
        summary_text(l->out, s);
    }
    fflush(l->out);
}
