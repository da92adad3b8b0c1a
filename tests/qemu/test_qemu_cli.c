/*
 * tests/qemu/test_qemu_cli.c — `vmtrap run --driver qemu` as a user runs it:
 * the vmtrap binary launches QEMU on the Linux snapshot (symbols from the
 * kallsyms sample in its console log), hooks do_sys_openat2 and ksys_write
 * for a few seconds, and prints one JSON line per call with the file names
 * and the tick lines the guest writes, then a summary; QEMU's console shows
 * the loop went on. Usage errors (no hook, an unknown symbol, both or
 * neither of --gdb and a QEMU command line) exit 2 with one line on stderr
 * before anything starts. Skipped (77) only without qemu-system-x86_64.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "drivers/qemu/qmp_client.h"
#include "linux_snap.h"
#include "util/testutil.h"

static linux_snap g_snap;

/* Run a shell command; its stdout+stderr into *out (malloc'd). Returns the exit code. */
static int run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - 1 - n, p)) > 0) {
        n += got;
        if (n + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[n] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void usage_errors_exit_2(void **state)
{
    (void)state;
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "%s run --driver qemu --gdb unix:/nonexistent 2>&1", VMT_CLI_PATH);
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "--hook"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s run --driver qemu --hook no_such_function --symbols %s/serial.txt --qmp unix:/x "
             "--gdb unix:/nonexistent 2>&1", VMT_CLI_PATH, g_snap.dir);
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "unknown symbol 'no_such_function'"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s run --driver qemu --hook 0x1000 2>&1", VMT_CLI_PATH);
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "--gdb"));
    free(out);
    /* --watch-pages and --map-base: malformed values are usage errors naming the option. */
    static const char *const bad_watch[][2] = {
        { "--watch-pages 87", "expected PID:VA" },
        { "--watch-pages 87:zzz", "not an address" },
        { "--watch-pages 87:0x2000-0x1000", "empty range" },
        { "--watch-pages 87:0x1000 --map-base 0x123", "--map-base" },
    };
    for (size_t i = 0; i < sizeof bad_watch / sizeof bad_watch[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s run --driver qemu %s --gdb unix:/nonexistent --ram 64 2>&1", VMT_CLI_PATH,
                 bad_watch[i][0]);
        assert_int_equal(run(cmd, &out), 2);
        assert_non_null(strstr(out, bad_watch[i][1]));
        free(out);
    }
    /* A gdbstub that is not there: a clear error, exit 1, quickly. */
    snprintf(cmd, sizeof cmd, "%s run --driver qemu --hook 0x1000 --gdb unix:/nonexistent/gdb.sock --ram 64 2>&1",
             VMT_CLI_PATH);
    assert_int_equal(run(cmd, &out), 1);
    assert_non_null(strstr(out, "/nonexistent/gdb.sock"));
    free(out);
}

static void hooks_a_live_linux(void **state)
{
    (void)state;
    char serial[300];
    snprintf(serial, sizeof serial, "/tmp/vmt-cli-serial-%d.txt", (int)getpid());
    char cmd[8192];
    size_t n = (size_t)snprintf(cmd, sizeof cmd,
                                "%s run --driver qemu --symbols '%s/serial.txt' --hook do_sys_openat2,ksys_write "
                                "--limit 6 --json -- qemu-system-x86_64",
                                VMT_CLI_PATH, g_snap.dir);
    for (size_t i = 0; i < g_snap.nargs; i++)
        n += (size_t)snprintf(cmd + n, sizeof cmd - n, " '%s'", g_snap.args[i]);
    snprintf(cmd + n, sizeof cmd - n, " -serial file:%s 2>&1", serial);
    char *out;
    int rc = run(cmd, &out);
    if (rc != 0)
        print_message("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"symbol\":\"do_sys_openat2\""));
    assert_non_null(strstr(out, "\"rsi\":\"/etc/tickfile\""));
    assert_non_null(strstr(out, "\"buffers\":{\"rsi\":\"tick ")); /* ksys_write(fd, buf, count) of a tick line */
    assert_non_null(strstr(out, "\"event\":\"summary\""));
    free(out);
    FILE *f = fopen(serial, "r");
    assert_non_null(f);
    char line[256];
    int ticks = 0, t, pid;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "tick %d pid %d", &t, &pid) == 2 && t > ticks)
            ticks = t;
    fclose(f);
    unlink(serial);
    assert_true(ticks > g_snap.tick_at_pause);
}

/* Attach: the user started QEMU (running, not paused) with both sockets;
 * vmtrap attaches, hooks, detaches at the end, and QEMU runs on. */
static void attaches_to_a_running_qemu(void **state)
{
    (void)state;
    char dir[] = "/tmp/vmt-cli-attach-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char serial[128], gdb[128], qmp[128];
    snprintf(serial, sizeof serial, "%s/serial.txt", dir);
    snprintf(gdb, sizeof gdb, "%s/gdb.sock", dir);
    snprintf(qmp, sizeof qmp, "%s/qmp.sock", dir);
    const char *argv[SNAP_MAX_ARGS + 16];
    size_t k = 0;
    argv[k++] = "qemu-system-x86_64";
    for (size_t i = 0; i < g_snap.nargs; i++)
        argv[k++] = g_snap.args[i];
    char s_arg[160], g_arg[160], q_arg[160];
    snprintf(s_arg, sizeof s_arg, "file:%s", serial);
    snprintf(g_arg, sizeof g_arg, "unix:%s,server=on,wait=off", gdb);
    snprintf(q_arg, sizeof q_arg, "unix:%s,server=on,wait=off", qmp);
    argv[k++] = "-serial";
    argv[k++] = s_arg;
    argv[k++] = "-gdb";
    argv[k++] = g_arg;
    argv[k++] = "-qmp";
    argv[k++] = q_arg;
    argv[k] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Dies with the test; keeps its output off the test's stdout. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    /* The resumed state comes up paused: start it, as a user's VM would be running. */
    qmp_client q;
    assert_int_equal(qmp_open(&q, qmp, 30000), VMT_OK);
    for (int i = 0; i < 3000; i++) { /* the incoming migration must finish first */
        bool running;
        char status[32];
        assert_int_equal(qmp_status(&q, &running, status, sizeof status), VMT_OK);
        if (strcmp(status, "inmigrate") != 0)
            break;
        usleep(10000);
    }
    assert_int_equal(qmp_execute(&q, "cont", NULL, 0, NULL), VMT_OK);
    qmp_close(&q);
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s run --driver qemu --gdb unix:%s --qmp unix:%s --symbols '%s/serial.txt' "
             "--hook do_sys_openat2 --limit 4 2>&1", VMT_CLI_PATH, gdb, qmp, g_snap.dir);
    int rc = run(cmd, &out);
    if (rc != 0)
        print_message("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "rsi=\"/etc/tickfile\""));
    assert_non_null(strstr(out, "attached"));
    free(out);
    /* Detached: QEMU goes on by itself. */
    int before = 0, after = 0, t, p;
    char line[256];
    FILE *f = fopen(serial, "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "tick %d pid %d", &t, &p) == 2)
            before = t;
    if (f)
        fclose(f);
    sleep(3);
    f = fopen(serial, "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "tick %d pid %d", &t, &p) == 2)
            after = t;
    if (f)
        fclose(f);
    print_message("ticks after detach: %d -> %d\n", before, after);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(serial);
    rmdir(dir);
    assert_true(after > before);
}

int main(void)
{
    if (!snap_have_qemu()) {
        printf("SKIP: qemu-system-x86_64 is not installed\n");
        return VMT_TEST_SKIP;
    }
    char why[512];
    if (snap_open(&g_snap, VMT_SOURCE_DIR, why, sizeof why)) {
        fprintf(stderr, "snapshot: %s\n", why);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(usage_errors_exit_2),
        cmocka_unit_test(hooks_a_live_linux),
        cmocka_unit_test(attaches_to_a_running_qemu),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    snap_close(&g_snap);
    return rc;
}
