/*
 * tests/conformance/conformance.c — the runner of the driver conformance
 * suite and the fixture helpers (see conformance.h).
 *
 * Groups come from the generated registry (conf_registry.c, one entry per
 * conf_*.c file). Each group is run as one cmocka group; its tests are
 * copied with initial_state pointing at a per-group context (factory, driver
 * name, group) so the setup can build the fixture without global state.
 * The setup makes a fresh driver per test, the teardown destroys it:
 * tests cannot leak state into each other.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf_registry.h"
#include "conformance.h"

typedef struct group_ctx {
    const vmt_conformance_factory *factory;
    const char *driver_name;
    const vmt_conformance_group *group;
} group_ctx;

vmt_machine_config vmt_conf_default_config(const vmt_conf *c)
{
    vmt_machine_config mc;
    memset(&mc, 0, sizeof mc);
    mc.ram_size = 2u << 20;
    mc.vcpus = 1;
    mc.extra_frames = 64;
    mc.image = c->factory->image;
    return mc;
}

vmt_status vmt_conf_reopen(vmt_conf *c, const vmt_machine_config *cfg)
{
    vmt_driver_destroy(c->d);
    c->d = NULL;
    c->caps = NULL;
    c->cfg = *cfg;
    if (!c->cfg.image)
        c->cfg.image = c->factory->image;
    c->why[0] = '\0';
    vmt_status st = c->factory->create(c->factory->ctx, &c->cfg, &c->d, c->why, sizeof c->why);
    if (st) {
        c->d = NULL;
        return st;
    }
    c->caps = vmt_driver_caps(c->d);
    return VMT_OK;
}

vmt_status vmt_conf_reopen_code(vmt_conf *c, const vmt_machine_config *cfg, vmt_pa code_pa, const void *code,
                                size_t len)
{
    vmt_machine_config mc = cfg ? *cfg : vmt_conf_default_config(c);
    vmt_image_segment seg = { .pa = code_pa, .data = code, .filesz = len, .memsz = len };
    vmt_image *img = NULL;
    vmt_status st = vmt_image_from_segments(&seg, 1, NULL, mc.ram_size, &img, c->why, sizeof c->why);
    if (st) {
        vmt_driver_destroy(c->d);
        c->d = NULL;
        c->caps = NULL;
        return st;
    }
    mc.image = img;
    st = vmt_conf_reopen(c, &mc); /* the driver copies what it needs from the image */
    c->cfg.image = NULL;
    vmt_image_destroy(img);
    return st;
}

int vmt_conf_setup(void **state)
{
    const group_ctx *g = *state;
    if (!g) {
        print_error("conformance: test run outside vmt_conformance_run()\n");
        return -1;
    }
    vmt_conf *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->factory = g->factory;
    c->driver_name = g->driver_name;
    c->group = g->group;
    vmt_machine_config mc = vmt_conf_default_config(c);
    vmt_status st = vmt_conf_reopen(c, &mc);
    if (st) {
        print_error("conformance: driver '%s' cannot be created: %s (%s)\n", c->driver_name, vmt_strerror(st),
                    c->why);
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

int vmt_conf_teardown(void **state)
{
    vmt_conf *c = *state;
    if (c) {
        vmt_driver_destroy(c->d);
        free(c);
    }
    *state = NULL;
    return 0;
}

vmt_conf *vmt_conf_begin(void **state, uint64_t needs)
{
    vmt_conf *c = *state;
    if (c->group->needs_cpu && !c->factory->runs_cpu)
        skip();
    uint64_t want = c->group->needs | needs;
    if (!c->d || (c->caps->flags & want) != want)
        skip();
    return c;
}

void vmt_conf_expect(vmt_conf *c, vmt_status want, vmt_status got, const char *call, const char *file, int line)
{
    if (got == want)
        return;
    print_error("driver '%s': %s\n  returned %s, expected %s\n  driver says: %s\n", c->driver_name, call,
                vmt_strerror(got), vmt_strerror(want), c->d ? vmt_driver_error(c->d) : c->why);
    _fail(file, line);
}

void vmt_conf_expect_fail(vmt_conf *c, vmt_status got, const char *call, const char *file, int line)
{
    if (got != VMT_OK)
        return;
    print_error("driver '%s': %s\n  succeeded but must fail\n", c->driver_name, call);
    _fail(file, line);
}

void vmt_conf_expect_event_at(vmt_conf *c, vmt_event_kind kind, vmt_event *ev, const char *file, int line)
{
    vmt_status st = vmt_drv_wait_event(c->d, 10000, ev);
    if (st) {
        print_error("driver '%s': waiting for a %s event: %s (%s)\n", c->driver_name, vmt_event_kind_name(kind),
                    vmt_strerror(st), vmt_driver_error(c->d));
        _fail(file, line);
    }
    if (ev->kind != kind) {
        print_error("driver '%s': expected a %s event, got %s at rip 0x%llx%s%s\n", c->driver_name,
                    vmt_event_kind_name(kind), vmt_event_kind_name(ev->kind), (unsigned long long)ev->regs.rip,
                    ev->kind == VMT_EVENT_STOPPED ? ": " : "",
                    ev->kind == VMT_EVENT_STOPPED ? ev->u.stop.message : "");
        _fail(file, line);
    }
}

void vmt_conf_continue_at(vmt_conf *c, const vmt_event *ev, const char *file, int line)
{
    vmt_response r = vmt_response_continue();
    vmt_status st = vmt_drv_respond(c->d, ev, &r);
    if (st) {
        print_error("driver '%s': CONTINUE after %s event %llu: %s (%s)\n", c->driver_name,
                    vmt_event_kind_name(ev->kind), (unsigned long long)ev->seq, vmt_strerror(st),
                    vmt_driver_error(c->d));
        _fail(file, line);
    }
}

int vmt_conformance_run_only(const char *driver_name, const vmt_conformance_factory *f, const char *group,
                             const char *test)
{
    if (!f || !f->create) {
        fprintf(stderr, "conformance: a factory with a create function is required\n");
        return 1;
    }
    int failed = 0;
    cmocka_set_test_filter(test);
    for (size_t i = 0; i < vmt_conformance_group_count; i++) {
        const vmt_conformance_group *g = vmt_conformance_groups[i];
        if ((group && strcmp(group, g->name) != 0) || g->count == 0)
            continue;
        group_ctx ctx = { f, driver_name, g };
        struct CMUnitTest *tests = calloc(g->count, sizeof *tests);
        if (!tests) {
            fprintf(stderr, "conformance: out of memory\n");
            return failed + 1;
        }
        for (size_t t = 0; t < g->count; t++) {
            tests[t] = g->tests[t];
            tests[t].initial_state = &ctx;
        }
        char title[128];
        snprintf(title, sizeof title, "conformance of driver '%s': %s", driver_name, g->name);
        print_message("[----------] %s%s\n", title, g->needs_cpu && !f->runs_cpu ? " (needs a CPU: skipped)" : "");
        failed += _cmocka_run_group_tests(title, tests, g->count, NULL, NULL);
        free(tests);
    }
    cmocka_set_test_filter(NULL);
    return failed;
}

int vmt_conformance_run(const char *driver_name, const vmt_conformance_factory *f)
{
    return vmt_conformance_run_only(driver_name, f, NULL, NULL);
}
