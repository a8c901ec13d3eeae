//go:build ignore

/*
 * (The build line keeps the go tool from treating this file as cgo source;
 * bench embeds it and compiles it with gcc at run time.)
 *
 * Victim of the stasis benchmark: `victim SIZE` (bytes, 0 for the tiny case).
 *
 * It maps SIZE bytes of private anonymous memory, fills every 8-byte word
 * with a pattern derived from its index, creates ./ready and then sleeps in
 * a loop holding no fd. Signals drive it from outside, so that the bench
 * can tell a restored copy actually runs and has the right memory:
 *   SIGUSR1  create ./ack (proof that it runs)
 *   SIGUSR2  check the whole pattern, create ./ok or ./bad
 * The files are created and closed at once: at dump time it holds no fd
 * but stdin/stdout/stderr, which the bench points at /dev/null.
 *
 * It sleeps in sigtimedwait with both signals blocked rather than in
 * nanosleep with handlers: a restored task re-executes the interrupted
 * sleep from its syscall instruction, so a handler could run just before
 * the sleep starts again and the wake-up would be lost for a whole period.
 * A blocked signal stays pending until the wait takes it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t pattern(uint64_t i)
{
	return (i * 0x9E3779B97F4A7C15ull) ^ 0x5354415349534221ull;
}

static void create(const char *name)
{
	int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	uint64_t size = argc > 1 ? strtoull(argv[1], NULL, 0) : 0;
	uint64_t words = size / 8;
	uint64_t *mem = NULL;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);

	if (words) {
		/* MAP_POPULATE only to start faster: the first-touch faults of
		 * this VM are slow, the pages end up present either way. */
		mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (mem == MAP_FAILED)
			return 2;
		for (uint64_t i = 0; i < words; i++)
			mem[i] = pattern(i);
	}
	create("ready");
	for (;;) {
		struct timespec ts = {0, 10000000};
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGUSR1)
			create("ack");
		if (sig == SIGUSR2) {
			uint64_t i;
			for (i = 0; i < words && mem[i] == pattern(i); i++)
				;
			create(i == words ? "ok" : "bad");
		}
	}
}
