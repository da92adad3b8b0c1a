/*
 * drivers/kvm/kvm_plat.h — the KVM driver's in-kernel irqchip, interrupt-line
 * forwarding and guest-TSC hiding, written against an injectable ioctl so the
 * logic runs in unit tests without /dev/kvm (tests/kvm/test_kvm_plat.c).
 *
 * Design: with a vmt_bus, the VM gets KVM's irqchip (KVM_CREATE_IRQCHIP:
 * LAPIC, IOAPIC, PIC in the kernel) and PIT (KVM_CREATE_PIT2), both before
 * the vCPU, and a GSI routing like QEMU's `pc`: GSI n < 16 on PIC pin n and
 * IOAPIC pin n, except GSI 0 on IOAPIC pin 2 (the ACPI override the
 * platform module also assumes), GSI 16..23 on IOAPIC pins only. The
 * platform's line changes (irq 0..23, vmt_platform_irq_fn) become
 * KVM_IRQ_LINE_STATUS (KVM_IRQ_LINE without KVM_CAP_IRQ_INJECT_STATUS).
 * TSC: time the vCPU spends stopped for the monitor is taken off the guest
 * TSC through the vCPU's TSC offset attribute (KVM_VCPU_TSC_CTRL /
 * KVM_VCPU_TSC_OFFSET, Linux 5.16+) or, without it, by a host write of
 * IA32_TSC that is read back: KVM treats a host IA32_TSC write within one
 * second of the expected value as a "synchronisation" and may keep the old
 * offset, so a rewind that did not take disables the method (reported);
 * that path collects at least 100 us of stopped time per write so a taken
 * rewind stands out from the time between its read and read-back.
 * Invariants (kvm_irq_fwd_check): only lines 0..23 are high; counters add
 * up. Failure atomicity: a failed ioctl leaves the recorded level unchanged.
 * Threading: the driver's thread.
 */
#ifndef VMT_KVM_PLAT_H
#define VMT_KVM_PLAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtrap/status.h"

/* ioctl(fd, req, arg): the result (>= 0) or -errno. */
typedef int (*kvm_ioctl_fn)(void *ctx, int fd, unsigned long req, void *arg);
typedef struct kvm_host {
    kvm_ioctl_fn ioctl;
    void *ctx;
} kvm_host;
int kvm_host_real_ioctl(void *ctx, int fd, unsigned long req, void *arg);

#define KVM_PLAT_IRQ_LINES 24

/* KVM_CREATE_IRQCHIP, the GSI routing above, KVM_CREATE_PIT2 on vm_fd. */
vmt_status kvm_irqchip_create(const kvm_host *h, int kvm_fd, int vm_fd, char *why, size_t why_len);

typedef struct kvm_irq_fwd {
    kvm_host host;
    int vm_fd;
    bool use_status;      /* KVM_IRQ_LINE_STATUS (else KVM_IRQ_LINE) */
    uint32_t level;       /* bit n: line n is high as KVM last saw it */
    uint64_t raised, lowered;
    uint64_t delivered, coalesced, masked; /* of raised lines, by KVM_IRQ_LINE_STATUS */
    uint64_t failures;
    int last_errno;
    unsigned last_irq;
} kvm_irq_fwd;

void kvm_irq_fwd_init(kvm_irq_fwd *f, const kvm_host *h, int vm_fd, bool use_status);
/* Line `irq` (0..23) is now at `level`: one ioctl when it changed.
 * VMT_E_INVAL for a line out of range, VMT_E_DRIVER when KVM refused. */
vmt_status kvm_irq_fwd_set(kvm_irq_fwd *f, unsigned irq, bool level);
vmt_status kvm_irq_fwd_check(const kvm_irq_fwd *f, char *why, size_t why_len);

typedef enum kvm_tsc_method { KVM_TSC_NONE = 0, KVM_TSC_OFFSET_ATTR, KVM_TSC_MSR } kvm_tsc_method;

typedef struct kvm_tsc {
    kvm_host host;
    int vcpu_fd;
    kvm_tsc_method method;
    uint64_t khz;          /* the guest TSC's rate (KVM_GET_TSC_KHZ) */
    uint64_t hidden_ns;    /* monitor time taken off so far */
    uint64_t hidden_ticks; /* = hidden_ns * khz / 1e6, rounded down */
    uint64_t pending_ns;   /* stopped time not taken off yet (MSR path: < 100 us) */
    uint64_t failures;
    int last_errno;
    char why_none[120];    /* why method is NONE */
} kvm_tsc;

/* Ticks of a khz clock in ns (128-bit intermediate, rounded down). */
uint64_t kvm_ns_to_ticks(uint64_t ns, uint64_t khz);
/* Pick the method; want_hz != 0 first asks KVM_SET_TSC_KHZ for that rate. */
void kvm_tsc_init(kvm_tsc *t, const kvm_host *h, int vcpu_fd, uint64_t want_hz);
/* `ns` more of monitor time to hide: the guest TSC goes back by its ticks. */
vmt_status kvm_tsc_hide(kvm_tsc *t, uint64_t ns);
const char *kvm_tsc_method_name(kvm_tsc_method m);

/* kvm_state.c: the whole vCPU state (vmtrap/vcpu_state.h) through h. */
struct vmt_vcpu_state;
vmt_status kvm_state_get(const kvm_host *h, int vcpu_fd, bool irqchip, struct vmt_vcpu_state *s, char *why,
                         size_t why_len);
vmt_status kvm_state_set(const kvm_host *h, int vcpu_fd, bool irqchip, const struct vmt_vcpu_state *s, char *why,
                         size_t why_len);

#endif
