/*
 * counter: a plain worker whose progress the harness can watch.
 *
 *   counter READY STATUS_FILE
 *
 * Holds 8 MiB of patterned heap and a counter in .bss. Every 10 ms it
 * increments the counter and pwrite()s it, as a fixed-width decimal line, at
 * offset 0 of STATUS_FILE (opened once, O_RDWR: the file keeps its size, so
 * a restore never finds it changed). The harness reads the file to see the
 * process run; on SIGTERM the victim checks its memory, that the file holds
 * its current counter, and that the counter never went back.
 */
#include "victim.h"

#define HEAP_WORDS (1UL << 20)

static uint64_t counter;
static uint64_t *heap;
static int status_fd = -1;

static int write_status(void)
{
	char line[32];

	snprintf(line, sizeof(line), "%20llu\n", (unsigned long long)counter);
	return pwrite(status_fd, line, 21, 0) == 21 ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: counter READY STATUS_FILE");
	victim_init();
	heap = malloc(HEAP_WORDS * 8);
	if (!heap)
		die("malloc");
	fill(heap, HEAP_WORDS, 77);
	status_fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (status_fd < 0 || write_status())
		die("status file %s: %s", argv[2], strerror(errno));
	victim_ready(argv[1]);

	uint64_t seen = 0;
	while (!got_term) {
		if (counter < seen)
			fail("counter went back from %llu to %llu", (unsigned long long)seen, (unsigned long long)counter);
		seen = ++counter;
		if (write_status())
			fail("write status: %s", strerror(errno));
		sleep_ms(10);
	}

	check_fill("8 MiB heap block", heap, HEAP_WORDS, 77);
	char line[32] = "";
	if (pread(status_fd, line, 21, 0) != 21 || strtoull(line, NULL, 10) != counter)
		fail("status file holds \"%.20s\", want %llu", line, (unsigned long long)counter);
	say("counter: %llu", (unsigned long long)counter);
	victim_finish();
}
