/* startup.c - the reset path of the bare-metal harness (tests/mcu/mps2_an386.ld): a Cortex-M4
 * vector table, a reset handler that copies .data from flash, zeroes .bss, opens newlib's
 * semihosting handles (librdimon, --specs=rdimon.specs) and calls main, and a fault handler
 * that reports through semihosting and stops QEMU, so a fault fails the test instead of
 * hanging it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern uint32_t __data_start[], __data_end[], __data_load[], __bss_start[], __bss_end[];
extern uint32_t __stack_top[];
extern void initialise_monitor_handles(void);
int main(void);
void kd_reset(void);
void kd_fault(void);

/* The last word the assembler-free semihosting write needs: SYS_WRITE0 (0x04) prints a
 * NUL-terminated string on QEMU's standard output. */
static void say(const char *s) {
    register uint32_t r0 __asm__("r0") = 0x04;
    register const char *r1 __asm__("r1") = s;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}

void kd_fault(void) {
    say("mcu harness: hard fault\n");
    _Exit(3);
}

/* Initial stack pointer, reset, NMI, hard fault, memory management, bus and usage faults. */
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, kd_reset, kd_fault, kd_fault, kd_fault, kd_fault, kd_fault,
};

/* newlib's exit path calls these when no crti/crtn objects are linked (-nostartfiles). */
void _init(void) {}
void _fini(void) {}

void kd_reset(void) {
    memcpy(__data_start, __data_load, (size_t)((char *)__data_end - (char *)__data_start));
    memset(__bss_start, 0, (size_t)((char *)__bss_end - (char *)__bss_start));
    initialise_monitor_handles();
    exit(main());
}
