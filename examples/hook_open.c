/*
 * examples/hook_open.c — the smallest useful vmtrap program: boot an ELF
 * guest on the emulator driver, put a hidden breakpoint on one function and
 * print the string its first argument points to, until the guest stops.
 *
 *   hook_open GUEST.elf [SYMBOL]      (default SYMBOL: svc_open)
 *
 * Built and run by the tests on the bundled workload guest, so this file is
 * known to work as written (the README quotes it).
 */
#include <stdio.h>

#include "vmtrap/emu.h"
#include "vmtrap/monitor.h"
#include "vmtrap/vmtrap.h"

static vmt_status on_call(const vmt_hit *hit, void *user)
{
    unsigned *calls = user;
    char path[128];
    vmt_va fault = 0;
    vmt_status st = vmt_hit_read_str(hit, vmt_regs_sysv_arg(&hit->regs, 0), path, sizeof path, &fault);
    if (st == VMT_E_NOT_PRESENT)
        printf("%s(<paged out at 0x%llx>)\n", hit->symbol, (unsigned long long)fault);
    else if (st == VMT_OK)
        printf("%s(\"%s\")\n", hit->symbol, path);
    else
        return st;
    (*calls)++;
    return VMT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s GUEST.elf [SYMBOL]\n", argv[0]);
        return 2;
    }
    const char *symbol = argc > 2 ? argv[2] : "svc_open";
    const uint64_t ram = 64ull << 20;
    char why[256] = "";
    vmt_image *img = NULL;
    vmt_session *s = NULL;
    vmt_monitor *m = NULL;
    vmt_driver *drv = NULL;
    unsigned calls = 0;
    int rc = 1;

    if (vmt_image_load_elf(argv[1], ram, &img, why, sizeof why) != VMT_OK)
        goto fail;
    vmt_machine_config mc = { .ram_size = ram, .image = img };
    if (vmt_emu_driver_create(&mc, &drv, why, sizeof why) != VMT_OK)
        goto fail;
    if (vmt_session_create(drv, NULL, &s) != VMT_OK) { /* the session owns drv from here */
        snprintf(why, sizeof why, "could not create the session (out of memory)");
        goto fail;
    }
    if (vmt_monitor_create(s, img, &m, why, sizeof why) != VMT_OK)
        goto fail;
    if (vmt_monitor_hook(m, symbol, on_call, &calls) != VMT_OK ||
        vmt_session_stop_on_signals(s) != VMT_OK || vmt_monitor_run(m) != VMT_OK) {
        snprintf(why, sizeof why, "%s", vmt_monitor_error(m));
        goto fail;
    }
    printf("%u calls of %s; guest stopped: %s\n", calls, symbol,
           vmt_session_last_stop(s)->reason ? vmt_stop_reason_name(vmt_session_last_stop(s)->reason)
                                            : "stop requested");
    rc = calls > 0 ? 0 : 1;
    goto out;
fail:
    fprintf(stderr, "hook_open: %s\n", why);
out:
    vmt_monitor_destroy(m);
    vmt_session_destroy(s);
    vmt_image_destroy(img);
    return rc;
}
