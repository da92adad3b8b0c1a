/*
 * guests/lib/crt0.S — entry of every testbed guest, and the exception stubs.
 *
 * _start runs at its load address under the vmtrap boot protocol (64-bit,
 * CPL0, identity tables, rdi = RAM size). It builds tiny early tables in
 * .boot.bss that map the first 1 GiB twice, at 0 and at KERNEL_VMA, with
 * 2 MiB pages (A/D preset), switches to them and jumps to the kernel half,
 * which takes its own stack, zeroes .bss and calls guest_start(ram_size).
 * guest_start (start.c) builds the guest's real tables.
 *
 * Exception stubs: vectors 0..31 push a dummy error code when the CPU pushes
 * none, then the vector, then every general register, so the C dispatcher
 * gets a struct trap_frame (guest/guest.h). The stack is 16-byte aligned at
 * the call (the CPU aligns it before pushing 48 bytes; we push 128 more).
 */
#define KERNEL_VMA 0xffffffff80000000

    .section .boot.text, "ax"
    .code64
    .globl _start
_start:
    cli
    cld
    mov     %rdi, %r12                  /* RAM size, kept in a callee-saved reg */

    /* zero the 3 early table frames */
    lea     boot_tables(%rip), %rdi
    mov     $(3 * 512), %ecx
    xor     %eax, %eax
    rep stosq

    /* PD: 512 x 2 MiB leaves, P|RW|A|D|PS */
    lea     boot_tables + 2 * 4096(%rip), %rdi
    xor     %ecx, %ecx
1:  mov     %rcx, %rax
    shl     $21, %rax
    or      $0xe3, %rax
    mov     %rax, (%rdi, %rcx, 8)
    inc     %ecx
    cmp     $512, %ecx
    jb      1b

    /* PDPT[0] and PDPT[510] -> PD; PML4[0] and PML4[511] -> PDPT (P|RW|A) */
    lea     boot_tables + 4096(%rip), %rdi
    lea     boot_tables + 2 * 4096(%rip), %rax
    or      $0x23, %rax
    mov     %rax, (%rdi)
    mov     %rax, 510 * 8(%rdi)
    lea     boot_tables(%rip), %rdi
    lea     boot_tables + 4096(%rip), %rax
    or      $0x23, %rax
    mov     %rax, (%rdi)
    mov     %rax, 511 * 8(%rdi)
    mov     %rdi, %cr3

    movabs  $start_kernel_half, %rax
    jmp     *%rax

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_tables:
    .skip   3 * 4096

    .text
start_kernel_half:
    lea     boot_stack_top(%rip), %rsp
    xor     %ebp, %ebp
    /* zero .bss (the stack is in it, nothing is on it yet) */
    lea     __bss_start(%rip), %rdi
    lea     __bss_end(%rip), %rcx
    sub     %rdi, %rcx
    xor     %eax, %eax
    rep stosb
    mov     %r12, %rdi
    call    guest_start
2:  cli
    hlt
    jmp     2b

/* Exception stubs */
.macro TRAP_STUB vec
    .balign 16
trap_stub_\vec:
    .if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushq   $0
    .endif
    pushq   $\vec
    jmp     trap_common
.endm

    /* stub n is at trap_stubs_begin + 16 * n (each is at most 9 bytes) */
    .altmacro
    .balign 16
    .globl trap_stubs_begin
trap_stubs_begin:
    .set vec, 0
    .rept 32
    TRAP_STUB %vec
    .set vec, vec + 1
    .endr
    .noaltmacro

trap_common:
    pushq   %rax
    pushq   %rbx
    pushq   %rcx
    pushq   %rdx
    pushq   %rsi
    pushq   %rdi
    pushq   %rbp
    pushq   %r8
    pushq   %r9
    pushq   %r10
    pushq   %r11
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    mov     %rsp, %rdi
    cld
    call    trap_dispatch
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %r11
    popq    %r10
    popq    %r9
    popq    %r8
    popq    %rbp
    popq    %rdi
    popq    %rsi
    popq    %rdx
    popq    %rcx
    popq    %rbx
    popq    %rax
    add     $16, %rsp
    iretq

    .bss
    .balign 16
boot_stack:
    .skip   32768
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
