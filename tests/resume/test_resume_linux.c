/*
 * tests/resume/test_resume_linux.c — issue 12's acceptance on the project's
 * real Debian snapshot (scripts/make-linux-snapshot.sh, cached in
 * ${VMT_CACHE_DIR:-~/.cache/vmtrap}/linux-snapshot/; the ctest fixture
 * resume_linux_snapshot makes it): the bare ELF core, no sidecar, resumed
 * on the emulator with the PC platform.
 *
 *  - ticks: the busybox loop keeps printing: at least 20 more "tick N pid P"
 *    lines than the dump's console had, each line complete, numbered on
 *    from the dump's last tick, by the loop's pid; the guest's own clock
 *    advances (each tick sleeps 1 s of guest time, so 20 ticks take 19-40 s
 *    of virtual time, and the kernel's jiffies_64 moves at its HZ).
 *  - idle: the core was taken while the kernel idled in HLT: the vCPU is
 *    resumed halted and the re-armed LAPIC timer wakes it (the next tick
 *    comes).
 *  - determinism: a vmtrap snapshot saved mid-run, loaded and run on,
 *    prints exactly what the uninterrupted run printed; three runs from the
 *    same starting point with restores (dirty pages) between them print the
 *    same console.
 * Bounded by instructions (a watchdog against a guest that stops ticking),
 * never by wall time. Skipped (77) only when qemu-system-x86_64 is not
 * installed (then the fixture cannot make the snapshot).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmtrap/os.h"
#include "vmtrap/resume.h"

#define SLICE 10000000ull          /* instructions per run slice */
#define MAX_INSNS 2000000000ull    /* watchdog: 20 ticks need far less */
#define MAX_LINES 4096

static char core_path[600], serial_path[600];
static int dump_last_tick, loop_pid;

typedef struct console {
    char *lines[MAX_LINES];
    size_t n;
} console;

static void on_serial(void *ctx, const char *line)
{
    console *c = ctx;
    if (c->n < MAX_LINES)
        c->lines[c->n++] = strdup(line);
}

static void console_free(console *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->lines[i]);
    c->n = 0;
}

static int tick_of(const char *line, int *pid)
{
    int n = 0, p = 0, used = 0;
    if (sscanf(line, "tick %d pid %d%n", &n, &p, &used) == 2 && line[used] == 0) {
        *pid = p;
        return n;
    }
    return -1;
}

static size_t ticks_in(const console *c)
{
    size_t t = 0;
    int pid;
    for (size_t i = 0; i < c->n; i++)
        t += tick_of(c->lines[i], &pid) > 0;
    return t;
}

static vmt_resume *open_machine(const char *path, console *c)
{
    vmt_resume_config cfg = { .serial = on_serial, .serial_ctx = c, .quiet = true };
    vmt_resume *r = NULL;
    char why[512] = "";
    vmt_status st = vmt_resume_open(path, &cfg, &r, why, sizeof why);
    if (st)
        fail_msg("resume %s: %s", path, why);
    return r;
}

/* Run until `want` tick lines arrived or `bound` instructions. */
static uint64_t run_until_ticks(vmt_resume *r, console *c, size_t want, uint64_t bound)
{
    uint64_t done = 0;
    while (ticks_in(c) < want && done < bound) {
        vmt_stop_info stop;
        assert_int_equal(vmt_resume_run(r, SLICE, 0, &stop, &done), VMT_OK);
        if (stop.reason != VMT_STOP_INSN_LIMIT)
            fail_msg("the guest stopped after %" PRIu64 " instructions, %zu ticks: %s: %s", done, ticks_in(c),
                     vmt_stop_reason_name(stop.reason), stop.message);
    }
    return done;
}

/* Physical address of the kernel's jiffies_64 (kallsyms from the snapshot's
 * RAM; kernel image VA -> PA by the image's placement). */
static uint64_t jiffies_pa(vmt_resume *r)
{
    vmt_os *os = NULL;
    vmt_driver *ro = NULL;
    vmt_os_config oc = { .no_btf = 1 };
    char why[256];
    if (vmt_os_open_snapshot(vmt_resume_snapshot(r), &oc, &os, &ro, why, sizeof why))
        fail_msg("OS layer over the core: %s", why);
    vmt_os_symbol sym;
    assert_int_equal(vmt_os_symbol_by_name(os, "jiffies_64", &sym), VMT_OK);
    vmt_os_info info;
    vmt_os_get_info(os, &info);
    uint64_t pa = info.text_pa + (sym.addr - info.text_va);
    vmt_os_close(os);
    vmt_driver_destroy(ro);
    return pa;
}

static uint64_t read_jiffies(vmt_resume *r, uint64_t pa)
{
    uint64_t j = 0;
    assert_int_equal(vmt_drv_read_phys(vmt_resume_driver(r), pa, &j, sizeof j), VMT_OK);
    return j;
}

static void test_ticks_continue(void **state)
{
    (void)state;
    console c = { 0 };
    vmt_resume *r = open_machine(core_path, &c);
    uint64_t jpa = jiffies_pa(r), j0 = read_jiffies(r, jpa);
    uint64_t ns0 = vmt_resume_now_ns(r);
    uint64_t insns = run_until_ticks(r, &c, 20, MAX_INSNS);
    uint64_t ns = vmt_resume_now_ns(r) - ns0;
    print_message("20 ticks in %" PRIu64 " instructions, %.2f s of guest time\n", insns, (double)ns / 1e9);
    assert_true(ticks_in(&c) >= 20);
    int expect = dump_last_tick + 1;
    for (size_t i = 0; i < c.n; i++) {
        int pid = 0, t = tick_of(c.lines[i], &pid);
        if (t < 0) {
            /* Only tick lines are expected from this loop. */
            fail_msg("console line %zu is not a complete tick line: '%s'", i, c.lines[i]);
        }
        assert_int_equal(t, expect);
        assert_int_equal(pid, loop_pid);
        expect++;
    }
    /* Each iteration sleeps 1 s by the guest's own clock. */
    assert_true(ns >= 19ull * 1000000000ull);
    assert_true(ns <= 40ull * 1000000000ull);
    /* ... and the guest's own clock moved with it: jiffies at HZ 100..1000. */
    uint64_t dj = read_jiffies(r, jpa) - j0;
    double hz = (double)dj / ((double)ns / 1e9);
    print_message("jiffies_64 advanced by %" PRIu64 " (%.0f per guest second)\n", dj, hz);
    assert_true(hz >= 90 && hz <= 1100);
    assert_int_equal(vmt_resume_check(r), VMT_OK);
    vmt_resume_close(r);
    console_free(&c);
}

static void test_idle_wakes(void **state)
{
    (void)state;
    console c = { 0 };
    vmt_resume *r = open_machine(core_path, &c);
    const vmt_vcpu_state *v = vmt_snapshot_vcpu(vmt_resume_snapshot(r), 0);
    assert_non_null(v);
    assert_true(v->halted); /* reconstructed: HLT before RIP, IF = 1 */
    int noted = 0;
    for (size_t i = 0; i < vmt_resume_note_count(r); i++)
        noted |= strstr(vmt_resume_note_at(r, i), "halted") != NULL;
    assert_true(noted);
    vmt_regs regs;
    assert_int_equal(vmt_drv_get_regs(vmt_resume_driver(r), 0, &regs), VMT_OK);
    uint64_t hlt_rip = regs.rip;
    vmt_stop_info stop;
    uint64_t done = 0;
    assert_int_equal(vmt_resume_run(r, 1000, 0, &stop, &done), VMT_OK);
    assert_int_equal(stop.reason, VMT_STOP_INSN_LIMIT);
    assert_int_equal(done, 1000);
    assert_int_equal(vmt_drv_get_regs(vmt_resume_driver(r), 0, &regs), VMT_OK);
    assert_true(regs.rip != hlt_rip); /* it left the idle HLT (the timer interrupt) */
    run_until_ticks(r, &c, 1, 200000000ull);
    assert_true(ticks_in(&c) >= 1);
    vmt_resume_close(r);
    console_free(&c);
}

static int same_console(const console *a, size_t a_from, const console *b)
{
    if (a->n - a_from != b->n)
        return 0;
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(a->lines[a_from + i], b->lines[i]) != 0)
            return 0;
    return 1;
}

static void test_save_load_and_runs(void **state)
{
    (void)state;
    const uint64_t first = 12000000ull, second = 18000000ull; /* ~4 and ~6 ticks */
    char vmts[] = "/tmp/vmtrap-resume-XXXXXX";
    int fd = mkstemp(vmts);
    assert_true(fd >= 0);
    close(fd);

    /* Uninterrupted: `first` instructions, save, `second` more. */
    console a = { 0 };
    vmt_resume *r = open_machine(core_path, &a);
    vmt_stop_info stop;
    uint64_t done = 0;
    assert_int_equal(vmt_resume_run(r, first, 0, &stop, &done), VMT_OK);
    assert_int_equal(stop.reason, VMT_STOP_INSN_LIMIT);
    assert_int_equal(vmt_resume_save(r, vmts), VMT_OK);
    size_t at_save = a.n;
    assert_int_equal(vmt_resume_run(r, second, 0, &stop, &done), VMT_OK);
    assert_int_equal(stop.reason, VMT_STOP_INSN_LIMIT);
    assert_true(a.n > at_save); /* the part after the save printed something */

    /* Loaded from the vmtrap snapshot: the same `second` instructions. */
    console b = { 0 };
    vmt_resume *r2 = open_machine(vmts, &b);
    done = 0;
    assert_int_equal(vmt_resume_run(r2, second, 0, &stop, &done), VMT_OK);
    assert_int_equal(stop.reason, VMT_STOP_INSN_LIMIT);
    if (!same_console(&a, at_save, &b))
        fail_msg("after the save the uninterrupted run printed %zu lines, the loaded snapshot %zu", a.n - at_save, b.n);
    vmt_resume_close(r2);
    unlink(vmts);

    /* Three runs from the core's starting point, restored in between:
     * all land in one console, in order, so it holds three equal thirds. */
    vmt_resume_close(r);
    console runs = { 0 };
    r = open_machine(core_path, &runs);
    size_t ends[3];
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            vmt_snapshot_run_stats rs;
            assert_int_equal(vmt_resume_restore(r, &rs), VMT_OK);
            assert_true(rs.last_dirty_pages > 0);
        }
        assert_int_equal(vmt_resume_run(r, first + second, 0, &stop, &done), VMT_OK);
        assert_int_equal(stop.reason, VMT_STOP_INSN_LIMIT);
        vmt_platform_serial_flush(vmt_resume_platform(r));
        ends[i] = runs.n;
    }
    size_t third = ends[0];
    assert_true(third > 0);
    assert_int_equal(ends[1], 2 * third);
    assert_int_equal(ends[2], 3 * third);
    for (size_t k = 0; k < third; k++) {
        assert_string_equal(runs.lines[k], runs.lines[third + k]);
        assert_string_equal(runs.lines[k], runs.lines[2 * third + k]);
    }
    /* and each equals the uninterrupted run's console (complete lines) */
    vmt_platform_serial_flush(vmt_resume_platform(r));
    for (size_t k = 0; k < third && k < a.n; k++)
        assert_string_equal(runs.lines[k], a.lines[k]);
    assert_int_equal(vmt_resume_check(r), VMT_OK);
    vmt_resume_close(r);
    console_free(&a);
    console_free(&b);
    console_free(&runs);
}

static int read_dump_console(void)
{
    FILE *f = fopen(serial_path, "r");
    if (!f)
        return -1;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        int pid = 0, t = tick_of(line, &pid);
        if (t > 0) {
            dump_last_tick = t;
            loop_pid = pid;
        }
    }
    fclose(f);
    return dump_last_tick > 0 ? 0 : -1;
}

static int have_qemu(void)
{
    return system("command -v qemu-system-x86_64 >/dev/null 2>&1") == 0;
}

int main(void)
{
    const char *cache = getenv("VMT_CACHE_DIR");
    const char *home = getenv("HOME");
    char dir[512];
    if (cache && *cache)
        snprintf(dir, sizeof dir, "%s/linux-snapshot", cache);
    else
        snprintf(dir, sizeof dir, "%s/.cache/vmtrap/linux-snapshot", home ? home : "/root");
    snprintf(core_path, sizeof core_path, "%s/core.elf", dir);
    snprintf(serial_path, sizeof serial_path, "%s/serial.txt", dir);
    if (access(core_path, R_OK) != 0 || read_dump_console() != 0) {
        if (!have_qemu()) {
            printf("skipped: qemu-system-x86_64 is not installed, so there is no Linux snapshot (%s)\n", dir);
            return 77;
        }
        fprintf(stderr, "no usable Linux snapshot in %s although QEMU is installed: the fixture "
                        "resume_linux_snapshot (scripts/make-linux-snapshot.sh) should have made it\n", dir);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_wakes),
        cmocka_unit_test(test_ticks_continue),
        cmocka_unit_test(test_save_load_and_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
