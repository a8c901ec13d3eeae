//go:build ignore

/*
 * (The build line keeps the go tool from treating this file as cgo source;
 * bench embeds it and compiles it with gcc at run time.)
 *
 * Process-tree victim of the stasis benchmark:
 *
 *   victim_tree N SIZE     N processes, SIZE bytes of memory each
 *
 * Process k (0 is the one bench starts) forks processes 2k+1 and 2k+2 when
 * they are below N: a binary tree, 6 levels deep for N = 50. Each process,
 * once it has forked its children, maps SIZE bytes of private anonymous
 * memory of its own and writes a pattern of its index into every 8-byte
 * word: nothing is shared copy-on-write, the tree holds N * SIZE bytes.
 * Then it creates ./ready-k ("PID PPID") and sleeps in a 10 ms
 * sigtimedwait loop with SIGUSR1/SIGUSR2 blocked (see victim.c for why
 * not nanosleep with handlers):
 *
 *   SIGUSR1  create ./ack-k (proof that it runs)
 *   SIGUSR2  check its own whole pattern, create ./ok-k or ./bad-k
 *
 * ./error-k with the reason if its setup fails. bench signals each pid on
 * its own. Files are created and closed at once: at dump time the tree
 * holds no fd but stdin/stdout/stderr (/dev/null).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t pattern(uint64_t k, uint64_t i)
{
	return ((k << 40 | i) * 0x9E3779B97F4A7C15ull) ^ 0x5354415349534221ull;
}

static void report(const char *what, int k, const char *fmt, ...)
{
	char name[64], buf[256];
	va_list ap;
	int fd, len;

	snprintf(name, sizeof(name), "%s-%d", what, k);
	va_start(ap, fmt);
	len = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (len > (int)sizeof(buf) - 1)
		len = sizeof(buf) - 1;
	fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (len > 0 && write(fd, buf, len) < 0)
			;
		close(fd);
	}
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 50;
	uint64_t words = (argc > 2 ? strtoull(argv[2], NULL, 0) : 64 << 20) / 8;
	uint64_t *mem;
	sigset_t set;
	int k = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);

	for (int c = 1; c <= 2; c++) {
		int child = 2 * k + c;
		if (child >= n)
			break;
		pid_t pid = fork();
		if (pid < 0) {
			report("error", child, "fork: %s", strerror(errno));
			continue;
		}
		if (pid == 0) {
			k = child;
			c = 0; /* fork this process' own children */
		}
	}

	mem = mmap(NULL, words * 8 ?: 8, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED) {
		report("error", k, "mmap: %s", strerror(errno));
		return 2;
	}
	for (uint64_t i = 0; i < words; i++)
		mem[i] = pattern(k, i);
	report("ready", k, "%d %d", getpid(), getppid());

	for (;;) {
		struct timespec ts = {0, 10000000};
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGUSR1)
			report("ack", k, "");
		if (sig == SIGUSR2) {
			uint64_t i;
			for (i = 0; i < words && mem[i] == pattern(k, i); i++)
				;
			if (i == words)
				report("ok", k, "");
			else
				report("bad", k, "process %d: word %llu of %llu is wrong",
				       k, (unsigned long long)i, (unsigned long long)words);
		}
	}
}
