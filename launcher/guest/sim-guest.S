/*
 * cvm-launch simulated-TEE test guest: a 4 KiB flat firmware image (16-bit real mode, no RAM used).
 *
 * Mapped so that it ends at 4 GiB: image offset N is GPA 0xFFFFF000 + N and, with the reset-state
 * CS base 0xFFFF0000, CS offset 0xF000 + N (hence `ld -Ttext=0xf000`). The reset vector at
 * 0xFFFFFFF0 (image offset 0xFF0) jumps to _start, which:
 *   1. writes the 64 fixed REPORT_DATA bytes below to the simulated PSP's data port,
 *   2. issues GET_REPORT and reads the status,
 *   3. reads the report back byte by byte and prints it hex-encoded on COM1,
 *   4. halts.
 * Near the end it carries TDVF metadata (see below), so it has a TDX plan (MRTD) as well.
 * Ports (launcher/src/devices/psp.rs): 0x510 data, 0x511 command/status, 0x512 response length
 * (16 bit). COM1 0x3F8 (8250 THR), line status 0x3FD (THRE = bit 5).
 *
 * Rebuild: as --32 -o sim-guest.o sim-guest.S && ld -m elf_i386 -Ttext=0xf000 --oformat binary
 *          -o sim-guest.bin sim-guest.o   (launcher/tests/sim_guest_image.rs checks the result)
 */
    .code16
    .set PSP_DATA, 0x510
    .set PSP_CMD,  0x511
    .set PSP_LEN,  0x512
    .set COM1,     0x3f8
    .set COM1_LSR, 0x3fd

/* Send %bl to COM1 once the transmitter holding register is empty. Clobbers %al, %dx. */
    .macro putc_bl
99: mov     $COM1_LSR, %dx
    inb     %dx, %al
    test    $0x20, %al
    jz      99b
    mov     $COM1, %dx
    mov     %bl, %al
    outb    %al, %dx
    .endm

/* Turn the low nibble of %bl into a lowercase hex digit. */
    .macro nibble_bl
    and     $0x0f, %bl
    add     $'0', %bl
    cmp     $'9', %bl
    jbe     98f
    add     $('a' - '0' - 10), %bl
98:
    .endm

/* Print %bh as two hex digits. Clobbers %al, %bl, %dx. */
    .macro hexbyte
    mov     %bh, %bl
    shr     $4, %bl
    nibble_bl
    putc_bl
    mov     %bh, %bl
    nibble_bl
    putc_bl
    .endm

    .text
    .globl _start
_start:
    cli
    cld

    /* 1. REPORT_DATA -> PSP */
    mov     $report_data, %si
    mov     $64, %cx
    mov     $PSP_DATA, %dx
1:  cs lodsb
    outb    %al, %dx
    loop    1b

    /* 2. GET_REPORT (command 1), then status (0 = ok) */
    mov     $PSP_CMD, %dx
    mov     $1, %al
    outb    %al, %dx
    inb     %dx, %al
    mov     %al, %bh                /* keep the status for the error line */
    test    %al, %al
    jnz     fail

    /* 3. "cvm-sim-guest report " then the report in hex, then a newline */
    mov     $msg_report, %si
    jmp     puts_then_report

fail:
    mov     $msg_error, %si
    /* print the error prefix, then the status byte in hex */
2:  cs lodsb
    test    %al, %al
    jz      3f
    mov     %al, %bl
    putc_bl
    jmp     2b
3:  mov     %bh, %al
    jmp     hexbyte_then_halt

puts_then_report:
4:  cs lodsb
    test    %al, %al
    jz      5f
    mov     %al, %bl
    putc_bl
    jmp     4b
5:  mov     $PSP_LEN, %dx
    inw     %dx, %ax
    mov     %ax, %cx
    jcxz    7f
6:  mov     $PSP_DATA, %dx
    inb     %dx, %al
    mov     %al, %bh
    hexbyte
    dec     %cx
    jnz     6b
7:  mov     $'\n', %bl
    putc_bl
    jmp     halt

hexbyte_then_halt:
    mov     %al, %bh
    hexbyte
    mov     $'\n', %bl
    putc_bl

    /* 4. halt for good */
halt:
    hlt
    jmp     halt

msg_report:
    .asciz  "cvm-sim-guest report "
msg_error:
    .asciz  "cvm-sim-guest error: PSP status "

/* The fixed REPORT_DATA (64 bytes) the test expects back in the report. */
report_data:
    .ascii  "cvm-launch sim guest: fixed REPORT_DATA for the launcher's test."

/*
 * TDVF metadata ("TDX Virtual Firmware Design Guide" §11), so that the same image also has a TDX
 * launch plan: one BFV section, the whole image at GPA 0xFFFFF000, measured into MRTD
 * (TDH.MEM.PAGE.ADD + TDH.MR.EXTEND). `cvm-launch measure --tee tdx` reads it, and
 * `run --tee sim` puts that MRTD in the TDX-format quotes its simulated PSP socket serves.
 * The descriptor sits 0x100 bytes before the end of the image.
 */
    .org    0xf00
tdvf_descriptor:
    .ascii  "TDVF"
    .long   16 + 32                 /* length: header + one section */
    .long   1                       /* version */
    .long   1                       /* number of sections */
    .long   0                       /* data offset in the image */
    .long   0x1000                  /* raw data size */
    .quad   0xfffff000              /* guest-physical address */
    .quad   0x1000                  /* size in guest memory */
    .long   0                       /* type: BFV */
    .long   1                       /* attributes: MR.EXTEND */

/*
 * The OVMF footer GUID table (read backwards from 32 bytes before the end): entries are
 * data ‖ u16 size ‖ GUID (EFI byte order), the last one is the table header.
 */
    .org    0xfe0 - 40
    .long   0x1000 - 0xf00          /* TDX metadata: descriptor offset from the end */
    .word   22
    .long   0xe47a6535              /* e47a6535-984a-4798-865e-4685a7bf8ec2 */
    .word   0x984a, 0x4798
    .byte   0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2
    .word   40                      /* the whole table */
    .long   0x96b582de              /* 96b582de-1fb2-45f7-baea-a366c55a082d */
    .word   0x1fb2, 0x45f7
    .byte   0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d

/* Reset vector: the last 16 bytes of the image (GPA 0xFFFFFFF0). */
    .org    0xff0
reset:
    jmp     _start
    .org    0x1000
