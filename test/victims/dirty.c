/*
 * dirty: memory that changes between the dumps of a chain (criu pre-dump,
 * then dump --prev-images-dir), so that a restore needs the pages of every
 * level.
 *
 *   dirty READY
 *
 * Holds a 4 MiB region of 1024 pages, page i filled with pattern(gen[i], i)
 * (gen[i] in .bss, starting at 1). Each SIGUSR1 starts a generation g
 * (2, 3, ...): every page i with i % (g + 1) == 0 is rewritten with
 * pattern(g, i); at generation 3 a new 64 KiB mapping (pattern 99) appears.
 * When a generation is done the victim creates READY.gN. On SIGTERM it
 * checks every page against its generation, the new mapping, and that the
 * generation count is what it was.
 */
#include "victim.h"
#include <sys/mman.h>

#define PAGES 1024
#define WORDS_PER_PAGE 512
#define NEW_WORDS (64 * 1024 / 8)

static uint64_t *region, *newmap;
static uint64_t gen[PAGES];
static volatile sig_atomic_t want;
static uint64_t done = 1;

static void on_usr1(int sig)
{
	(void)sig;
	want++;
}

static void fill_page(uint64_t i, uint64_t g)
{
	for (uint64_t w = 0; w < WORDS_PER_PAGE; w++)
		region[i * WORDS_PER_PAGE + w] = pattern(g, i * WORDS_PER_PAGE + w);
	gen[i] = g;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	char path[4096];

	if (argc < 2)
		die("usage: dirty READY");
	victim_init();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction(SIGUSR1): %s", strerror(errno));
	region = mmap(NULL, PAGES * 4096UL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	for (uint64_t i = 0; i < PAGES; i++)
		fill_page(i, 1);
	victim_ready(argv[1]);

	while (!got_term) {
		if (done < (uint64_t)want + 1) {
			uint64_t g = ++done;

			for (uint64_t i = 0; i < PAGES; i++)
				if (i % (g + 1) == 0)
					fill_page(i, g);
			if (g == 3) {
				newmap = mmap(NULL, NEW_WORDS * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
				if (newmap == MAP_FAILED)
					die("mmap: %s", strerror(errno));
				fill(newmap, NEW_WORDS, 99);
			}
			snprintf(path, sizeof(path), "%s.g%llu", argv[1], (unsigned long long)g);
			victim_ready(path);
			continue;
		}
		sleep_ms(10);
	}

	int bad = 0;

	for (uint64_t i = 0; i < PAGES && bad < 10; i++) {
		uint64_t want_gen = 1;

		for (uint64_t g = 2; g <= done; g++)
			if (i % (g + 1) == 0)
				want_gen = g;
		if (gen[i] != want_gen) {
			fail("page %llu: generation %llu, want %llu", (unsigned long long)i,
			     (unsigned long long)gen[i], (unsigned long long)want_gen);
			bad++;
		}
		for (uint64_t w = 0; w < WORDS_PER_PAGE; w++) {
			uint64_t k = i * WORDS_PER_PAGE + w;

			if (region[k] != pattern(want_gen, k)) {
				fail("page %llu (generation %llu) word %llu is %#llx, want %#llx",
				     (unsigned long long)i, (unsigned long long)want_gen, (unsigned long long)w,
				     (unsigned long long)region[k], (unsigned long long)pattern(want_gen, k));
				bad++;
				break;
			}
		}
	}
	if (done >= 3 && !newmap)
		fail("generation 3 has no new mapping");
	if (newmap && check_fill("the mapping of generation 3", newmap, NEW_WORDS, 99) == 0)
		say("new mapping intact");
	say("generations: %llu", (unsigned long long)done);
	victim_finish();
}
