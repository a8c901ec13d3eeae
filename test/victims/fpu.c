/*
 * fpu: values held only in registers survive a dump and restore.
 *
 *   fpu READY MODE        MODE: sse | avx | avx512
 *
 * One inline-asm block loads known values into xmm0-xmm6 (SSE, legacy
 * encoding), ymm8-ymm14 (AVX, all 256 bits; mode avx and up), zmm16 and the
 * opmask k1 (mode avx512) and r12-r15, creates READY with raw syscalls
 * (which preserve all of them), then spins: every iteration compares each
 * register with its expected value in memory and leaves the loop on the first
 * difference. Nothing in the loop is a function call, so the values live only
 * in registers for the whole run, dump and restore included. SIGTERM sets a
 * flag that the loop polls; the kernel saves and restores the whole register
 * state around the handler, so the handler itself cannot disturb them.
 */
#include "victim.h"
#include <stddef.h>

struct ctx {
	unsigned char x[8][16]; /* 0: expected xmm0..xmm6 */
	unsigned char y[8][32]; /* 128: expected ymm8..ymm14 */
	unsigned char z[64];    /* 384: expected zmm16 */
	uint64_t g[4];          /* 448: expected r12..r15 */
	uint64_t k1;            /* 480: expected k1 (16 bits used) */
	uint64_t iters;         /* 488 */
	int32_t term;           /* 496: set by the SIGTERM handler */
	int32_t mode;           /* 500: 0 sse, 1 avx, 2 avx512 */
	const char *ready;      /* 504 */
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct ctx, y) == 128, "layout");
_Static_assert(offsetof(struct ctx, z) == 384, "layout");
_Static_assert(offsetof(struct ctx, g) == 448, "layout");
_Static_assert(offsetof(struct ctx, k1) == 480, "layout");
_Static_assert(offsetof(struct ctx, iters) == 488, "layout");
_Static_assert(offsetof(struct ctx, term) == 496, "layout");
_Static_assert(offsetof(struct ctx, mode) == 500, "layout");
_Static_assert(offsetof(struct ctx, ready) == 504, "layout");

static struct ctx c;

static void on_fpu_term(int sig)
{
	(void)sig;
	c.term = 1;
}

static const char *const regname[] = {
	"none", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
	"ymm8", "ymm9", "ymm10", "ymm11", "ymm12", "ymm13", "ymm14",
	"zmm16", "k1", "r12", "r13", "r14", "r15", "ready file (open failed)",
};

#define SSE_CHECK(n, off)                                  \
	"mov $" #n ", %%edx\n\t"                           \
	"movdqa %%xmm" #off ", %%xmm7\n\t"                 \
	"pcmpeqb " #off "*16(%[c]), %%xmm7\n\t"            \
	"pmovmskb %%xmm7, %%eax\n\t"                       \
	"cmp $0xffff, %%eax\n\t"                           \
	"jne 9f\n\t"

#define AVX_CHECK(n, r)                                    \
	"mov $" #n ", %%edx\n\t"                           \
	"vxorps 128+(" #r "-8)*32(%[c]), %%ymm" #r ", %%ymm15\n\t" \
	"vptest %%ymm15, %%ymm15\n\t"                      \
	"jnz 9f\n\t"

#define GPR_CHECK(n, r, i)                                 \
	"mov $" #n ", %%edx\n\t"                           \
	"cmp 448+" #i "*8(%[c]), %%" #r "\n\t"             \
	"jne 9f\n\t"

static int spin(void)
{
	int failed;

	__asm__ volatile(
		/* load */
		"movdqa 0*16(%[c]), %%xmm0\n\t"
		"movdqa 1*16(%[c]), %%xmm1\n\t"
		"movdqa 2*16(%[c]), %%xmm2\n\t"
		"movdqa 3*16(%[c]), %%xmm3\n\t"
		"movdqa 4*16(%[c]), %%xmm4\n\t"
		"movdqa 5*16(%[c]), %%xmm5\n\t"
		"movdqa 6*16(%[c]), %%xmm6\n\t"
		"cmpl $1, 500(%[c])\n\t"
		"jl 1f\n\t"
		"vmovdqu 128+0*32(%[c]), %%ymm8\n\t"
		"vmovdqu 128+1*32(%[c]), %%ymm9\n\t"
		"vmovdqu 128+2*32(%[c]), %%ymm10\n\t"
		"vmovdqu 128+3*32(%[c]), %%ymm11\n\t"
		"vmovdqu 128+4*32(%[c]), %%ymm12\n\t"
		"vmovdqu 128+5*32(%[c]), %%ymm13\n\t"
		"vmovdqu 128+6*32(%[c]), %%ymm14\n\t"
		"cmpl $2, 500(%[c])\n\t"
		"jl 1f\n\t"
		"vmovdqu64 384(%[c]), %%zmm16\n\t"
		"kmovw 480(%[c]), %%k1\n\t"
		"1:\n\t"
		"mov 448+0*8(%[c]), %%r12\n\t"
		"mov 448+1*8(%[c]), %%r13\n\t"
		"mov 448+2*8(%[c]), %%r14\n\t"
		"mov 448+3*8(%[c]), %%r15\n\t"
		/* ready: open(path, O_WRONLY|O_CREAT|O_CLOEXEC, 0644); close(fd) */
		"mov $2, %%eax\n\t"
		"mov 504(%[c]), %%rdi\n\t"
		"mov $0x80041, %%esi\n\t"
		"mov $0644, %%edx\n\t"
		"syscall\n\t"
		"mov $21, %%edx\n\t"
		"test %%rax, %%rax\n\t"
		"js 9f\n\t"
		"mov %%rax, %%rdi\n\t"
		"mov $3, %%eax\n\t"
		"syscall\n\t"
		/* spin */
		"2:\n\t"
		SSE_CHECK(1, 0) SSE_CHECK(2, 1) SSE_CHECK(3, 2) SSE_CHECK(4, 3)
		SSE_CHECK(5, 4) SSE_CHECK(6, 5) SSE_CHECK(7, 6)
		GPR_CHECK(17, r12, 0) GPR_CHECK(18, r13, 1)
		GPR_CHECK(19, r14, 2) GPR_CHECK(20, r15, 3)
		"cmpl $1, 500(%[c])\n\t"
		"jl 3f\n\t"
		AVX_CHECK(8, 8) AVX_CHECK(9, 9) AVX_CHECK(10, 10) AVX_CHECK(11, 11)
		AVX_CHECK(12, 12) AVX_CHECK(13, 13) AVX_CHECK(14, 14)
		"cmpl $2, 500(%[c])\n\t"
		"jl 3f\n\t"
		"mov $15, %%edx\n\t"
		"vpxorq 384(%[c]), %%zmm16, %%zmm17\n\t"
		"vptestmq %%zmm17, %%zmm17, %%k2\n\t"
		"kortestw %%k2, %%k2\n\t"
		"jnz 9f\n\t"
		"mov $16, %%edx\n\t"
		"kmovw %%k1, %%eax\n\t"
		"cmpw 480(%[c]), %%ax\n\t"
		"jne 9f\n\t"
		"3:\n\t"
		"incq 488(%[c])\n\t"
		"cmpl $0, 496(%[c])\n\t"
		"je 2b\n\t"
		"xor %%edx, %%edx\n\t"
		"9:\n\t"
		"mov %%edx, %[failed]\n\t"
		: [failed] "=m"(failed)
		: [c] "b"(&c)
		: "rax", "rcx", "rdx", "rsi", "rdi", "r11", "r12", "r13", "r14", "r15",
		  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
		  "memory", "cc");
	/* zmm16/17 and k1/k2 are not named above: gcc refuses them without
	 * -mavx512f, and compiler-generated code never uses them here. */
	return failed;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	if (argc < 3)
		die("usage: fpu READY sse|avx|avx512");
	victim_init();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fpu_term;
	if (sigaction(SIGTERM, &sa, NULL))
		die("sigaction: %s", strerror(errno));

	if (!strcmp(argv[2], "sse"))
		c.mode = 0;
	else if (!strcmp(argv[2], "avx"))
		c.mode = 1;
	else if (!strcmp(argv[2], "avx512"))
		c.mode = 2;
	else
		die("unknown mode %s", argv[2]);
	__builtin_cpu_init();
	if (c.mode >= 1 && !__builtin_cpu_supports("avx"))
		die("mode %s: this CPU has no AVX", argv[2]);
	if (c.mode >= 2 && !__builtin_cpu_supports("avx512f"))
		die("mode %s: this CPU has no AVX-512F", argv[2]);

	/* Distinct, non-trivial bytes in every lane of every register. */
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 16; j++)
			c.x[i][j] = (unsigned char)(0x11 * (i + 1) + 7 * j + 1);
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 32; j++)
			c.y[i][j] = (unsigned char)(0x23 * (i + 1) + 13 * j + 3);
	for (int j = 0; j < 64; j++)
		c.z[j] = (unsigned char)(0xa5 ^ (j * 29));
	for (int i = 0; i < 4; i++)
		c.g[i] = pattern(42, i);
	c.k1 = 0xc3a5;
	c.ready = argv[1];

	int failed = spin();
	if (failed)
		fail("register %s changed after %llu iterations (mode %s)",
		     regname[failed], (unsigned long long)c.iters, argv[2]);
	else
		say("fpu: %llu iterations, mode %s, registers intact", (unsigned long long)c.iters, argv[2]);
	victim_finish();
}
