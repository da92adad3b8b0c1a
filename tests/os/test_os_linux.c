/*
 * tests/os/test_os_linux.c — vmt_os on a mem driver holding a fake kernel
 * (fake_kernel.c) placed with a KASLR slide: the kernel is found from RAM
 * alone, symbols both ways, BTF types and prototypes, the task list, the
 * current task per CPU, user memory through a task's page tables, a call
 * decoded from BTF, System.map agreement, and hostile cases (broken task
 * list, no BTF, no kernel, failing driver) giving clear errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_kernel.h"
#include "vmtrap/image.h"
#include "vmtrap/mem.h"
#include "vmtrap/os.h"

typedef struct fx {
    vmt_driver *d;
    vmt_os *os;
} fx;

static int open_fake(void **state, const fk_options *o)
{
    fx *f = calloc(1, sizeof *f);
    f->d = fk_create(o);
    if (!f->d)
        return -1;
    char why[256];
    if (vmt_os_open(f->d, NULL, &f->os, why, sizeof why) != VMT_OK) {
        print_error("open: %s\n", why);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state) { return open_fake(state, NULL); }

static int teardown(void **state)
{
    fx *f = *state;
    if (f) {
        vmt_os_close(f->os);
        vmt_driver_destroy(f->d);
        free(f);
    }
    return 0;
}

static void finds_the_kernel(void **state)
{
    fx *f = *state;
    vmt_os_info in;
    vmt_os_get_info(f->os, &in);
    assert_true(in.text_va == FK_TEXT_VA);
    assert_true(in.text_pa == FK_IMG_PA);
    assert_true(in.kaslr_slide == FK_SLIDE);
    assert_true(in.page_offset_base == FK_DM);
    assert_int_equal(in.levels, 4);
    assert_int_equal(in.nsyms, FK_NSYMS);
    assert_string_equal(in.version, "Linux version 6.1.0-fake (test@vmtrap) #1 SMP");
    assert_true(in.has_btf);
    assert_string_equal(in.btf_note, "");
    char why[256];
    assert_int_equal(vmt_os_check(f->os, why, sizeof why), VMT_OK);
}

static void symbols_both_ways(void **state)
{
    fx *f = *state;
    vmt_os_symbol s;
    uint64_t off;
    assert_int_equal(vmt_os_symbol_by_name(f->os, "do_sys_openat2", &s), VMT_OK);
    assert_true(s.addr == fk_sym("do_sys_openat2"));
    assert_int_equal(s.type, 'T');
    assert_int_equal(vmt_os_symbol_by_addr(f->os, fk_sym("ksys_write") + 5, &s, &off), VMT_OK);
    assert_string_equal(s.name, "ksys_write");
    assert_int_equal(off, 5);
    assert_int_equal(vmt_os_symbol_by_name(f->os, "not_a_symbol", &s), VMT_E_NOTFOUND);
    assert_non_null(strstr(vmt_os_error(f->os), "not_a_symbol"));
    /* Kernel memory through the image and through init_top_pgt (direct map). */
    char b[16];
    assert_int_equal(vmt_os_read_kernel(f->os, fk_sym("linux_banner"), b, 13, NULL), VMT_OK);
    assert_memory_equal(b, "Linux version", 13);
    assert_int_equal(vmt_os_read_kernel(f->os, FK_DM + 0x230000, b, 16, NULL), VMT_OK);
    assert_string_equal(b, "hello from user");
}

static void types_from_btf(void **state)
{
    fx *f = *state;
    uint64_t v;
    assert_int_equal(vmt_os_member_offset(f->os, "task_struct", "pid", &v), VMT_OK);
    assert_int_equal(v, 0x40);
    assert_int_equal(vmt_os_member_offset(f->os, "task_struct", "comm", &v), VMT_OK); /* in an anonymous struct */
    assert_int_equal(v, 0x60);
    assert_int_equal(vmt_os_type_size(f->os, "task_struct", &v), VMT_OK);
    assert_int_equal(v, 256);
    assert_int_equal(vmt_os_member_offset(f->os, "task_struct", "nope", &v), VMT_E_NOTFOUND);
    char text[256];
    assert_int_equal(vmt_os_prototype(f->os, "do_sys_openat2", text, sizeof text), VMT_OK);
    assert_string_equal(text, "long int do_sys_openat2(int dfd, const char *filename, struct open_how *how)");
    assert_int_equal(vmt_os_prototype(f->os, "ksys_write", text, sizeof text), VMT_OK);
    assert_string_equal(text, "long int ksys_write(unsigned int fd, const char *buf, size_t count)");
}

typedef struct seen {
    int n;
    vmt_os_task t[8];
} seen;

static int collect(void *ctx, const vmt_os_task *t)
{
    seen *s = ctx;
    if (s->n < 8)
        s->t[s->n++] = *t;
    return 0;
}

static void tasks_and_current(void **state)
{
    fx *f = *state;
    seen s = { 0 };
    assert_int_equal(vmt_os_tasks(f->os, collect, &s), VMT_OK);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.t[0].comm, "swapper/0");
    assert_int_equal(s.t[0].pid, 0);
    assert_string_equal(s.t[1].comm, "init");
    assert_int_equal(s.t[1].pid, 1);
    assert_int_equal(s.t[1].ppid, 0);
    assert_string_equal(s.t[2].comm, "sh");
    assert_int_equal(s.t[2].pid, 42);
    assert_int_equal(s.t[2].ppid, 1);
    assert_true(s.t[2].pgd_pa == FK_USER_PGD_PA);
    assert_true(s.t[1].mm_va == 0 && s.t[1].pgd_pa == 0);

    vmt_os_task cur;
    assert_int_equal(vmt_os_current_task(f->os, 0, &cur), VMT_OK);
    assert_string_equal(cur.comm, "sh");
    assert_int_equal(vmt_os_current_task(f->os, 1, &cur), VMT_OK);
    assert_string_equal(cur.comm, "swapper/0");

    /* User memory through sh's page tables; an unmapped page says so. */
    char b[32];
    size_t done = 99;
    assert_int_equal(vmt_os_read_virt(f->os, s.t[2].pgd_pa, FK_USER_STR_VA, b, 16, &done), VMT_OK);
    assert_string_equal(b, "hello from user");
    assert_int_equal(vmt_os_read_virt(f->os, s.t[2].pgd_pa, FK_USER_STR_VA + 0xff8, b, 16, &done),
                     VMT_E_NOT_PRESENT);
    assert_int_equal(done, 8);
    assert_non_null(strstr(vmt_os_error(f->os), "not present at VA 0x401000"));
}

static void call_decoded_from_btf(void **state)
{
    fx *f = *state;
    vmt_proto p;
    assert_int_equal(vmt_os_proto(f->os, "do_sys_openat2", &p), VMT_OK);
    assert_int_equal(p.nparams, 3);
    assert_int_equal(p.params[0].kind, VMT_PARAM_INT);
    assert_int_equal(p.params[1].kind, VMT_PARAM_STRING);
    assert_int_equal(p.params[2].kind, VMT_PARAM_STRUCT);
    assert_int_equal(p.params[2].nfields, 3);
    vmt_os_task sh;
    assert_int_equal(vmt_os_current_task(f->os, 0, &sh), VMT_OK);
    vmt_os_vreader_slot slot;
    vmt_vreader rd = vmt_os_vreader(f->os, sh.pgd_pa, &slot);
    vmt_regs r;
    memset(&r, 0, sizeof r);
    r.rdi = (uint64_t)-100;
    r.rsi = FK_USER_STR_VA;
    r.rdx = FK_DM + FK_OPEN_HOW_PA;
    vmt_value v[VMT_PROTO_MAX_PARAMS];
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_true((int64_t)v[0].raw == -100);
    assert_string_equal(v[1].text, "hello from user");
    assert_int_equal(v[2].read_status, VMT_OK);
    assert_string_equal(v[2].fields[0].name, "flags");
    assert_int_equal(v[2].fields[0].raw, 0x241);
    assert_string_equal(v[2].fields[1].name, "mode");
    assert_int_equal(v[2].fields[1].raw, 0644);
    /* A filename that is not mapped: not present at that VA. */
    r.rsi = FK_USER_STR_VA + 0x1000;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_int_equal(v[1].read_status, VMT_E_NOT_PRESENT);
    assert_true(v[1].fault_va == FK_USER_STR_VA + 0x1000);

    /* ksys_write: buf is a buffer sized by count. */
    assert_int_equal(vmt_os_proto(f->os, "ksys_write", &p), VMT_OK);
    assert_int_equal(p.params[1].kind, VMT_PARAM_BUFFER);
    assert_int_equal(p.params[1].len_param, 2);
    r.rdi = 1;
    r.rsi = FK_USER_STR_VA;
    r.rdx = 5;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_int_equal(v[1].nbytes, 5);
    assert_memory_equal(v[1].text, "hello", 5);

    /* An enum parameter by name. */
    assert_int_equal(vmt_os_proto(f->os, "__task_pid_nr_ns", &p), VMT_OK);
    r.rsi = 1;
    vmt_proto_decode_args(&p, &r, &rd, v);
    assert_int_equal(v[1].kind, VMT_PARAM_ENUM);
    assert_string_equal(v[1].enum_name, "PIDTYPE_TGID");
}

static void system_map(void **state)
{
    fx *f = *state;
    char path[] = "/tmp/vmt_sysmap_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *m = fdopen(fd, "w");
    /* Link-time addresses: the slide must be applied. */
    fprintf(m, "%016llx T _text\n", (unsigned long long)(FK_TEXT_VA - FK_SLIDE));
    fprintf(m, "%016llx T do_sys_openat2\n", (unsigned long long)(fk_sym("do_sys_openat2") - FK_SLIDE));
    fprintf(m, "%016llx A not_in_kallsyms\n", 0x1234ull);
    fclose(m);
    assert_int_equal(vmt_os_check_system_map(f->os, path), VMT_OK);
    m = fopen(path, "a");
    fprintf(m, "%016llx T ksys_write\n", (unsigned long long)(fk_sym("ksys_write") - FK_SLIDE + 16));
    fclose(m);
    assert_int_equal(vmt_os_check_system_map(f->os, path), VMT_E_CONFLICT);
    assert_non_null(strstr(vmt_os_error(f->os), "'ksys_write'"));
    unlink(path);
}

static void broken_task_list(void **state)
{
    fk_options o = { .broken_list = 1 };
    assert_int_equal(open_fake(state, &o), 0);
    fx *f = *state;
    seen s = { 0 };
    assert_int_equal(vmt_os_tasks(f->os, collect, &s), VMT_E_FORMAT);
    assert_non_null(strstr(vmt_os_error(f->os), "task list broken"));
    assert_int_equal(s.n, 2); /* what came before the break was reported */
}

static void no_btf_still_symbols(void **state)
{
    fk_options o = { .no_btf = 1 };
    assert_int_equal(open_fake(state, &o), 0);
    fx *f = *state;
    vmt_os_info in;
    vmt_os_get_info(f->os, &in);
    assert_false(in.has_btf);
    assert_non_null(strstr(in.btf_note, "magic"));
    vmt_os_symbol s;
    assert_int_equal(vmt_os_symbol_by_name(f->os, "do_sys_openat2", &s), VMT_OK);
    seen t = { 0 };
    assert_int_equal(vmt_os_tasks(f->os, collect, &t), VMT_E_NOTSUP);
    assert_non_null(strstr(vmt_os_error(f->os), "magic"));
    vmt_proto p;
    assert_int_equal(vmt_os_proto(f->os, "do_sys_openat2", &p), VMT_E_NOTSUP);
}

static void no_kernel_or_failing_driver(void **state)
{
    (void)state;
    vmt_driver *d;
    vmt_mem_config cfg = { .ram_frames = 4096 };
    char why[256];
    assert_int_equal(vmt_mem_driver_create(&cfg, &d, why, sizeof why), VMT_OK);
    vmt_os *os = (vmt_os *)1;
    assert_int_equal(vmt_os_open(d, NULL, &os, why, sizeof why), VMT_E_NOTFOUND);
    assert_null(os);
    assert_non_null(strstr(why, "no kallsyms"));
    vmt_driver_destroy(d);

    d = fk_create(NULL);
    assert_non_null(d);
    vmt_mem_fail_always(d, VMT_MEM_OP_READ_PHYS, true);
    assert_int_not_equal(vmt_os_open(d, NULL, &os, why, sizeof why), VMT_OK);
    assert_null(os);
    vmt_driver_destroy(d);
}

static void kernel_symbols_as_an_image(void **state)
{
    fx *f = *state;
    static const char *const names[] = { "do_sys_openat2", "ksys_write" };
    vmt_image *img;
    char why[256];
    assert_int_equal(vmt_os_symbols_image(f->os, names, 2, FK_RAM_MB << 20, &img, why, sizeof why), VMT_OK);
    vmt_va va;
    uint64_t size;
    assert_int_equal(vmt_image_symbol(img, "do_sys_openat2", &va, &size), VMT_OK);
    assert_true(va == fk_sym("do_sys_openat2"));
    assert_int_equal(size, 0x100); /* up to ksys_write, the next symbol */
    assert_int_equal(vmt_image_symbol(img, "ksys_write", &va, NULL), VMT_OK);
    assert_true(va == fk_sym("ksys_write"));
    uint64_t off;
    assert_string_equal(vmt_image_symbol_at(img, fk_sym("ksys_write") + 4, &off), "ksys_write");
    assert_int_equal(off, 4);
    vmt_image_destroy(img);
    static const char *const bad[] = { "do_sys_openat2", "not_in_kallsyms" };
    assert_int_equal(vmt_os_symbols_image(f->os, bad, 2, FK_RAM_MB << 20, &img, why, sizeof why), VMT_E_NOTFOUND);
    assert_non_null(strstr(why, "not_in_kallsyms"));
    assert_null(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(finds_the_kernel, setup, teardown),
        cmocka_unit_test_setup_teardown(symbols_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(types_from_btf, setup, teardown),
        cmocka_unit_test_setup_teardown(tasks_and_current, setup, teardown),
        cmocka_unit_test_setup_teardown(call_decoded_from_btf, setup, teardown),
        cmocka_unit_test_setup_teardown(system_map, setup, teardown),
        cmocka_unit_test_setup_teardown(kernel_symbols_as_an_image, setup, teardown),
        cmocka_unit_test_teardown(broken_task_list, teardown),
        cmocka_unit_test_teardown(no_btf_still_symbols, teardown),
        cmocka_unit_test(no_kernel_or_failing_driver),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
