/*
 * bench/bench_resume.c — the project's Debian snapshot's busybox loop on
 * vmtrap's emulator (bare ELF core + platform, src/resume) against QEMU
 * TCG resuming its own saved state of the same machine (qemu-state.zst,
 * command line from info.json), in one run on one machine.
 *
 * What is compared: CPU time per loop tick. The loop sleeps 1 s per tick:
 * QEMU sleeps it in real time, vmtrap skips it in virtual time, so wall
 * time per tick says nothing about the CPU; the CPU time a process spends
 * per tick (user + system, /proc/PID/stat for QEMU, the process CPU clock
 * for vmtrap) is the work of running the same guest code. vmtrap counts
 * the guest instructions it retires; QEMU's instructions per second are
 * estimated as vmtrap's instructions per tick / QEMU's CPU per tick (the
 * same guest code runs per tick in both). vmtrap runs twice: plain, and
 * with hidden breakpoints on do_sys_openat2, ksys_write, kernel_clone and
 * do_exit (the monitor, symbols from the guest's kallsyms).
 *
 * Usage: bench_resume [TICKS] (default 10). Needs the snapshot cache
 * (scripts/make-linux-snapshot.sh) and, for the QEMU side, qemu-system-x86_64
 * and zstd. Ends with one RESULT line.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmtrap/image.h"
#include "vmtrap/monitor.h"
#include "vmtrap/os.h"
#include "vmtrap/resume.h"
#include "vmtrap/session.h"

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_self(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- vmtrap ---- */

typedef struct ticks {
    unsigned n;
} ticks;

static void on_serial(void *ctx, const char *line)
{
    ticks *t = ctx;
    if (strncmp(line, "tick ", 5) == 0)
        t->n++;
}

static int run_vmtrap(const char *core, unsigned want, double *cpu_per_tick, double *insns_per_tick,
                      double *wall_per_tick)
{
    ticks t = { 0 };
    vmt_resume_config cfg = { .serial = on_serial, .serial_ctx = &t, .quiet = true };
    vmt_resume *r = NULL;
    char why[512];
    if (vmt_resume_open(core, &cfg, &r, why, sizeof why)) {
        fprintf(stderr, "bench_resume: %s\n", why);
        return -1;
    }
    /* Warm up to the first tick (translation caches fill), then measure. */
    uint64_t insns = 0;
    vmt_stop_info stop;
    while (t.n < 1 && insns < 100000000ull)
        if (vmt_resume_run(r, 1000000, 0, &stop, &insns) || stop.reason != VMT_STOP_INSN_LIMIT)
            break;
    if (t.n < 1) {
        fprintf(stderr, "bench_resume: vmtrap: no tick: %s\n", stop.message);
        vmt_resume_close(r);
        return -1;
    }
    unsigned start = t.n;
    insns = 0;
    double c0 = cpu_self(), w0 = mono();
    while (t.n < start + want && insns < 4000000000ull)
        if (vmt_resume_run(r, 1000000, 0, &stop, &insns) || stop.reason != VMT_STOP_INSN_LIMIT)
            break;
    double c1 = cpu_self(), w1 = mono();
    unsigned got = t.n - start;
    vmt_resume_close(r);
    if (!got)
        return -1;
    *cpu_per_tick = (c1 - c0) / got;
    *insns_per_tick = (double)insns / got;
    *wall_per_tick = (w1 - w0) / got;
    return 0;
}

/* The same with hidden breakpoints on four kernel functions the loop calls
 * (the monitor, symbols from the guest's kallsyms). */
static vmt_status count_hit(const vmt_hit *hit, void *user)
{
    (void)hit;
    (*(uint64_t *)user)++;
    return VMT_OK;
}

static int run_vmtrap_hooked(const char *core, unsigned want, double *cpu_per_tick, double *hits_per_tick)
{
    static const char *const hooks[] = { "do_sys_openat2", "ksys_write", "kernel_clone", "do_exit" };
    ticks t = { 0 };
    vmt_resume_config cfg = { .serial = on_serial, .serial_ctx = &t, .quiet = true };
    vmt_resume *r = NULL;
    char why[512];
    if (vmt_resume_open(core, &cfg, &r, why, sizeof why)) {
        fprintf(stderr, "bench_resume: %s\n", why);
        return -1;
    }
    int rc = -1;
    vmt_os *os = NULL;
    vmt_driver *ro = NULL;
    vmt_image *img = NULL;
    vmt_session *s = NULL;
    vmt_monitor *m = NULL;
    uint64_t hits = 0;
    vmt_os_config oc = { 0 };
    if (vmt_os_open_snapshot(vmt_resume_snapshot(r), &oc, &os, &ro, why, sizeof why) ||
        vmt_os_symbols_image(os, hooks, 4, 256ull << 20, &img, why, sizeof why)) {
        fprintf(stderr, "bench_resume: hooks: %s\n", why);
        goto out;
    }
    vmt_driver *drv = vmt_resume_driver(r);
    vmt_resume_release_driver(r);
    if (vmt_session_create(drv, NULL, &s) || vmt_monitor_create(s, img, &m, why, sizeof why))
        goto out;
    for (int i = 0; i < 4; i++)
        if (vmt_monitor_hook(m, hooks[i], count_hit, &hits))
            goto out;
    for (int i = 0; i < 100 && t.n < 1; i++)
        if (vmt_drv_set_limit(drv, 0, 1000000) || vmt_monitor_run(m))
            goto out;
    unsigned start = t.n;
    uint64_t h0 = hits;
    double c0 = cpu_self();
    for (int i = 0; i < 4000 && t.n < start + want; i++)
        if (vmt_drv_set_limit(drv, 0, 1000000) || vmt_monitor_run(m))
            goto out;
    unsigned got = t.n - start;
    if (got) {
        *cpu_per_tick = (cpu_self() - c0) / got;
        *hits_per_tick = (double)(hits - h0) / got;
        rc = 0;
    }
out:
    vmt_monitor_destroy(m);
    vmt_session_destroy(s);
    vmt_image_destroy(img);
    vmt_os_close(os);
    vmt_driver_destroy(ro);
    vmt_resume_close(r);
    return rc;
}

/* ---- QEMU ---- */

static double proc_cpu(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static unsigned count_ticks(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512];
    unsigned n = 0;
    while (fgets(line, sizeof line, f))
        n += strncmp(line, "tick ", 5) == 0;
    fclose(f);
    return n;
}

static int qmp_cmd(int fd, const char *cmd, char *reply, size_t len)
{
    if (write(fd, cmd, strlen(cmd)) < 0)
        return -1;
    size_t got = 0;
    double t0 = mono();
    while (mono() - t0 < 20) {
        ssize_t n = recv(fd, reply + got, len - 1 - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            reply[got] = 0;
            if (strstr(reply, "\"return\"") || strstr(reply, "\"error\""))
                return strstr(reply, "\"error\"") ? -1 : 0;
        } else {
            usleep(5000);
        }
    }
    return -1;
}

static int run_qemu(const char *dir, unsigned want, double *cpu_per_tick, double *wall_per_tick)
{
    char info[600], tmp[] = "/tmp/bench-resume-XXXXXX", serial[700], sock[700];
    snprintf(info, sizeof info, "%s/info.json", dir);
    json_object *j = json_object_from_file(info), *args = NULL;
    if (!j || !json_object_object_get_ex(j, "qemu_resume_args", &args) || !json_object_is_type(args, json_type_array)) {
        fprintf(stderr, "bench_resume: %s has no qemu_resume_args\n", info);
        json_object_put(j);
        return -1;
    }
    if (!mkdtemp(tmp)) {
        json_object_put(j);
        return -1;
    }
    snprintf(serial, sizeof serial, "%s/serial.txt", tmp);
    snprintf(sock, sizeof sock, "%s/qmp.sock", tmp);
    size_t n = json_object_array_length(args);
    char **argv = calloc(n + 8, sizeof *argv);
    char serial_arg[720], qmp_arg[760];
    snprintf(serial_arg, sizeof serial_arg, "file:%s", serial);
    snprintf(qmp_arg, sizeof qmp_arg, "unix:%s,server=on,wait=off", sock);
    size_t k = 0;
    argv[k++] = "qemu-system-x86_64";
    for (size_t i = 0; i < n; i++)
        argv[k++] = (char *)json_object_get_string(json_object_array_get_idx(args, i));
    argv[k++] = "-serial";
    argv[k++] = serial_arg;
    argv[k++] = "-qmp";
    argv[k++] = qmp_arg;
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    free(argv);
    int rc = -1, fd = -1;
    for (int i = 0; i < 200 && fd < 0; i++) {
        usleep(50000);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        if (strlen(sock) >= sizeof a.sun_path)
            break;
        memcpy(a.sun_path, sock, strlen(sock) + 1);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            fd = -1;
        }
    }
    char reply[8192] = "";
    if (fd < 0 || qmp_cmd(fd, "{\"execute\":\"qmp_capabilities\"}", reply, sizeof reply)) {
        fprintf(stderr, "bench_resume: QEMU's QMP did not answer\n");
        goto out;
    }
    /* Wait for the incoming migration to finish, then run. */
    for (int i = 0; i < 600; i++) {
        memset(reply, 0, sizeof reply);
        if (qmp_cmd(fd, "{\"execute\":\"query-status\"}", reply, sizeof reply) == 0 && !strstr(reply, "inmigrate"))
            break;
        usleep(100000);
    }
    if (qmp_cmd(fd, "{\"execute\":\"cont\"}", reply, sizeof reply)) {
        fprintf(stderr, "bench_resume: QEMU refused cont: %s\n", reply);
        goto out;
    }
    double t_end = mono() + 10.0 * want + 60;
    while (count_ticks(serial) < 1 && mono() < t_end)
        usleep(2000);
    unsigned start = count_ticks(serial);
    double c0 = proc_cpu(pid), w0 = mono();
    while (count_ticks(serial) < start + want && mono() < t_end)
        usleep(2000);
    double c1 = proc_cpu(pid), w1 = mono();
    unsigned got = count_ticks(serial) - start;
    if (got && c0 >= 0 && c1 >= 0) {
        *cpu_per_tick = (c1 - c0) / got;
        *wall_per_tick = (w1 - w0) / got;
        rc = 0;
    } else {
        fprintf(stderr, "bench_resume: QEMU printed %u ticks\n", got);
    }
out:
    if (fd >= 0)
        close(fd);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    unlink(serial);
    unlink(sock);
    rmdir(tmp);
    json_object_put(j);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned want = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 0) : 10;
    if (!want)
        want = 10;
    const char *cache = getenv("VMT_CACHE_DIR");
    const char *home = getenv("HOME");
    char dir[512], core[600];
    if (cache && *cache)
        snprintf(dir, sizeof dir, "%s/linux-snapshot", cache);
    else
        snprintf(dir, sizeof dir, "%s/.cache/vmtrap/linux-snapshot", home ? home : "/root");
    snprintf(core, sizeof core, "%s/core.elf", dir);
    if (access(core, R_OK) != 0) {
        fprintf(stderr, "bench_resume: no %s (run scripts/make-linux-snapshot.sh)\n", core);
        return 1;
    }
    double v_cpu = 0, v_insns = 0, v_wall = 0;
    if (run_vmtrap(core, want, &v_cpu, &v_insns, &v_wall))
        return 1;
    printf("vmtrap emu : %u ticks, %.3f s CPU/tick, %.2f M instructions/tick, %.1f M instructions/s (CPU), "
           "%.3f s wall/tick\n",
           want, v_cpu, v_insns / 1e6, v_insns / v_cpu / 1e6, v_wall);
    double h_cpu = 0, h_hits = 0;
    int have_h = run_vmtrap_hooked(core, want, &h_cpu, &h_hits) == 0;
    if (have_h)
        printf("vmtrap hooked (do_sys_openat2, ksys_write, kernel_clone, do_exit): %.3f s CPU/tick, %.1f hits/tick, "
               "%.1f M instructions/s\n", h_cpu, h_hits, v_insns / h_cpu / 1e6);
    double q_cpu = 0, q_wall = 0;
    int have_q = run_qemu(dir, want, &q_cpu, &q_wall) == 0;
    if (have_q)
        printf("QEMU TCG   : %u ticks, %.3f s CPU/tick, ~%.1f M instructions/s (CPU, same work per tick), %.3f s "
               "wall/tick (sleeps 1 s per tick in real time)\n",
               want, q_cpu, v_insns / q_cpu / 1e6, q_wall);
    else
        printf("QEMU TCG   : not measured (see the message above)\n");
    double ratio = have_q && v_cpu > 0 ? q_cpu / v_cpu : 0;
    double ratio_h = have_q && have_h && h_cpu > 0 ? q_cpu / h_cpu : 0;
    if (have_q)
        printf("speed vmtrap / QEMU (CPU per tick): %.3f plain, %.3f with 4 hooks\n", ratio, ratio_h);
    printf("RESULT ticks=%u vmtrap_cpu_s_per_tick=%.4f vmtrap_minsn_per_tick=%.2f vmtrap_minsn_per_s=%.1f "
           "hooked_cpu_s_per_tick=%.4f hooked_hits_per_tick=%.1f qemu_cpu_s_per_tick=%.4f qemu_minsn_per_s=%.1f "
           "ratio_vmtrap_over_qemu=%.3f ratio_hooked_over_qemu=%.3f\n",
           want, v_cpu, v_insns / 1e6, v_insns / v_cpu / 1e6, have_h ? h_cpu : 0.0, have_h ? h_hits : 0.0,
           have_q ? q_cpu : 0.0, have_q && q_cpu > 0 ? v_insns / q_cpu / 1e6 : 0.0, ratio, ratio_h);
    return 0;
}
