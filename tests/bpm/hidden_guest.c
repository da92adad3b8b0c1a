/*
 * tests/bpm/hidden_guest.c — the guests of hidden_guest.h. Each program is a
 * byte array with its assembly beside it; `n` is patched into the
 * `mov ecx, imm32` that starts every program.
 */
#include "hidden_guest.h"

#include <stdio.h>
#include <string.h>

#include "vmtrap/image.h"
#include "vmtrap/machine.h"
#ifdef HG_HAVE_EMU
#include "vmtrap/emu.h"
#endif
#ifdef HG_HAVE_KVM
#include "vmtrap/kvm.h"
#endif

/* mov ecx,N; mov dx,0x5e2; 1: out dx,eax; dec ecx; jnz 1b;
 * mov dx,0x5e1; out dx,eax; hlt */
static const uint8_t g_out_loop[] = {
    0xb9, 0, 0, 0, 0, 0x66, 0xba, 0xe2, 0x05, 0xef, 0xff, 0xc9, 0x75, 0xfb,
    0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4,
};
#define OUT_INSN 9

/* mov ecx,N; mov ebx,0x3000; 1: call rbx; dec ecx; jnz 1b;
 * mov dx,0x5e1; out dx,eax; hlt */
static const uint8_t g_calls[] = {
    0xb9, 0, 0, 0, 0, 0xbb, 0x00, 0x30, 0x00, 0x00, 0xff, 0xd3, 0xff, 0xc9, 0x75, 0xfa,
    0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4,
};

/* mov ecx,N; mov ebx,0x3000; 1: mov rax,[rbx]; dec ecx; jnz 1b;
 * mov dx,0x5e1; out dx,eax; hlt */
static const uint8_t g_reads[] = {
    0xb9, 0, 0, 0, 0, 0xbb, 0x00, 0x30, 0x00, 0x00, 0x48, 0x8b, 0x03, 0xff, 0xc9, 0x75, 0xf9,
    0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4,
};

/* mov ecx,N; mov ebx,PDE (imm at +6); mov rax,[rbx]; 1: mov [rbx],rax;
 * dec ecx; jnz 1b; mov dx,0x5e1; out dx,eax; hlt */
static const uint8_t g_pt_writes[] = {
    0xb9, 0, 0, 0, 0, 0xbb, 0, 0, 0, 0, 0x48, 0x8b, 0x03, 0x48, 0x89, 0x03, 0xff, 0xc9, 0x75, 0xf9,
    0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4,
};
#define PDE_IMM 6

/* mov ecx,N; mov ebx,0x3800; 1: mov [rbx],rcx; dec ecx; jnz 1b;
 * mov dx,0x5e1; out dx,eax; hlt */
static const uint8_t g_writes[] = {
    0xb9, 0, 0, 0, 0, 0xbb, 0x00, 0x38, 0x00, 0x00, 0x48, 0x89, 0x0b, 0xff, 0xc9, 0x75, 0xf9,
    0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4,
};

/* mov ecx,N; mov ebx,0x3000; xor esi,esi; 1: mov edi,ecx; call rbx;
 * add esi,eax; dec ecx; jnz 1b; mov eax,esi; mov dx,0x5e1; out dx,eax; hlt */
static const uint8_t g_self_calls[] = {
    0xb9, 0, 0, 0, 0, 0xbb, 0x00, 0x30, 0x00, 0x00, 0x31, 0xf6, 0x89, 0xcf, 0xff, 0xd3, 0x01, 0xc6,
    0xff, 0xc9, 0x75, 0xf6, 0x89, 0xf0, 0x66, 0xba, 0xe1, 0x05, 0xef, 0xf4,
};
/* at HG_FUNC_VA: mov [rip+1],edi (the imm32 below); mov eax,imm32; ret */
static const uint8_t g_self_func[] = { 0x89, 0x3d, 0x01, 0x00, 0x00, 0x00, 0xb8, 0, 0, 0, 0, 0xc3 };

/* at HG_FUNC_VA: push rbp; mov rax,rdi; pop rbp; ret */
static const uint8_t g_func[] = { 0x55, 0x48, 0x89, 0xf8, 0x5d, 0xc3 };

uint64_t hg_pde_pa(void)
{
    /* boot tables: PML4, PDPT, then the PDs (2 MiB entries) */
    return vmt_boot_pt_base(HG_RAM) + 2 * VMT_PAGE_SIZE + (HG_PT_VA >> 21) * 8;
}

int hg_driver_built(const char *driver)
{
#ifdef HG_HAVE_EMU
    if (strcmp(driver, "emu") == 0)
        return 1;
#endif
#ifdef HG_HAVE_KVM
    if (strcmp(driver, "kvm") == 0)
        return 1;
#endif
    (void)driver;
    return 0;
}

vmt_status hg_driver(const char *driver, hg_kind kind, uint32_t n, vmt_driver **out, char *why, size_t why_len)
{
    *out = NULL;
    uint8_t code[64];
    size_t len;
    switch (kind) {
    case HG_OUT_LOOP:
    case HG_NOP_LOOP:
        len = sizeof g_out_loop;
        memcpy(code, g_out_loop, len);
        if (kind == HG_NOP_LOOP)
            code[OUT_INSN] = 0x90;
        break;
    case HG_CALLS: len = sizeof g_calls; memcpy(code, g_calls, len); break;
    case HG_READS: len = sizeof g_reads; memcpy(code, g_reads, len); break;
    case HG_WRITES: len = sizeof g_writes; memcpy(code, g_writes, len); break;
    case HG_SELF_STORES: len = sizeof g_self_calls; memcpy(code, g_self_calls, len); break;
    case HG_PT_WRITES: {
        len = sizeof g_pt_writes;
        memcpy(code, g_pt_writes, len);
        uint32_t pde = (uint32_t)hg_pde_pa();
        memcpy(code + PDE_IMM, &pde, 4);
        break;
    }
    default:
        snprintf(why, why_len, "unknown guest kind %d", (int)kind);
        return VMT_E_INVAL;
    }
    if (n == 0 || n > (1u << 31)) {
        snprintf(why, why_len, "repetitions %u out of range", n);
        return VMT_E_INVAL;
    }
    memcpy(code + 1, &n, 4);
    vmt_image_segment segs[2] = {
        { .pa = HG_CODE_PA, .data = code, .filesz = len, .memsz = len },
        { .pa = HG_FUNC_VA, .data = kind == HG_SELF_STORES ? g_self_func : g_func,
          .filesz = kind == HG_SELF_STORES ? sizeof g_self_func : sizeof g_func,
          .memsz = kind == HG_SELF_STORES ? sizeof g_self_func : sizeof g_func },
    };
    vmt_image *img = NULL;
    vmt_status st = vmt_image_from_segments(segs, 2, NULL, HG_RAM, &img, why, why_len);
    if (st)
        return st;
    vmt_machine_config cfg = { .ram_size = HG_RAM, .image = img, .extra_frames = 64 };
    st = VMT_E_NOTSUP;
    snprintf(why, why_len, "driver %s is not built in", driver);
#ifdef HG_HAVE_EMU
    if (strcmp(driver, "emu") == 0)
        st = vmt_emu_driver_create(&cfg, out, why, why_len);
#endif
#ifdef HG_HAVE_KVM
    if (strcmp(driver, "kvm") == 0)
        st = vmt_kvm_driver_create(&cfg, out, why, why_len);
#endif
    vmt_image_destroy(img);
    return st;
}
