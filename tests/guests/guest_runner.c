/*
 * tests/guests/guest_runner.c — see guest_runner.h. Drivers are compiled in
 * when CMake found them (GUEST_RUNNER_HAVE_EMU / _KVM).
 */
#include "guest_runner.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/testutil.h"
#include "vmtrap/image.h"
#include "vmtrap/machine.h"
#include "vmtrap/session.h"
#ifdef GUEST_RUNNER_HAVE_EMU
#include "vmtrap/emu.h"
#endif
#ifdef GUEST_RUNNER_HAVE_KVM
#include "vmtrap/kvm.h"
#endif

static void on_serial(void *ctx, const char *line)
{
    guest_run *r = ctx;
    char **grown = realloc(r->serial, (r->nserial + 1) * sizeof(*grown));
    if (!grown)
        return;
    r->serial = grown;
    r->serial[r->nserial] = strdup(line);
    if (r->serial[r->nserial])
        r->nserial++;
}

static vmt_status on_event(vmt_session *s, const vmt_event *ev, vmt_response *resp, void *user)
{
    guest_run *r = user;
    *resp = vmt_response_continue();
    switch (ev->kind) {
    case VMT_EVENT_IO: {
        if (!vmt_ucall_is_ucall(ev))
            break;
        vmt_phys_reader rd = vmt_session_reader(s);
        vmt_ucall uc;
        char why[256];
        if (vmt_ucall_decode(&rd, r->ram_size, ev, &uc, why, sizeof(why)) != VMT_OK) {
            snprintf(r->error, sizeof(r->error), "bad ucall: %s", why);
            vmt_session_request_stop(s);
            break;
        }
        if (r->ncalls == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 64;
            vmt_ucall *grown = realloc(r->calls, cap * sizeof(*grown));
            if (!grown)
                return VMT_E_NOMEM;
            r->calls = grown;
            r->cap = cap;
        }
        r->calls[r->ncalls++] = uc;
        if (r->cfg && r->cfg->on_ucall)
            r->cfg->on_ucall(r->cfg->on_ucall_ctx, vmt_session_driver(s), &uc);
        if (uc.cmd == VMT_UCALL_DONE) {
            r->done = 1;
            r->exit_code = (int64_t)uc.args[0];
            vmt_session_request_stop(s);
        }
        break;
    }
    case VMT_EVENT_BREAKPOINT:
        resp->actions = VMT_RESP_REINJECT;
        r->reinjected_bps++;
        break;
    case VMT_EVENT_STOPPED:
        r->stopped = 1;
        r->stop = ev->u.stop;
        break;
    default:
        break;
    }
    return VMT_OK;
}

static vmt_status create_driver(const char *driver, const vmt_machine_config *cfg,
                                const struct vmt_emu_options *emu_options, vmt_driver **d, char *why, size_t why_len)
{
    (void)emu_options;
    if (!strcmp(driver, "emu")) {
#ifdef GUEST_RUNNER_HAVE_EMU
        return vmt_emu_driver_create_ex(cfg, emu_options, d, why, why_len);
#else
        snprintf(why, why_len, "the emulator driver is not built");
        return VMT_E_NOTSUP;
#endif
    }
    if (!strcmp(driver, "kvm")) {
#ifdef GUEST_RUNNER_HAVE_KVM
        if (!vmt_test_kvm_available(why, why_len))
            return VMT_E_NOTSUP;
        return vmt_kvm_driver_create(cfg, d, why, why_len);
#else
        snprintf(why, why_len, "the KVM driver is not built");
        return VMT_E_NOTSUP;
#endif
    }
    snprintf(why, why_len, "unknown driver '%s'", driver);
    return VMT_E_INVAL;
}

static vmt_status driver_check(const char *driver, vmt_driver *d)
{
#ifdef GUEST_RUNNER_HAVE_EMU
    if (!strcmp(driver, "emu"))
        return vmt_emu_check(d);
#endif
#ifdef GUEST_RUNNER_HAVE_KVM
    if (!strcmp(driver, "kvm"))
        return vmt_kvm_check(d);
#endif
    (void)driver;
    (void)d;
    return VMT_OK;
}

vmt_status guest_run_elf(const char *driver, const char *elf_path, uint64_t ram_size,
                         const guest_param *params, size_t nparams, double time_limit_s,
                         guest_run *out)
{
    return guest_run_elf_machine(driver, elf_path, ram_size, NULL, NULL, params, nparams, time_limit_s, out);
}

vmt_status guest_run_elf_machine(const char *driver, const char *elf_path, uint64_t ram_size, const vmt_bus *bus,
                                 const vmt_clock_config *clock, const guest_param *params, size_t nparams,
                                 double time_limit_s, guest_run *out)
{
    return guest_run_elf_hooked(driver, elf_path, ram_size, bus, clock, params, nparams, time_limit_s, NULL, NULL,
                                out);
}

vmt_status guest_run_elf_hooked(const char *driver, const char *elf_path, uint64_t ram_size, const vmt_bus *bus,
                                const vmt_clock_config *clock, const guest_param *params, size_t nparams,
                                double time_limit_s, guest_driver_fn on_driver, void *on_driver_ctx,
                                guest_run *out)
{
    guest_run_config c = { .driver = driver, .elf_path = elf_path, .ram_size = ram_size, .bus = bus,
                           .clock = clock, .params = params, .nparams = nparams, .time_limit_s = time_limit_s,
                           .on_driver = on_driver, .on_driver_ctx = on_driver_ctx };
    return guest_run_config_elf(&c, out);
}

vmt_status guest_run_config_elf(const guest_run_config *c, guest_run *out)
{
    const char *driver = c->driver, *elf_path = c->elf_path;
    uint64_t ram_size = c->ram_size;
    const vmt_bus *bus = c->bus;
    const vmt_clock_config *clock = c->clock;
    const guest_param *params = c->params;
    size_t nparams = c->nparams;
    double time_limit_s = c->time_limit_s;
    guest_driver_fn on_driver = c->on_driver;
    void *on_driver_ctx = c->on_driver_ctx;
    memset(out, 0, sizeof(*out));
    out->ram_size = ram_size;
    vmt_image *img = NULL;
    vmt_status st = vmt_image_load_elf(elf_path, ram_size, &img, out->error, sizeof(out->error));
    if (st)
        return st;
    vmt_machine_config cfg = { .ram_size = ram_size, .image = img, .serial = on_serial, .serial_ctx = out };
    if (bus)
        cfg.bus = *bus;
    if (clock)
        cfg.clock = *clock;
    vmt_driver *d = NULL;
    st = create_driver(driver, &cfg, c->emu_options, &d, out->error, sizeof(out->error));
    if (st) {
        vmt_image_destroy(img);
        return st;
    }
    if (on_driver && (st = on_driver(on_driver_ctx, d)) != VMT_OK)
        snprintf(out->error, sizeof(out->error), "driver callback: %s (%s)", vmt_strerror(st), vmt_driver_error(d));
    for (size_t i = 0; i < nparams && !st; i++) {
        vmt_va va;
        uint64_t size;
        st = vmt_image_symbol(img, params[i].symbol, &va, &size);
        if (st || va < GUEST_KERNEL_VMA) {
            snprintf(out->error, sizeof(out->error), "guest parameter %s: no such symbol", params[i].symbol);
            st = st ? st : VMT_E_NOTFOUND;
            break;
        }
        st = vmt_drv_write_phys(d, va - GUEST_KERNEL_VMA, &params[i].value, sizeof(params[i].value));
        if (st)
            snprintf(out->error, sizeof(out->error), "writing %s: %s", params[i].symbol, vmt_driver_error(d));
    }
    vmt_image_destroy(img);
    if (st) {
        vmt_driver_destroy(d);
        return st;
    }
    out->caps_flags = vmt_driver_caps(d)->flags;
    if (time_limit_s > 0 && vmt_driver_has(d, VMT_CAP_TIME_LIMIT))
        vmt_drv_set_limit(d, time_limit_s, 0);
    vmt_session *s = NULL;
    st = vmt_session_create(d, NULL, &s);
    if (st) {
        snprintf(out->error, sizeof(out->error), "session: %s", vmt_strerror(st));
        return st;
    }
    out->cfg = c;
    st = vmt_session_run(s, on_event, out);
    out->cfg = NULL;
    if (st && !out->error[0])
        snprintf(out->error, sizeof(out->error), "run: %s: %s", vmt_strerror(st), vmt_session_error(s));
    /* the run left the session and the driver consistent */
    if (!out->error[0] && vmt_session_check(s) != VMT_OK)
        snprintf(out->error, sizeof(out->error), "session check: %s", vmt_session_error(s));
    if (!out->error[0] && driver_check(driver, vmt_session_driver(s)) != VMT_OK)
        snprintf(out->error, sizeof(out->error), "%s driver check: %s", driver,
                 vmt_driver_error(vmt_session_driver(s)));
    vmt_session_destroy(s);
    return out->error[0] ? (st ? st : VMT_E_FORMAT) : VMT_OK;
}

void guest_run_free(guest_run *r)
{
    free(r->calls);
    for (size_t i = 0; i < r->nserial; i++)
        free(r->serial[i]);
    free(r->serial);
    memset(r, 0, sizeof(*r));
}

const vmt_ucall *guest_run_find(const guest_run *r, vmt_ucall_cmd cmd, const char *name, size_t nth)
{
    for (size_t i = 0; i < r->ncalls; i++) {
        const vmt_ucall *u = &r->calls[i];
        if (u->cmd == cmd && (!name || !strcmp(u->name, name)) && nth-- == 0)
            return u;
    }
    return NULL;
}

size_t guest_run_count(const guest_run *r, vmt_ucall_cmd cmd, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->ncalls; i++)
        n += r->calls[i].cmd == cmd && (!name || !strcmp(r->calls[i].name, name));
    return n;
}

uint64_t guest_run_report(const guest_run *r, const char *key, int *found)
{
    const vmt_ucall *u = guest_run_find(r, VMT_UCALL_REPORT, key, 0);
    if (found)
        *found = u != NULL;
    return u ? u->args[0] : 0;
}

void guest_run_dump(const guest_run *r)
{
    char line[512];
    for (size_t i = 0; i < r->ncalls; i++) {
        vmt_ucall_format(&r->calls[i], line, sizeof(line));
        fprintf(stderr, "  ucall %zu: %s\n", i, line);
    }
    for (size_t i = 0; i < r->nserial; i++)
        fprintf(stderr, "  serial: %s\n", r->serial[i]);
    if (r->stopped)
        fprintf(stderr, "  stopped: %s %s\n", vmt_stop_reason_name(r->stop.reason), r->stop.message);
    if (r->error[0])
        fprintf(stderr, "  error: %s\n", r->error);
}

vmt_status guest_elf_symbol_hash(const char *elf_path, const char *symbol, size_t len, uint64_t *hash,
                                 char *why, size_t why_len)
{
    vmt_image *img = NULL;
    *hash = 0;
    vmt_status st = vmt_image_load_elf(elf_path, 1ULL << 30, &img, why, why_len);
    if (st)
        return st;
    vmt_va va;
    uint64_t size;
    st = vmt_image_symbol(img, symbol, &va, &size);
    if (st) {
        snprintf(why, why_len, "no symbol %s", symbol);
        vmt_image_destroy(img);
        return st;
    }
    vmt_pa pa = va - GUEST_KERNEL_VMA;
    st = VMT_E_NOTFOUND;
    snprintf(why, why_len, "%s at pa 0x%" PRIx64 " is not in a loaded segment", symbol, pa);
    for (size_t i = 0; i < vmt_image_segment_count(img); i++) {
        const vmt_image_segment *g = vmt_image_segment_at(img, i);
        if (pa >= g->pa && pa + len <= g->pa + g->filesz) {
            uint64_t h = 0xcbf29ce484222325ULL;
            for (size_t k = 0; k < len; k++) {
                h ^= g->data[pa - g->pa + k];
                h *= 0x100000001b3ULL;
            }
            *hash = h;
            st = VMT_OK;
            break;
        }
    }
    vmt_image_destroy(img);
    return st;
}
