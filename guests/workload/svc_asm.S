/*
 * guests/workload/svc_asm.S — the parts of the service pages that must be
 * exact instructions:
 *  - svc_exit starts with pushfq: a monitor that steps the displaced first
 *    instruction of a hooked svc_exit with a visible TF is caught (the
 *    service counts the calls that saw TF: svc_tf_leaks, detector 6);
 *  - smc_target (same page as svc_exit): `mov $imm32, %eax; ret`, rewritten
 *    by detector 4 (self-modifying code in a hooked page);
 *  - int3_in_service_page (same page as svc_write): the guest's own INT3
 *    inside a hooked page (detector 5).
 * Section names sort after their service's (.page_text.* is sorted by name)
 * and carry no alignment, so they share its page.
 */
    .section .page_text.4_exit, "ax", @progbits
    .balign 4096
    .globl svc_exit
    .type svc_exit, @function
svc_exit:
    pushfq
    popq    %rax
    testl   $0x100, %eax
    jz      1f
    lock incq svc_tf_leaks(%rip)
1:  lock incq svc_served + 3 * 8(%rip)
    xorl    %eax, %eax
    cmpq    $0, %rdi
    jg      2f
    movl    $-3, %eax               /* ESRCH for pid <= 0 */
2:  ret
    .size svc_exit, . - svc_exit

    .globl smc_target
    .globl smc_target_imm
    .type smc_target, @function
smc_target:
    .byte   0xb8                    /* mov $imm32, %eax */
smc_target_imm:
    .long   1
    ret
    .size smc_target, . - smc_target

    .section .page_text.2_write_z, "ax", @progbits
    .globl int3_in_service_page
    .type int3_in_service_page, @function
int3_in_service_page:
    int3
    ret
    .size int3_in_service_page, . - int3_in_service_page

/* The guest's own traps in the other encodings inside the hooked page
 * (detector 9): INT $3 (CD 03), INT1/ICEBP (F1, #DB), INTO (CE, #UD). */
    .globl trap_cd03_in_service_page
    .type trap_cd03_in_service_page, @function
trap_cd03_in_service_page:
    .byte   0xcd, 0x03
    ret
    .globl trap_icebp_in_service_page
    .type trap_icebp_in_service_page, @function
trap_icebp_in_service_page:
    .byte   0xf1
    ret
    .globl trap_into_in_service_page
    .type trap_into_in_service_page, @function
trap_into_in_service_page:
    .byte   0xce
    ret

/* svc_exit's twin (detector 16, timing): the same instructions, alone in a
 * page nobody hooks, counting into its own variables. */
    .section .page_text.9_twin, "ax", @progbits
    .balign 4096
    .globl svc_exit_twin
    .type svc_exit_twin, @function
svc_exit_twin:
    pushfq
    popq    %rax
    testl   $0x100, %eax
    jz      1f
    lock incq twin_tf_leaks(%rip)
1:  lock incq twin_served(%rip)
    xorl    %eax, %eax
    cmpq    $0, %rdi
    jg      2f
    movl    $-3, %eax
2:  ret
    .size svc_exit_twin, . - svc_exit_twin

    .section .note.GNU-stack, "", @progbits
