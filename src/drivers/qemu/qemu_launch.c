/*
 * drivers/qemu/qemu_launch.c — start QEMU for the driver and stop it again.
 *
 * The driver adds to the user's arguments: -gdb and -qmp unix sockets in a
 * private directory (mkdtemp under $TMPDIR or /tmp), -S unless present, and
 * -icount (see qemu.h) unless told not to or already present. QEMU's stdout
 * and stderr go to a log file whose last lines are quoted when QEMU dies.
 * QEMU gets SIGKILL when the thread that launched it dies (PR_SET_PDEATHSIG):
 * a crashed or killed vmtrap leaves no QEMU behind.
 * Stopping: QMP quit, wait up to 3 s, then SIGKILL; the socket directory is
 * removed (a log the user named is kept).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/errbuf.h"
#include "drivers/qemu/qemu_internal.h"

static int has_arg(const char *const *argv, const char *a)
{
    for (size_t i = 1; argv[i]; i++)
        if (strcmp(argv[i], a) == 0 || (argv[i][0] == '-' && argv[i][1] == '-' && strcmp(argv[i] + 1, a) == 0))
            return 1;
    return 0;
}

vmt_status qemu_launch(qemu_drv *q, const vmt_qemu_config *cfg, char *why, size_t why_len)
{
    const char *const *argv = cfg->qemu_argv;
    if (!argv[0] || !argv[0][0]) {
        vmt_why(why, why_len, "qemu: empty QEMU command line");
        return VMT_E_INVAL;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(q->tmpdir, sizeof q->tmpdir, "%s/vmtrap-qemu-XXXXXX", tmp && *tmp && strlen(tmp) < 60 ? tmp : "/tmp");
    if (!mkdtemp(q->tmpdir)) {
        vmt_why(why, why_len, "qemu: cannot create a socket directory: %s", strerror(errno));
        q->tmpdir[0] = '\0';
        return VMT_E_IO;
    }
    if (cfg->qemu_log) {
        snprintf(q->log_path, sizeof q->log_path, "%s", cfg->qemu_log);
    } else {
        snprintf(q->log_path, sizeof q->log_path, "%s/qemu.log", q->tmpdir);
        q->own_log = true;
    }
    size_t n = 0;
    while (argv[n])
        n++;
    char gdb_arg[200], qmp_arg[200];
    snprintf(gdb_arg, sizeof gdb_arg, "unix:%s/gdb.sock,server=on,wait=off", q->tmpdir);
    snprintf(qmp_arg, sizeof qmp_arg, "unix:%s/qmp.sock,server=on,wait=off", q->tmpdir);
    const char **av = calloc(n + 12, sizeof *av);
    if (!av) {
        vmt_why(why, why_len, "qemu: out of memory");
        return VMT_E_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        av[k++] = argv[i];
    av[k++] = "-gdb";
    av[k++] = gdb_arg;
    av[k++] = "-qmp";
    av[k++] = qmp_arg;
    if (!has_arg(argv, "-S"))
        av[k++] = "-S";
    if (!cfg->no_icount && !has_arg(argv, "-icount")) {
        av[k++] = "-icount";
        av[k++] = cfg->icount ? cfg->icount : "shift=auto,sleep=off";
        q->icount = true;
    }
    av[k] = NULL;
    /* fork + exec rather than posix_spawn: the child asks for SIGKILL when
     * its parent dies (PR_SET_PDEATHSIG), so a crashing or killed vmtrap
     * never leaves a QEMU running; exec errors come back through a pipe. */
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) != 0) {
        free(av);
        vmt_why(why, why_len, "qemu: pipe: %s", strerror(errno));
        return VMT_E_IO;
    }
    int logfd = open(q->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = logfd >= 0 && nullfd >= 0 ? fork() : -1;
    if (pid == 0) {
        int e;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent || dup2(nullfd, 0) < 0 ||
            dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) {
            e = errno ? errno : ECHILD;
        } else {
            execvp(av[0], (char *const *)av);
            e = errno;
        }
        ssize_t w = write(errpipe[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    int fork_errno = errno;
    free(av);
    if (logfd >= 0)
        close(logfd);
    if (nullfd >= 0)
        close(nullfd);
    close(errpipe[1]);
    int rc = 0;
    if (pid < 0) {
        rc = fork_errno ? fork_errno : EIO;
    } else {
        ssize_t got;
        do
            got = read(errpipe[0], &rc, sizeof rc);
        while (got < 0 && errno == EINTR);
        if (got != (ssize_t)sizeof rc)
            rc = 0; /* closed by exec: QEMU is running */
        else
            waitpid(pid, NULL, 0);
    }
    close(errpipe[0]);
    if (rc != 0) {
        vmt_why(why, why_len, "qemu: cannot start '%s': %s", argv[0], strerror(rc));
        if (q->own_log)
            unlink(q->log_path);
        rmdir(q->tmpdir);
        q->tmpdir[0] = '\0';
        return rc == ENOENT ? VMT_E_NOTFOUND : VMT_E_IO;
    }
    q->pid = pid;
    q->launched = true;
    /* Wait until QMP answers or QEMU dies. */
    char qpath[200];
    snprintf(qpath, sizeof qpath, "%s/qmp.sock", q->tmpdir);
    int limit = cfg->start_timeout_ms > 0 ? cfg->start_timeout_ms : 30000;
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    for (int waited = 0;; waited += 20) {
        struct stat sb;
        if (stat(qpath, &sb) == 0)
            return VMT_OK;
        char ex[200];
        qemu_launch_exit_text(q, ex, sizeof ex);
        if (ex[0]) {
            vmt_why(why, why_len, "qemu: %s", ex);
            return VMT_E_STOPPED;
        }
        if (waited >= limit) {
            vmt_why(why, why_len, "qemu: QEMU did not open its QMP socket within %d ms", limit);
            return VMT_E_TIMEOUT;
        }
        nanosleep(&ts, NULL);
    }
}

/* The last line of the log (QEMU's error message), at most len-1 bytes. */
static void log_tail(const char *path, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] && len) {
            size_t n = strlen(line);
            if (n >= len)
                n = len - 1;
            memcpy(out, line, n);
            out[n] = '\0';
        }
    }
    fclose(f);
}

void qemu_launch_exit_text(qemu_drv *q, char *out, size_t len)
{
    out[0] = '\0';
    if (!q->launched || q->pid <= 0)
        return;
    int status;
    pid_t r = waitpid(q->pid, &status, WNOHANG);
    if (r != q->pid)
        return;
    q->pid = -1;
    char tail[200];
    log_tail(q->log_path, tail, sizeof tail);
    if (WIFEXITED(status))
        snprintf(out, len, "QEMU exited with status %d%s%s", WEXITSTATUS(status), tail[0] ? ": " : "", tail);
    else if (WIFSIGNALED(status))
        snprintf(out, len, "QEMU was killed by signal %d%s%s", WTERMSIG(status), tail[0] ? ": " : "", tail);
}

void qemu_launch_stop(qemu_drv *q)
{
    if (q->pid > 0) {
        if (q->have_qmp && !q->qmp.dead)
            (void)qmp_execute(&q->qmp, "quit", NULL, 2000, NULL);
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        int status;
        int i;
        for (i = 0; i < 300; i++) {
            if (waitpid(q->pid, &status, WNOHANG) == q->pid)
                break;
            nanosleep(&ts, NULL);
        }
        if (i == 300) {
            kill(q->pid, SIGKILL);
            waitpid(q->pid, &status, 0);
        }
        q->pid = -1;
    }
    if (q->tmpdir[0]) {
        char p[200];
        snprintf(p, sizeof p, "%s/gdb.sock", q->tmpdir);
        unlink(p);
        snprintf(p, sizeof p, "%s/qmp.sock", q->tmpdir);
        unlink(p);
        if (q->own_log)
            unlink(q->log_path);
        rmdir(q->tmpdir);
        q->tmpdir[0] = '\0';
    }
}
