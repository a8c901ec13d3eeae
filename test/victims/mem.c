/*
 * mem: memory of every kind survives a dump and restore.
 *
 *   mem READY [MIB]
 *
 * - MIB (default 256) MiB of private anonymous memory, every word patterned;
 * - a 64 MiB sparse anonymous region: every 16th page written, the others
 *   never touched and so must still read as zero (holes stay holes);
 * - a read-only and a PROT_NONE region holding data;
 * - heap: 200 small malloc blocks (brk heap) and one 8 MiB block (mmap'ed by
 *   malloc), patterned; malloc must still work after the restore;
 * - a 64 KiB array on the main stack;
 * - .data (an initialised global array, rewritten at run time, so its pages
 *   are private copies of the executable's pages) and .bss;
 * - a 64 KiB region locked in memory (mlock): still locked (VmLck 64 kB);
 * - transparent huge pages disabled for the process (PR_SET_THP_DISABLE);
 * - registered for private expedited membarrier: the barrier still works
 *   (EPERM without the registration).
 */
#include "victim.h"
#include <sys/mman.h>
#include <linux/membarrier.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define PAGE 4096UL

static uint64_t data_arr[4096] = { [0 ... 4095] = 0x5a5a5a5a12345678ULL };
static uint64_t bss_arr[64 * 1024];
static const char *data_str = "a string in .rodata";

#define NSMALL 200
#define SMALL_WORDS 125 /* 1000 bytes */
#define BIG_WORDS (1UL << 20) /* 8 MiB */
#define STACK_WORDS 8192 /* 64 KiB */
#define SPARSE_SIZE (64UL << 20)

static uint64_t *big_anon, *sparse, *ro, *none, *locked;
static size_t big_words;
static uint64_t *small[NSMALL], *big_heap;

static __attribute__((noinline)) void check_sparse(void)
{
	for (size_t pg = 0; pg < SPARSE_SIZE / PAGE; pg++) {
		const uint64_t *p = sparse + pg * (PAGE / 8);

		if (pg % 16 == 0) {
			char what[64];

			snprintf(what, sizeof(what), "sparse page %zu", pg);
			if (check_fill(what, p, PAGE / 8, 100 + pg % 7))
				return;
			continue;
		}
		for (size_t i = 0; i < PAGE / 8; i++) {
			if (p[i]) {
				fail("sparse page %zu (never written) word %zu is %#llx, want 0",
				     pg, i, (unsigned long long)p[i]);
				return;
			}
		}
	}
}

#define LOCKED (64 * 1024UL)

/* check_locked: the locked region is the process's only locked memory. */
static void check_locked(void)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	char *l;

	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		fail("read /proc/self/status: %s", strerror(errno));
		return;
	}
	buf[n] = 0;
	l = strstr(buf, "VmLck:");
	if (!l || strtoul(l + 6, NULL, 10) != LOCKED / 1024)
		fail("VmLck is %.20s, want %lu kB: the mlock'ed region is not locked any more", l ? l + 6 : "?", LOCKED / 1024);
}

static __attribute__((noinline)) void check_all(uint64_t *stack_arr)
{
	char what[64];

	check_fill("anonymous mmap region", big_anon, big_words, 1);
	check_sparse();
	check_fill("read-only region", ro, PAGE / 8 * 16, 2);
	if (mprotect(none, PAGE * 16, PROT_READ))
		fail("mprotect(PROT_NONE region, PROT_READ): %s", strerror(errno));
	else
		check_fill("PROT_NONE region", none, PAGE / 8 * 16, 3);
	for (int i = 0; i < NSMALL; i++) {
		snprintf(what, sizeof(what), "small malloc block %d", i);
		if (check_fill(what, small[i], SMALL_WORDS, 1000 + i))
			break;
	}
	check_fill("8 MiB malloc block", big_heap, BIG_WORDS, 4);
	check_fill("stack array", stack_arr, STACK_WORDS, 5);
	check_fill(".data array", data_arr, 4096, 6);
	check_fill(".bss array", bss_arr, 64 * 1024, 7);
	check_fill("locked region", locked, LOCKED / 8, 8);
	check_locked();
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0))
		fail("membarrier(PRIVATE_EXPEDITED): %s: the registration is lost", strerror(errno));
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1)
		fail("PR_GET_THP_DISABLE is %d, want 1", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	if (strcmp(data_str, "a string in .rodata"))
		fail(".rodata string changed");
}

int main(int argc, char **argv)
{
	uint64_t stack_arr[STACK_WORDS];
	size_t mib = 256;

	if (argc < 2)
		die("usage: mem READY [MIB]");
	if (argc > 2)
		mib = strtoul(argv[2], NULL, 0);
	victim_init();

	big_words = (mib << 20) / 8;
	big_anon = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sparse = mmap(NULL, SPARSE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro = mmap(NULL, PAGE * 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	none = mmap(NULL, PAGE * 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	locked = mmap(NULL, LOCKED, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (big_anon == MAP_FAILED || sparse == MAP_FAILED || ro == MAP_FAILED || none == MAP_FAILED || locked == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	fill(locked, LOCKED / 8, 8);
	if (mlock(locked, LOCKED))
		die("mlock: %s", strerror(errno));
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		die("PR_SET_THP_DISABLE: %s", strerror(errno));
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0))
		die("membarrier(REGISTER_PRIVATE_EXPEDITED): %s", strerror(errno));

	fill(big_anon, big_words, 1);
	for (size_t pg = 0; pg < SPARSE_SIZE / PAGE; pg += 16)
		fill(sparse + pg * (PAGE / 8), PAGE / 8, 100 + pg % 7);
	fill(ro, PAGE / 8 * 16, 2);
	fill(none, PAGE / 8 * 16, 3);
	if (mprotect(ro, PAGE * 16, PROT_READ) || mprotect(none, PAGE * 16, PROT_NONE))
		die("mprotect: %s", strerror(errno));

	for (int i = 0; i < NSMALL; i++) {
		small[i] = malloc(SMALL_WORDS * 8);
		if (!small[i])
			die("malloc");
		fill(small[i], SMALL_WORDS, 1000 + i);
	}
	big_heap = malloc(BIG_WORDS * 8);
	if (!big_heap)
		die("malloc 8 MiB");
	fill(big_heap, BIG_WORDS, 4);
	fill(stack_arr, STACK_WORDS, 5);
	fill(data_arr, 4096, 6);
	fill(bss_arr, 64 * 1024, 7);

	say("mem: %zu MiB anonymous at %p, sparse at %p, heap block at %p, stack array at %p",
	    mib, (void *)big_anon, (void *)sparse, (void *)big_heap, (void *)stack_arr);
	victim_ready(argv[1]);
	victim_wait();

	check_all(stack_arr);

	/* The allocator must still work: brk growth and a fresh mmap'ed block. */
	for (int i = 0; i < 100; i++) {
		uint64_t *p = malloc(4000);

		if (!p) {
			fail("malloc(4000) after restore returned NULL");
			break;
		}
		fill(p, 500, 9);
		if (check_fill("new malloc block", p, 500, 9))
			break;
	}
	uint64_t *p = malloc(16 << 20);
	if (!p)
		fail("malloc(16 MiB) after restore returned NULL");
	else {
		fill(p, 2 << 20, 10);
		check_fill("new 16 MiB malloc block", p, 2 << 20, 10);
		free(p);
	}
	victim_finish();
}
