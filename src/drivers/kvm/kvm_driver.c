/*
 * drivers/kvm/kvm_driver.c — the KVM driver's handle: creation from a
 * vmt_machine_config, the ops table, capabilities, stats and the checker.
 *
 * Design: the vmt_driver handle is created first (with the capabilities the
 * driver will have if the host allows them), so every later setup step can
 * report through vmt_driver_fail(); the capabilities are then corrected to
 * what the host really offers (no read-only memslots: no write traps). A
 * failed create destroys everything it made, in reverse order; destroy
 * tolerates a partly built driver.
 */
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/errbuf.h"
#include "drivers/kvm/kvm_internal.h"
#include "vmtrap/image.h"

#define KVM_DEFAULT_RAM (64ull << 20)
#define KVM_DEFAULT_EXTRA 65536u
#define KVM_DEFAULT_VIEWS 8u
#define KVM_MAX_VIEWS 64u

static const char kvm_name[] = "kvm";

static void kvm_destroy(vmt_driver *d)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (!k)
        return;
    kvm_serial_fini(k);
    kvm_timer_fini(k);
    kvm_engine_fini(k);
    if (k->run)
        munmap(k->run, k->run_size);
    if (k->vcpu_fd >= 0)
        close(k->vcpu_fd);
    if (k->vm_fd >= 0)
        close(k->vm_fd);
    if (k->kvm_fd >= 0)
        close(k->kvm_fd);
    kvm_mem_fini(k);
    free(k);
}

static vmt_status kvm_get_regs_op(vmt_driver *d, vmt_vcpu vcpu, vmt_regs *regs)
{
    (void)vcpu; /* the wrapper checked vcpu < 1 */
    return kvm_get_regs(vmt_driver_impl(d), regs);
}

static vmt_status kvm_set_regs_op(vmt_driver *d, vmt_vcpu vcpu, const vmt_regs *regs)
{
    (void)vcpu;
    kvm_drv *k = vmt_driver_impl(d);
    if (k->in_event && k->need_completion)
        return vmt_driver_fail(d, VMT_E_BUSY, "an I/O or write event is pending: set registers with the response "
                               "(SET_REGS) so the instruction completes first");
    return kvm_set_regs(k, regs);
}

/* The vCPU runs only inside wait_event(), so pausing means: do not run it
 * there until resume(). */
static vmt_status kvm_pause(vmt_driver *d)
{
    ((kvm_drv *)vmt_driver_impl(d))->paused = true;
    return VMT_OK;
}

static vmt_status kvm_resume(vmt_driver *d)
{
    ((kvm_drv *)vmt_driver_impl(d))->paused = false;
    return VMT_OK;
}

static vmt_status kvm_monitor(vmt_driver *d, vmt_event_kind kind, int enable)
{
    if (kind == VMT_EVENT_IO && enable)
        return VMT_OK;
    return vmt_driver_fail(d, VMT_E_NOTSUP, "kvm always reports port I/O and has no other optional events");
}

static vmt_status kvm_set_limit(vmt_driver *d, double seconds, uint64_t instructions)
{
    kvm_drv *k = vmt_driver_impl(d);
    if (instructions)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "kvm cannot count instructions");
    if (seconds < 0 || seconds > 1e7)
        return vmt_driver_fail(d, VMT_E_INVAL, "time limit %g s is out of range", seconds);
    k->limit_guest_ns = seconds > 0 ? k->stats.ns_guest + (uint64_t)(seconds * 1e9) + 1 : 0;
    return VMT_OK;
}

static vmt_status kvm_stats(vmt_driver *d, vmt_driver_stats *out)
{
    *out = ((kvm_drv *)vmt_driver_impl(d))->stats;
    return VMT_OK;
}

static vmt_status kvm_get_vcpu_state_op(vmt_driver *d, vmt_vcpu vcpu, vmt_vcpu_state *s)
{
    (void)vcpu;
    kvm_drv *k = vmt_driver_impl(d);
    char why[256];
    vmt_status st = kvm_regs_flush(k);
    if (st)
        return st;
    if ((st = kvm_state_get(&k->host, k->vcpu_fd, k->irqchip, s, why, sizeof why)))
        return vmt_driver_fail(d, st, "%s", why);
    return VMT_OK;
}

static vmt_status kvm_set_vcpu_state_op(vmt_driver *d, vmt_vcpu vcpu, const vmt_vcpu_state *s)
{
    (void)vcpu;
    kvm_drv *k = vmt_driver_impl(d);
    if (k->in_event && k->need_completion)
        return vmt_driver_fail(d, VMT_E_BUSY, "an I/O or write event is pending: respond to it first");
    char why[256];
    vmt_status st = kvm_regs_flush(k);
    if (st)
        return st;
    st = kvm_state_set(&k->host, k->vcpu_fd, k->irqchip, s, why, sizeof why);
    k->regs_fresh = false; /* the sync copy in kvm_run is older than what was just set */
    if (st)
        return vmt_driver_fail(d, st, "%s", why);
    return VMT_OK;
}

/* DIRTY_LOG: KVM's per-slot logs folded into dirty_acc (host writes are
 * marked there too), walked a 64-bit word at a time. */
static vmt_status kvm_dirty_log_op(vmt_driver *d, int (*fn)(void *ctx, vmt_gfn gfn), void *ctx, int clear)
{
    kvm_drv *k = vmt_driver_impl(d);
    vmt_status st = kvm_collect_dirty(k);
    if (st)
        return st;
    uint64_t words = (k->ram_frames + 63) / 64;
    for (uint64_t w = 0; w < words; w++)
        for (uint64_t bits = k->dirty_acc[w]; bits; bits &= bits - 1)
            if (fn(ctx, w * 64 + (uint64_t)__builtin_ctzll(bits)))
                return VMT_OK;
    if (clear)
        memset(k->dirty_acc, 0, words * 8);
    return VMT_OK;
}

static const vmt_driver_ops kvm_ops = {
    .name = kvm_name,
    .destroy = kvm_destroy,
    .read_phys = kvm_read_phys,
    .write_phys = kvm_write_phys,
    .get_regs = kvm_get_regs_op,
    .set_regs = kvm_set_regs_op,
    .pause = kvm_pause,
    .resume = kvm_resume,
    .view_create = kvm_view_create,
    .view_destroy = kvm_view_destroy,
    .view_switch = kvm_view_switch,
    .view_current = kvm_view_current,
    .view_remap = kvm_view_remap,
    .view_set_access = kvm_view_set_access,
    .view_get_access = kvm_view_get_access,
    .frame_alloc = kvm_frame_alloc,
    .frame_free = kvm_frame_free,
    .hw_breakpoint = kvm_hw_breakpoint,
    .inject = kvm_inject,
    .monitor = kvm_monitor,
    .wait_event = kvm_wait_event,
    .respond = kvm_respond,
    .set_limit = kvm_set_limit,
    .stats = kvm_stats,
    .get_vcpu_state = kvm_get_vcpu_state_op,
    .set_vcpu_state = kvm_set_vcpu_state_op,
    .dirty_log = kvm_dirty_log_op,
};

static vmt_caps kvm_caps_for(const kvm_drv *k)
{
    vmt_caps c = { 0 };
    c.flags = VMT_CAP_READ_PHYS | VMT_CAP_WRITE_PHYS | VMT_CAP_REGS_GET | VMT_CAP_REGS_SET | VMT_CAP_PAUSE | VMT_CAP_VIEWS |
              VMT_CAP_VIEW_REMAP | VMT_CAP_SINGLESTEP | VMT_CAP_FAST_STEP | VMT_CAP_FRAMES | VMT_CAP_INJECT_BP | VMT_CAP_INJECT_PF |
              VMT_CAP_EVENTS | VMT_CAP_BREAKPOINT_EVENTS | VMT_CAP_IO_EVENTS | VMT_CAP_HW_BREAKPOINTS |
              VMT_CAP_TIME_LIMIT | VMT_CAP_VCPU_STATE | VMT_CAP_DIRTY_LOG;
    if (k->have_ro_slots) {
        c.flags |= VMT_CAP_VIEW_PERM | VMT_CAP_WRITE_DATA | VMT_CAP_EMULATE;
        c.trap_access = k->trap_access;
    }
    c.max_views = k->max_views;
    c.hw_breakpoints = 4;
    c.vcpus = 1;
    c.ram_frames = k->ram_frames;
    unsigned a, b, cc, dd;
    c.maxphyaddr = (__get_cpuid(0x80000008u, &a, &b, &cc, &dd) && (a & 0xff)) ? (uint8_t)(a & 0xff) : 36;
    return c;
}

static vmt_status place_write(void *ctx, vmt_pa pa, const void *buf, size_t len)
{
    kvm_drv *k = ctx;
    if (pa > k->ram_size || len > k->ram_size - pa)
        return VMT_E_RANGE;
    memcpy(k->direct + pa, buf, len);
    return VMT_OK;
}

static vmt_status open_kvm(kvm_drv *k, const vmt_machine_config *cfg, char *why, size_t why_len)
{
    const char *dev = getenv("VMT_KVM_DEVICE");
    if (!dev || !*dev)
        dev = "/dev/kvm";
    k->kvm_fd = open(dev, O_RDWR | O_CLOEXEC);
    if (k->kvm_fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENXIO || e == ENODEV) {
            vmt_why(why, why_len, "kvm: %s does not exist on this host (KVM is not available: %s)", dev, strerror(e));
            return VMT_E_NOTSUP;
        }
        if (e == EACCES || e == EPERM) {
            vmt_why(why, why_len, "kvm: no permission to open %s (%s); add the user to the device's group "
                    "(usually 'kvm')", dev, strerror(e));
            return VMT_E_IO;
        }
        vmt_why(why, why_len, "kvm: cannot open %s: %s", dev, strerror(e));
        return VMT_E_IO;
    }
    int api = ioctl(k->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        vmt_why(why, why_len, "kvm: %s is not a KVM device (KVM_GET_API_VERSION gave %d, expected %d)", dev, api,
                KVM_API_VERSION);
        return VMT_E_NOTSUP;
    }
    do
        k->vm_fd = ioctl(k->kvm_fd, KVM_CREATE_VM, 0);
    while (k->vm_fd < 0 && errno == EINTR);
    if (k->vm_fd < 0) {
        vmt_why(why, why_len, "kvm: KVM_CREATE_VM: %s", strerror(errno));
        return VMT_E_DRIVER;
    }
    /* the irqchip and PIT must exist before the vCPU (api.rst) */
    vmt_status st = kvm_bus_pre_vcpu(k, cfg, why, why_len);
    if (st)
        return st;
    k->vcpu_fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, 0);
    int sz = ioctl(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (k->vcpu_fd < 0 || sz < (int)sizeof(struct kvm_run)) {
        vmt_why(why, why_len, "kvm: creating the vCPU: %s", strerror(errno));
        return VMT_E_DRIVER;
    }
    k->run_size = (size_t)sz;
    k->run = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->vcpu_fd, 0);
    if (k->run == MAP_FAILED) {
        k->run = NULL;
        vmt_why(why, why_len, "kvm: mapping the vCPU's run area: %s", strerror(errno));
        return VMT_E_DRIVER;
    }
    kvm_bus_post_vcpu(k, cfg);
    return VMT_OK;
}

vmt_status vmt_kvm_driver_create(const vmt_machine_config *cfg, vmt_driver **out, char *why, size_t why_len)
{
    if (!cfg || !cfg->image || !out) {
        vmt_why(why, why_len, "kvm: a machine config with an image and an output pointer are required");
        return VMT_E_INVAL;
    }
    uint64_t ram = cfg->ram_size ? cfg->ram_size : KVM_DEFAULT_RAM;
    if (ram % VMT_PAGE_SIZE || ram < 16 * VMT_PAGE_SIZE || ram > (1ull << 40)) {
        vmt_why(why, why_len, "kvm: RAM size %" PRIu64 " must be a multiple of 4 KiB between 64 KiB and 1 TiB", ram);
        return VMT_E_INVAL;
    }
    if (cfg->vcpus > 1) {
        vmt_why(why, why_len, "kvm: the driver runs one vCPU (asked for %u)", cfg->vcpus);
        return VMT_E_NOTSUP;
    }
    uint64_t extra = cfg->extra_frames ? cfg->extra_frames : KVM_DEFAULT_EXTRA;
    if ((ram >> VMT_PAGE_SHIFT) + extra > UINT32_MAX) {
        vmt_why(why, why_len, "kvm: RAM plus extra frames exceed 2^32 frames");
        return VMT_E_INVAL;
    }
    kvm_drv *k = calloc(1, sizeof *k);
    if (!k) {
        vmt_why(why, why_len, "kvm: out of memory");
        return VMT_E_NOMEM;
    }
    k->kvm_fd = k->vm_fd = k->vcpu_fd = k->memfd = -1;
    k->ram_size = ram;
    k->ram_frames = ram >> VMT_PAGE_SHIFT;
    k->extra_frames = extra;
    k->max_views = cfg->max_views ? cfg->max_views : KVM_DEFAULT_VIEWS;
    if (k->max_views < 2)
        k->max_views = 2;
    if (k->max_views > KVM_MAX_VIEWS)
        k->max_views = KVM_MAX_VIEWS;
    k->serial = cfg->serial;
    k->serial_ctx = cfg->serial_ctx;
    k->step.fast_view = VMT_VIEW_INVALID;
    k->have_ro_slots = true;

    vmt_caps caps = kvm_caps_for(k);
    vmt_driver *d;
    vmt_status st = vmt_driver_create(&kvm_ops, k, &caps, &d, why, why_len);
    if (st) {
        free(k);
        return st;
    }
    k->d = d;
    vmt_regs regs;
    if ((st = open_kvm(k, cfg, why, why_len)) || (st = kvm_mem_init(k, why, why_len)) ||
        (st = vmt_image_place((vmt_image *)(uintptr_t)cfg->image, ram, place_write, k, &regs, why, why_len)) ||
        (st = kvm_setup_vcpu(k, &regs, why, why_len)) || (st = kvm_timer_init(k, why, why_len)))
        goto fail;
    caps = kvm_caps_for(k);
    if ((st = vmt_driver_set_caps(d, &caps))) {
        vmt_why(why, why_len, "%s", vmt_driver_error(d));
        goto fail;
    }
    *out = d;
    return VMT_OK;
fail:
    vmt_driver_destroy(d);
    return st;
}

int vmt_kvm_is_kvm(const vmt_driver *d)
{
    return d && vmt_driver_name(d) == kvm_name;
}

static kvm_drv *kvm_of(vmt_driver *d) { return vmt_kvm_is_kvm(d) ? vmt_driver_impl(d) : NULL; }

vmt_status vmt_kvm_dirty_log(vmt_driver *d, uint64_t *bitmap, uint64_t nbits)
{
    kvm_drv *k = kvm_of(d);
    if (!k)
        return VMT_E_INVAL;
    if (!bitmap || nbits < k->ram_frames)
        return vmt_driver_fail(d, VMT_E_INVAL, "dirty log needs a bitmap of at least %" PRIu64 " bits", k->ram_frames);
    vmt_status st = kvm_collect_dirty(k);
    if (st)
        return st;
    uint64_t words = (k->ram_frames + 63) / 64, out_words = (nbits + 63) / 64;
    memcpy(bitmap, k->dirty_acc, words * 8);
    memset(bitmap + words, 0, (out_words - words) * 8);
    memset(k->dirty_acc, 0, words * 8);
    return VMT_OK;
}

uint64_t vmt_kvm_exit_count(const vmt_driver *d, uint32_t reason)
{
    if (!vmt_kvm_is_kvm(d) || reason >= KVM_EXIT_REASONS)
        return 0;
    return ((kvm_drv *)vmt_driver_impl((vmt_driver *)(uintptr_t)d))->exit_counts[reason];
}

uint32_t vmt_kvm_memslot_count(const vmt_driver *d)
{
    if (!vmt_kvm_is_kvm(d))
        return 0;
    return ((kvm_drv *)vmt_driver_impl((vmt_driver *)(uintptr_t)d))->nslots;
}

vmt_status vmt_kvm_check(vmt_driver *d)
{
    kvm_drv *k = kvm_of(d);
    if (!k)
        return VMT_E_INVAL;
    if (k->cur_view >= k->max_views || !k->views[k->cur_view].used)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "current view %u does not exist", k->cur_view);
    if (!k->step.active && (k->step.fast_view != VMT_VIEW_INVALID || k->step.report || k->step.hw_off))
        return vmt_driver_fail(d, VMT_E_INTERNAL, "inactive step carries state");
    if (k->in_event && (k->ev.kind == VMT_EVENT_NONE || k->ev.kind == VMT_EVENT_STOPPED))
        return vmt_driver_fail(d, VMT_E_INTERNAL, "pending event has kind %s", vmt_event_kind_name(k->ev.kind));
    if (k->nslots + k->nfree_ids != k->max_slots)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "%u slots in use + %u free != %u", k->nslots, k->nfree_ids,
                               k->max_slots);
    if ((k->run->kvm_dirty_regs & KVM_SYNC_X86_REGS) && !k->regs_fresh)
        return vmt_driver_fail(d, VMT_E_INTERNAL, "registers pending for KVM_RUN but the sync copy is stale");
    vmt_status st = kvm_engine_check(k);
    if (st || (st = kvm_bus_check(k)))
        return st;
    return kvm_mem_check(k);
}
