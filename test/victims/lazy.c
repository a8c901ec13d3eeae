/*
 * lazy: a restored process runs before its memory has arrived (restore
 * --lazy-pages).
 *
 *   lazy READY MIB
 *
 * MIB MiB of private anonymous memory, every word patterned. The victim
 * sleeps 10 ms at a time; the first time it wakes in another pid namespace
 * than the one it started in (a copy restored with --pidns), or on
 * SIGUSR1, it answers at once, before touching its memory: "answer: R of
 * N pages resident at SEC.NSEC" (mincore, which faults nothing in; the
 * wall clock, for the time to first answer). Then it reads every page and
 * prints "verified N pages" (or FAIL lines). On SIGTERM it checks every
 * page again.
 */
#include "victim.h"
#include <sys/mman.h>

#define PAGE 4096UL

static uint64_t *area;
static size_t npages;
static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

static inline uint64_t lpat(size_t pg, size_t w)
{
	return (pg * 0x9E3779B97F4A7C15ULL) ^ (w * 0x100000001B3ULL) ^ 0x6c617a79ULL;
}

static void check_all(void)
{
	size_t bad = 0;

	for (size_t pg = 0; pg < npages; pg++) {
		const uint64_t *p = area + pg * (PAGE / 8);

		for (size_t w = 0; w < PAGE / 8; w++) {
			if (p[w] != lpat(pg, w)) {
				if (bad++ < 5)
					fail("page %zu word %zu is %#llx, want %#llx", pg, w,
					     (unsigned long long)p[w], (unsigned long long)lpat(pg, w));
				break;
			}
		}
	}
	if (bad)
		fail("%zu of %zu pages differ", bad, npages);
	else
		say("verified %zu pages", npages);
}

static void pidns(char *buf, size_t n)
{
	ssize_t l = readlink("/proc/self/ns/pid", buf, n - 1);

	buf[l < 0 ? 0 : l] = 0;
}

static void answer(void)
{
	static unsigned char vec[(4096UL << 20) / PAGE];
	struct timespec ts;
	size_t res = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (mincore(area, npages * PAGE, vec))
		fail("mincore: %s", strerror(errno));
	for (size_t i = 0; i < npages; i++)
		res += vec[i] & 1;
	say("answer: %zu of %zu pages resident at %ld.%09ld", res, npages, (long)ts.tv_sec, ts.tv_nsec);
}

int main(int argc, char **argv)
{
	char ns0[64], ns[64];
	struct sigaction sa;
	int answered = 0;

	if (argc < 3)
		die("usage: lazy READY MIB");
	victim_init();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction(SIGUSR1): %s", strerror(errno));
	npages = strtoul(argv[2], NULL, 10) * (1UL << 20) / PAGE;
	if (!npages || npages > (4096UL << 20) / PAGE)
		die("bad size %s", argv[2]);
	area = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	for (size_t pg = 0; pg < npages; pg++)
		for (size_t w = 0; w < PAGE / 8; w++)
			area[pg * (PAGE / 8) + w] = lpat(pg, w);
	pidns(ns0, sizeof(ns0));
	victim_ready(argv[1]);
	while (!got_term) {
		sleep_ms(10);
		if (answered)
			continue;
		pidns(ns, sizeof(ns));
		if (got_usr1 || strcmp(ns, ns0)) {
			answer();
			check_all();
			answered = 1;
		}
	}
	check_all();
	victim_finish();
}
