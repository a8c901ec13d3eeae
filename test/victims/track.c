/*
 * track: memory rewritten all the time, for iterative dumps (pre-dump,
 * pre-dump, dump --track-mem): every image of a chain holds a different
 * part of it, and the restore must put each page's last version back.
 *
 *   track READY MIB PERMILLE_PER_SEC
 *
 * Holds MIB MiB of pages; page i holds pattern(gen[i], i) (gen[] in its own
 * mapping). Every 10 ms it rewrites pages so that about PERMILLE/1000 of
 * them per second get the next generation. Each SIGUSR1 makes the next
 * change of the address space, then creates READY.mN (N = 1, 2, 3):
 *   1. maps a new 1 MiB area B (pattern 71) and an area C of 64 KiB
 *      (pattern 72) that will move;
 *   2. unmaps the upper half of B, moves C (mremap to a new, larger
 *      area: the new part gets pattern 73);
 *   3. forks a child that rewrites its own copy of the first 256 pages
 *      with generation 1000 and then waits; on SIGTERM it checks them.
 * On SIGTERM the victim completes the page it was writing, ends the child
 * (which must exit 0), and checks every page, B and C.
 */
#include "victim.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define WPP 512 /* words per page */

static uint64_t *region, *gen, npages;
static uint64_t *areaB, *areaC;
static size_t cwords;
static volatile sig_atomic_t want;
static int done_m;
static pid_t child;

static void on_usr1(int sig)
{
	(void)sig;
	want++;
}

static void write_page(uint64_t i, uint64_t g)
{
	for (uint64_t w = 0; w < WPP; w++)
		region[i * WPP + w] = pattern(g, i * WPP + w);
	gen[i] = g;
}

static void check_pages(uint64_t n, const char *who)
{
	int bad = 0;

	for (uint64_t i = 0; i < n && bad < 10; i++)
		for (uint64_t w = 0; w < WPP; w++)
			if (region[i * WPP + w] != pattern(gen[i], i * WPP + w)) {
				fail("%s: page %llu (generation %llu) word %llu is %#llx", who,
				     (unsigned long long)i, (unsigned long long)gen[i],
				     (unsigned long long)w, (unsigned long long)region[i * WPP + w]);
				bad++;
				break;
			}
}

static void child_main(void)
{
	got_term = 0;
	for (uint64_t i = 0; i < 256 && i < npages; i++)
		write_page(i, 1000 + i);
	while (!got_term)
		sleep_ms(10);
	for (uint64_t i = 0; i < 256 && i < npages; i++)
		if (gen[i] != 1000 + i)
			fail("child: page %llu generation %llu", (unsigned long long)i, (unsigned long long)gen[i]);
	check_pages(npages, "child");
	_exit(victim_failures ? 1 : 0);
}

static void mutate(const char *ready)
{
	char p[4096];

	done_m++;
	switch (done_m) {
	case 1:
		areaB = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		areaC = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (areaB == MAP_FAILED || areaC == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		fill(areaB, (1 << 20) / 8, 71);
		fill(areaC, (64 << 10) / 8, 72);
		cwords = (64 << 10) / 8;
		break;
	case 2: {
		uint64_t *nc;

		if (munmap((char *)areaB + (512 << 10), 512 << 10))
			die("munmap: %s", strerror(errno));
		nc = mremap(areaC, 64 << 10, 256 << 10, MREMAP_MAYMOVE);
		if (nc == MAP_FAILED)
			die("mremap: %s", strerror(errno));
		areaC = nc;
		fill(areaC + (64 << 10) / 8, (192 << 10) / 8, 73);
		cwords = (256 << 10) / 8;
		break;
	}
	case 3:
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child == 0)
			child_main();
		sleep_ms(50);
		break;
	}
	snprintf(p, sizeof(p), "%s.m%d", ready, done_m);
	victim_ready(p);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	uint64_t per_tick, x = 88172645463325252ULL;

	if (argc < 4)
		die("usage: track READY MIB PERMILLE");
	victim_init();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	npages = strtoull(argv[2], NULL, 10) * 256;
	region = mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gen = mmap(NULL, npages * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED || gen == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	for (uint64_t i = 0; i < npages; i++)
		write_page(i, 1);
	/* PERMILLE per second over 100 ticks a second. */
	per_tick = npages * strtoull(argv[3], NULL, 10) / 1000 / 100;
	if (per_tick == 0)
		per_tick = 1;
	victim_ready(argv[1]);
	while (!got_term) {
		for (uint64_t k = 0; k < per_tick && !got_term; k++) {
			uint64_t i;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			i = x % npages;
			write_page(i, gen[i] + 1);
		}
		while (want > 0 && !got_term) {
			want--;
			mutate(argv[1]);
		}
		sleep_ms(10);
	}
	if (child > 0) {
		int st;

		kill(child, SIGTERM);
		if (waitpid(child, &st, 0) != child)
			fail("waitpid child: %s", strerror(errno));
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail("child ended with status %#x", st);
	}
	check_pages(npages, "parent");
	if (areaB && check_fill("area B (lower half)", areaB, (512 << 10) / 8, 71) == 0)
		say("area B intact");
	if (areaC && check_fill("area C", areaC, (64 << 10) / 8, 72) == 0 &&
	    (cwords == (64 << 10) / 8 || check_fill("area C, grown", areaC + (64 << 10) / 8, (192 << 10) / 8, 73) == 0))
		say("area C intact");
	say("changes: %d", done_m);
	victim_finish();
}
