//go:build ignore

/*
 * Victim of the issue table's open-files row: `victim_files N` opens
 * /dev/null N times (N open file descriptions, fds 3..N+2), creates
 * ./ready and waits for signals in sigtimedwait, holding them.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 0) : 1000;
	struct rlimit rl = { n + 64, n + 64 };
	sigset_t set;

	if (setrlimit(RLIMIT_NOFILE, &rl)) {
		perror("setrlimit");
		return 1;
	}
	for (long i = 0; i < n; i++)
		if (open("/dev/null", O_RDONLY) < 0) {
			perror("open");
			return 1;
		}
	close(creat("ready", 0644));
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		struct timespec ts = { 1, 0 };
		sigtimedwait(&set, NULL, &ts);
	}
}
