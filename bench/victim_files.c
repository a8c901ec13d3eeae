//go:build ignore

/*
 * Victim of the issue table's open-files row: `victim_files N` holds N
 * open file descriptions of /dev/null. One process may hold only its
 * RLIMIT_NOFILE hard limit (raising it needs CAP_SYS_RESOURCE, which root
 * lacks on the development VMs), so the files are spread over as few
 * processes as that allows: the root and children it forks, each holding
 * its share. Once all hold theirs, ./ready appears; then every process
 * waits for signals in sigtimedwait.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static void hold(long n)
{
	for (long i = 0; i < n; i++)
		if (open("/dev/null", O_RDONLY) < 0) {
			perror("open");
			exit(1);
		}
}

static void wait_forever(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		struct timespec ts = { 1, 0 };
		sigtimedwait(&set, NULL, &ts);
	}
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 0) : 1000;
	struct rlimit rl;
	long per, procs;
	char name[32];

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_max < 128) {
		fprintf(stderr, "RLIMIT_NOFILE too low\n");
		return 1;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl)) {
		perror("setrlimit");
		return 1;
	}
	per = rl.rlim_max - 64;
	procs = (n + per - 1) / per;
	for (long k = 1; k < procs; k++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			hold(k == procs - 1 ? n - per * (procs - 1) : per);
			snprintf(name, sizeof(name), "held-%ld", k);
			close(creat(name, 0644));
			wait_forever();
		}
	}
	hold(procs > 1 ? per : n);
	for (long k = 1; k < procs; k++) {
		snprintf(name, sizeof(name), "held-%ld", k);
		while (access(name, F_OK))
			usleep(1000);
	}
	close(creat("ready", 0644));
	wait_forever();
}
