/*
 * tests/kvm/kvm_guest.c — helpers for the KVM driver tests (see kvm_guest.h).
 */
#include "kvm_guest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>

#include <cmocka.h>

#include "vmtrap/kvm.h"
#include "vmtrap/machine.h"

vmt_driver *kg_driver(const uint8_t *code, size_t len, uint64_t ram_size)
{
    char why[256] = "";
    vmt_image_segment seg = { .pa = KG_CODE_PA, .data = code, .filesz = len, .memsz = len };
    vmt_image *img = NULL;
    if (vmt_image_from_segments(&seg, 1, NULL, ram_size, &img, why, sizeof why) != VMT_OK)
        fail_msg("image: %s", why);
    vmt_machine_config cfg = { .ram_size = ram_size, .image = img, .extra_frames = 64 };
    vmt_driver *d = NULL;
    vmt_status st = vmt_kvm_driver_create(&cfg, &d, why, sizeof why);
    vmt_image_destroy(img);
    if (st != VMT_OK)
        fail_msg("kvm driver: %s", why);
    return d;
}

void kg_expect(vmt_driver *d, vmt_event_kind kind, vmt_event *ev)
{
    vmt_status st = vmt_drv_wait_event(d, 10000, ev);
    if (st != VMT_OK)
        fail_msg("waiting for %s: %s (%s)", vmt_event_kind_name(kind), vmt_strerror(st), vmt_driver_error(d));
    if (ev->kind != kind)
        fail_msg("expected a %s event, got %s at rip 0x%llx%s%s", vmt_event_kind_name(kind),
                 vmt_event_kind_name(ev->kind), (unsigned long long)ev->regs.rip,
                 ev->kind == VMT_EVENT_STOPPED ? ": " : "", ev->kind == VMT_EVENT_STOPPED ? ev->u.stop.message : "");
}

void kg_expect_io(vmt_driver *d, uint64_t value, vmt_event *ev)
{
    kg_expect(d, VMT_EVENT_IO, ev);
    assert_int_equal(ev->u.io.value, value);
    kg_continue(d, ev);
}

void kg_expect_io_on(vmt_driver *d, uint64_t port, uint64_t value, vmt_event *ev)
{
    kg_expect(d, VMT_EVENT_IO, ev);
    assert_int_equal(ev->u.io.port, port);
    assert_int_equal(ev->u.io.value, value);
    kg_continue(d, ev);
}

void kg_continue(vmt_driver *d, const vmt_event *ev)
{
    vmt_response r = vmt_response_continue();
    if (vmt_drv_respond(d, ev, &r) != VMT_OK)
        fail_msg("respond: %s", vmt_driver_error(d));
}

void kg_check(vmt_driver *d)
{
    if (vmt_kvm_check(d) != VMT_OK)
        fail_msg("kvm invariant: %s", vmt_driver_error(d));
}
