/*
 * tests/qemu/fake_stub.c — the scripted fake gdbstub (see fake_stub.h).
 * Its own minimal framing code on purpose: the client's parser is what is
 * under test.
 */
#include "fake_stub.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char target_xml[] =
    "<?xml version=\"1.0\"?><!DOCTYPE target SYSTEM \"gdb-target.dtd\">"
    "<target><architecture>i386:x86-64</architecture><xi:include href=\"fake-64bit.xml\"/></target>";
static const char feature_xml[] =
    "<?xml version=\"1.0\"?><!DOCTYPE feature SYSTEM \"gdb-target.dtd\"><feature name=\"org.gnu.gdb.i386.core\">"
    "<reg name=\"rax\" bitsize=\"64\" regnum=\"0\"/><reg name=\"rbx\" bitsize=\"64\"/><reg name=\"rcx\" bitsize=\"64\"/>"
    "<reg name=\"rdx\" bitsize=\"64\"/><reg name=\"rsi\" bitsize=\"64\"/><reg name=\"rdi\" bitsize=\"64\"/>"
    "<reg name=\"rbp\" bitsize=\"64\"/><reg name=\"rsp\" bitsize=\"64\"/><reg name=\"r8\" bitsize=\"64\"/>"
    "<reg name=\"r9\" bitsize=\"64\"/><reg name=\"r10\" bitsize=\"64\"/><reg name=\"r11\" bitsize=\"64\"/>"
    "<reg name=\"r12\" bitsize=\"64\"/><reg name=\"r13\" bitsize=\"64\"/><reg name=\"r14\" bitsize=\"64\"/>"
    "<reg name=\"r15\" bitsize=\"64\"/><reg name=\"rip\" bitsize=\"64\"/><reg name=\"eflags\" bitsize=\"32\"/>"
    "<reg name=\"cs\" bitsize=\"32\"/><reg name=\"ss\" bitsize=\"32\"/><reg name=\"ds\" bitsize=\"32\"/>"
    "<reg name=\"es\" bitsize=\"32\"/><reg name=\"fs\" bitsize=\"32\"/><reg name=\"gs\" bitsize=\"32\"/>"
    "<!-- <reg name=\"cs_base\" bitsize=\"64\"/> commented out as in QEMU -->"
    "<reg name=\"fs_base\" bitsize=\"64\"/><reg name=\"gs_base\" bitsize=\"64\"/><reg name=\"k_gs_base\" bitsize=\"64\"/>"
    "<reg name=\"cr0\" bitsize=\"64\"/><reg name=\"cr2\" bitsize=\"64\"/><reg name=\"cr3\" bitsize=\"64\"/>"
    "<reg name=\"cr4\" bitsize=\"64\"/><reg name=\"cr8\" bitsize=\"64\"/><reg name=\"efer\" bitsize=\"64\"/>"
    "</feature>";
static const char hostile_xml[] =
    "<?xml version=\"1.0\"?><target><xi:include href=\"../../etc/passwd\"/></target>";

static void send_raw(fake_stub *s, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(s->cfd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void reply(fake_stub *s, const char *payload)
{
    unsigned sum = 0;
    size_t n = strlen(payload);
    for (size_t i = 0; i < n; i++)
        sum += (unsigned char)payload[i];
    if (s->mode == FAKE_BADSUM_AFTER && s->packets > s->after)
        sum++;
    char *buf = malloc(n + 8);
    int len = sprintf(buf, "$%s#%02x", payload, sum & 0xff);
    send_raw(s, buf, (size_t)len);
    free(buf);
}

static void put_le(char *out, uint64_t v, unsigned bytes)
{
    for (unsigned i = 0; i < bytes; i++)
        sprintf(out + 2 * i, "%02x", (unsigned)((v >> (8 * i)) & 0xff));
}

static void xfer(fake_stub *s, const char *doc, const char *args)
{
    unsigned long off, len;
    if (sscanf(args, "%lx,%lx", &off, &len) != 2) {
        reply(s, "E01");
        return;
    }
    size_t dl = strlen(doc);
    if (off > dl)
        off = dl;
    size_t n = dl - off < len ? dl - off : len;
    char *out = malloc(n + 2);
    out[0] = off + n < dl ? 'm' : 'l';
    memcpy(out + 1, doc + off, n);
    out[n + 1] = '\0';
    reply(s, out);
    free(out);
}

static void handle(fake_stub *s, char *p)
{
    char out[8192];
    if (strncmp(p, "qSupported", 10) == 0) {
        reply(s, "PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+");
    } else if (strcmp(p, "?") == 0) {
        reply(s, "T05thread:p01.01;");
    } else if (strncmp(p, "qXfer:features:read:", 20) == 0) {
        const char *name = p + 20;
        const char *colon = strchr(name, ':');
        if (!colon) {
            reply(s, "E00");
        } else if (strncmp(name, "target.xml:", 11) == 0) {
            xfer(s, s->mode == FAKE_HOSTILE_XML ? hostile_xml : target_xml, colon + 1);
        } else if (strncmp(name, "fake-64bit.xml:", 15) == 0) {
            xfer(s, feature_xml, colon + 1);
        } else {
            reply(s, "E00");
        }
    } else if (strncmp(p, "Qqemu.PhyMemMode:", 17) == 0) {
        reply(s, s->mode == FAKE_NO_PHYS ? "" : "OK");
    } else if (strncmp(p, "Qqemu.sstep=", 12) == 0) {
        reply(s, "OK");
    } else if (strcmp(p, "g") == 0) {
        size_t n = 0;
        for (int i = 0; i < 16; i++, n += 16)
            put_le(out + n, s->gpr[i], 8);
        put_le(out + n, s->rip, 8), n += 16;
        put_le(out + n, s->eflags, 4), n += 8;
        for (int i = 0; i < 6; i++, n += 8)
            put_le(out + n, i == 0 ? 0x10 : 0x18, 4);
        for (int i = 0; i < 3; i++, n += 16)
            put_le(out + n, 0, 8);
        uint64_t crs[6] = { 0x80050033, 0, s->cr3, 0x6f0, 0, 0xd01 };
        for (int i = 0; i < 6; i++, n += 16)
            put_le(out + n, crs[i], 8);
        out[n] = '\0';
        if (s->mode == FAKE_SHORT_G)
            out[40] = '\0';
        reply(s, out);
    } else if (p[0] == 'm') {
        unsigned long a, l;
        if (sscanf(p + 1, "%lx,%lx", &a, &l) != 2 || l > 4000 || a + l > FAKE_MEM) {
            reply(s, "E14");
        } else {
            for (unsigned long i = 0; i < l; i++)
                sprintf(out + 2 * i, "%02x", s->mem[a + i]);
            out[2 * l - (s->mode == FAKE_SHORT_M ? 2 : 0)] = '\0';
            reply(s, out);
        }
    } else if (p[0] == 'M') {
        unsigned long a, l;
        char *colon = strchr(p, ':');
        if (!colon || sscanf(p + 1, "%lx,%lx", &a, &l) != 2 || a + l > FAKE_MEM || strlen(colon + 1) != 2 * l) {
            reply(s, "E14");
        } else {
            for (unsigned long i = 0; i < l; i++) {
                unsigned v;
                sscanf(colon + 1 + 2 * i, "%2x", &v);
                s->mem[a + i] = (uint8_t)v;
            }
            reply(s, "OK");
        }
    } else if (p[0] == 'P') {
        unsigned n;
        char *eq = strchr(p, '=');
        if (!eq || sscanf(p + 1, "%x", &n) != 1 || n > 16 || strlen(eq + 1) != 16) {
            reply(s, "E01");
        } else {
            uint64_t v = 0;
            for (int i = 7; i >= 0; i--) {
                unsigned b;
                sscanf(eq + 1 + 2 * i, "%2x", &b);
                v = v << 8 | b;
            }
            if (n == 16)
                s->rip = v;
            else
                s->gpr[n] = v;
            reply(s, "OK");
        }
    } else if (strncmp(p, "Z0,", 3) == 0 || strncmp(p, "z0,", 3) == 0) {
        unsigned long long a;
        sscanf(p + 3, "%llx", &a);
        if (p[0] == 'Z' && s->nbps < 16) {
            s->bps[s->nbps++] = a;
        } else if (p[0] == 'z') {
            for (unsigned i = 0; i < s->nbps; i++)
                if (s->bps[i] == a)
                    s->bps[i] = s->bps[--s->nbps];
        }
        reply(s, "OK");
    } else if (strncmp(p, "Z2,", 3) == 0 || strncmp(p, "z2,", 3) == 0) {
        unsigned long long a, l;
        if (sscanf(p + 3, "%llx,%llx", &a, &l) != 2) {
            reply(s, "E01");
            return;
        }
        pthread_mutex_lock(&s->lock);
        if (p[0] == 'Z' && s->nwatches < 64) {
            s->watch_va[s->nwatches] = a;
            s->watch_len[s->nwatches++] = l;
        } else if (p[0] == 'z') {
            for (unsigned i = 0; i < s->nwatches; i++)
                if (s->watch_va[i] == a && s->watch_len[i] == l) {
                    s->watch_va[i] = s->watch_va[--s->nwatches];
                    s->watch_len[i] = s->watch_len[s->nwatches];
                    break;
                }
        }
        pthread_mutex_unlock(&s->lock);
        reply(s, "OK");
    } else if (strcmp(p, "c") == 0 && s->next_store < s->nstores) {
        /* The scripted stores, until one hits a watch. */
        while (s->next_store < s->nstores) {
            const struct fake_store *st = &s->stores[s->next_store++];
            uint64_t pa = st->va - s->map_base;
            if (pa + st->len <= FAKE_MEM)
                memcpy(s->mem + pa, st->bytes, st->len);
            uint64_t start = st->va;
            bool hit = st->report_anyway;
            for (unsigned i = 0; i < s->nwatches; i++)
                if (st->va + st->len > s->watch_va[i] && st->va < s->watch_va[i] + s->watch_len[i]) {
                    start = s->watch_va[i];
                    hit = true;
                    break;
                }
            if (hit) {
                char r[80];
                snprintf(r, sizeof r, "T05thread:p01.01;watch:%llx;", (unsigned long long)start);
                reply(s, r);
                return;
            }
        }
        if (s->nbps) {
            s->rip = s->bps[0];
            reply(s, "T05thread:p01.01;");
        }
    } else if (strcmp(p, "c") == 0) {
        if (s->mode == FAKE_EXIT_ON_CONT) {
            reply(s, "W00");
            close(s->cfd);
            s->cfd = -1;
        } else if (s->mode == FAKE_BAD_STOP) {
            reply(s, "Q99");
        } else if (s->nbps) {
            s->rip = s->bps[0];
            reply(s, "T05thread:p01.01;");
        }
        /* else: "running" until 0x03 */
    } else if (strcmp(p, "s") == 0) {
        s->rip += 1;
        reply(s, "T05thread:p01.01;");
    } else if (strcmp(p, "D;1") == 0 || strcmp(p, "D") == 0) {
        reply(s, "OK");
    } else {
        reply(s, "");
    }
}

static void *serve(void *arg)
{
    fake_stub *s = arg;
    struct pollfd pfd = { .fd = s->lfd, .events = POLLIN };
    while (s->running && poll(&pfd, 1, 50) == 0) {
    }
    if (!s->running)
        return NULL;
    s->cfd = accept(s->lfd, NULL, NULL);
    if (s->cfd < 0)
        return NULL;
    if (s->mode == FAKE_STOP_ON_CONNECT) {
        usleep(20000); /* let the client's first packet be on its way */
        reply(s, "T02thread:01;");
    }
    char buf[70000];
    size_t len = 0;
    while (s->running && s->cfd >= 0) {
        struct pollfd cp = { .fd = s->cfd, .events = POLLIN };
        if (poll(&cp, 1, 50) <= 0)
            continue;
        ssize_t n = recv(s->cfd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        for (;;) {
            size_t i = 0;
            while (i < len && buf[i] != '$') {
                if (buf[i] == 0x03 && !(s->mode == FAKE_SILENT_AFTER && s->packets >= s->after))
                    reply(s, "T02thread:p01.01;");
                i++;
            }
            char *hash = i < len ? memchr(buf + i, '#', len - i) : NULL;
            if (!hash || (size_t)(hash - buf) + 3 > len) {
                memmove(buf, buf + i, len - i);
                len -= i;
                break;
            }
            size_t end = (size_t)(hash - buf) + 3;
            *hash = '\0';
            char pkt[70000];
            snprintf(pkt, sizeof pkt, "%s", buf + i + 1);
            memmove(buf, buf + end, len - end);
            len -= end;
            s->packets++;
            if ((s->mode == FAKE_SILENT_AFTER) && s->packets > s->after)
                continue;
            if (s->mode == FAKE_CLOSE_AFTER && s->packets > s->after) {
                close(s->cfd);
                s->cfd = -1;
                break;
            }
            /* Logged before the ack: once the client has its ack, the log shows the packet. */
            pthread_mutex_lock(&s->lock);
            if (s->nlog < FAKE_LOG)
                snprintf(s->log[s->nlog++], sizeof s->log[0], "%.63s", pkt);
            pthread_mutex_unlock(&s->lock);
            send_raw(s, "+", 1);
            if (s->mode == FAKE_GARBAGE_AFTER && s->packets > s->after) {
                send_raw(s, "garbage!", 8);
                continue;
            }
            handle(s, pkt);
            if (s->cfd < 0)
                break;
        }
    }
    return NULL;
}

int fake_stub_start(fake_stub *s, enum fake_mode mode, unsigned after)
{
    memset(s, 0, sizeof *s);
    s->mode = mode;
    s->after = after;
    s->cfd = -1;
    s->rip = 0x1000;
    s->cr3 = 0x2000;
    s->eflags = 0x202;
    for (unsigned i = 0; i < FAKE_MEM; i++)
        s->mem[i] = (uint8_t)(i * 7 + 3);
    snprintf(s->dir, sizeof s->dir, "/tmp/vmt-fake-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->path, sizeof s->path, "%s/gdb.sock", s->dir);
    s->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", s->path);
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(s->lfd, 1))
        return -1;
    pthread_mutex_init(&s->lock, NULL);
    s->running = true;
    return pthread_create(&s->thread, NULL, serve, s) ? -1 : 0;
}

void fake_stub_stop(fake_stub *s)
{
    s->running = false;
    pthread_join(s->thread, NULL);
    if (s->cfd >= 0)
        close(s->cfd);
    close(s->lfd);
    unlink(s->path);
    rmdir(s->dir);
    pthread_mutex_destroy(&s->lock);
}

void fake_stub_store(fake_stub *s, uint64_t va, unsigned len, uint64_t value, uint64_t hi, bool report_anyway)
{
    if (s->nstores >= sizeof s->stores / sizeof s->stores[0] || len < 1 || len > 16)
        return;
    struct fake_store *st = &s->stores[s->nstores];
    memset(st, 0, sizeof *st);
    st->va = va;
    st->len = (uint8_t)len;
    for (unsigned i = 0; i < len; i++)
        st->bytes[i] = (uint8_t)(i < 8 ? value >> (8 * i) : hi >> (8 * (i - 8)));
    st->report_anyway = report_anyway;
    s->nstores++; /* the serving thread reads it at the next 'c' (the client sends it after this returns) */
}

unsigned fake_stub_count(fake_stub *s, const char *prefix)
{
    unsigned n = 0;
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->nlog; i++)
        if (strncmp(s->log[i], prefix, strlen(prefix)) == 0)
            n++;
    pthread_mutex_unlock(&s->lock);
    return n;
}
