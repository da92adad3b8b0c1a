/*
 * guests/cpu/cpu_asm.S — the CPU guest's entry points: entering user mode
 * (iretq), the SYSCALL entry (swapgs, kernel stack from the per-CPU block,
 * sysretq back), the interrupt stub for the test bus's vector, and the user
 * programs (one 4 KiB page of their own, mapped user-accessible at run time).
 */
#define SYS_EXIT 0

    .text
/* uint64_t enter_user(uint64_t rip, uint64_t rsp, uint64_t rflags, uint64_t data):
 * runs rip at CPL3 with rdi = data; returns the user's SYS_EXIT argument */
    .globl enter_user
enter_user:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, kernel_saved_rsp(%rip)
    pushq   $0x1b           /* ss: user data, RPL3 */
    pushq   %rsi            /* rsp */
    pushq   %rdx            /* rflags */
    pushq   $0x23           /* cs: user code, RPL3 */
    pushq   %rdi            /* rip */
    mov     %rcx, %rdi
    iretq

/* LSTAR: rax = number, rdi = argument; rcx/r11 by the CPU */
    .globl syscall_entry
syscall_entry:
    swapgs
    mov     %rsp, %gs:8     /* percpu.user_rsp */
    mov     %gs:0, %rsp     /* percpu.kernel_stack */
    cmp     $SYS_EXIT, %rax
    je      1f
    push    %rcx
    push    %r11
    mov     %rdi, %rsi
    mov     %rax, %rdi
    call    syscall_dispatch
    pop     %r11
    pop     %rcx
    mov     %gs:8, %rsp
    swapgs
    sysretq
1:  mov     kernel_saved_rsp(%rip), %rsp
    swapgs
    mov     %rdi, %rax
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

/* the test bus's interrupt: C sees the CPU's frame (rip, cs, rflags, rsp, ss) */
    .globl irq_stub
irq_stub:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    lea     72(%rsp), %rdi
    call    irq_handler
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    iretq

/* ---- user programs: rdi = the user data page ---- */
    .section .page_text.user,"ax"
    .balign 4096
    .globl user_page
user_page:

/* three SYSCALL round trips; results at 0.. of the data page */
    .globl user_syscalls
user_syscalls:
    mov     %rdi, %rbx
    mov     $1, %eax        /* SYS_ADD1 */
    mov     $41, %edi
    syscall
    mov     %rax, 0(%rbx)
    mov     $1, %eax
    mov     0(%rbx), %rdi
    syscall
    mov     %rax, 8(%rbx)
    pushfq
    pop     %rax
    mov     %rax, 16(%rbx)
    mov     %cs, %eax
    mov     %rax, 24(%rbx)
    mov     %ss, %eax
    mov     %rax, 32(%rbx)
    mov     $SYS_EXIT, %eax
    mov     $10, %edi
    syscall

/* a store to an address nobody mapped: #PF (the handler resumes at user_pf_resume) */
    .globl user_pf, user_pf_resume
user_pf:
    movabs  $0x00007f0000200008, %rax   /* UNMAPPED_VA of cpu.c */
    movq    $7, (%rax)
user_pf_resume:
    mov     $SYS_EXIT, %eax
    mov     $11, %edi
    syscall

/* a privileged instruction: #GP (the handler skips it) */
    .globl user_gp
user_gp:
    cli
    mov     $SYS_EXIT, %eax
    mov     $12, %edi
    syscall

/* wait in user mode until the interrupt handler bumps (rdi) */
    .globl user_spin
user_spin:
1:  cmpq    $0, 0x100(%rdi)
    je      1b
    mov     $SYS_EXIT, %eax
    mov     $13, %edi
    syscall

/* SSE/x87 across the switch: xmm0 = (rdi), st0 = 1.0; SYS_SSE (the kernel
 * checks xmm0 and sets xmm1); then store xmm0, xmm1 and st0 */
    .globl user_sse
user_sse:
    mov     %rdi, %rbx
    movdqu  (%rbx), %xmm0
    fld1
    mov     $2, %eax        /* SYS_SSE */
    syscall
    movdqu  %xmm0, 16(%rbx)
    movdqu  %xmm1, 32(%rbx)
    fstpl   48(%rbx)
    mov     $SYS_EXIT, %eax
    mov     $14, %edi
    syscall

/* what a kernel with SMEP must not run */
    .globl user_ret
user_ret:
    ret
    .balign 4096
