/*
 * churn: threads or child processes come and go all the time, so that a
 * dump races with clone() and exit().
 *
 *   churn READY STATUS_FILE threads|forks
 *
 * threads: each cycle creates 4 threads and joins them. A thread names
 *          itself, checks its __thread variable and its argument over 2000
 *          steps of work and returns a value derived from its argument,
 *          which the join checks.
 * forks:   each cycle forks 2 children and reaps them. A child checks that
 *          getppid() is the process that forked it and that a 1 MiB region
 *          inherited from it holds its pattern, sleeps 0, 1 or 2 ms (so that
 *          a dump finds live children, zombies or none), and exits 0, or 1
 *          on a mismatch; the parent requires exit status 0.
 *
 * After each cycle the cycle count is pwrite()n, fixed width, at offset 0 of
 * STATUS_FILE (as the counter victim does), so the harness sees progress.
 * On SIGTERM: no cycle failed, the 1 MiB region is intact, and the process is
 * alone again ("Threads: 1", no child left: waitpid says ECHILD).
 */
#include "victim.h"
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define NTH 4
#define REGION_WORDS (1UL << 17)

static uint64_t *region;
static uint64_t cycles;
static int status_fd = -1;
static volatile int failures;
static __thread uint64_t tls_val;

static void *churn_thread(void *arg)
{
	uintptr_t a = (uintptr_t)arg;
	char name[16];
	volatile uint64_t acc = 0;

	tls_val = pattern(a, 5);
	snprintf(name, sizeof(name), "churn-%lu", (unsigned long)(a % NTH));
	prctl(PR_SET_NAME, name);
	for (int i = 0; i < 2000; i++) {
		acc += i ^ a;
		if (tls_val != pattern(a, 5) || (uintptr_t)arg != a) {
			__atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
			fail("thread %lu: its __thread variable or argument changed", (unsigned long)a);
			break;
		}
	}
	(void)acc;
	return (void *)(a * 3 + 1);
}

static void cycle_threads(void)
{
	pthread_t t[NTH];
	uintptr_t base = cycles * NTH;

	for (int i = 0; i < NTH; i++) {
		int e = pthread_create(&t[i], NULL, churn_thread, (void *)(base + i));
		if (e) {
			fail("pthread_create: %s", strerror(e));
			failures++;
			t[i] = 0;
		}
	}
	for (int i = 0; i < NTH; i++) {
		void *ret;
		if (!t[i])
			continue;
		int e = pthread_join(t[i], &ret);
		if (e) {
			fail("pthread_join: %s", strerror(e));
			failures++;
		} else if (ret != (void *)((base + i) * 3 + 1)) {
			fail("thread %lu returned %p", (unsigned long)(base + i), ret);
			failures++;
		}
	}
}

static void cycle_forks(void)
{
	pid_t kids[2];
	pid_t me = getpid();

	for (int i = 0; i < 2; i++) {
		kids[i] = fork();
		if (kids[i] < 0) {
			fail("fork: %s", strerror(errno));
			failures++;
			continue;
		}
		if (kids[i] == 0) {
			int bad = getppid() != me;
			if (bad)
				fail("child %d: getppid() is %d, want %d", getpid(), getppid(), me);
			for (size_t w = 0; w < REGION_WORDS; w += 61)
				if (region[w] != pattern(9, w)) {
					fail("child %d: inherited region word %zu changed", getpid(), w);
					bad = 1;
					break;
				}
			sleep_ms((cycles + i) % 3);
			_exit(bad);
		}
	}
	for (int i = 0; i < 2; i++) {
		int st;
		if (kids[i] <= 0)
			continue;
		pid_t r;
		while ((r = waitpid(kids[i], &st, 0)) < 0 && errno == EINTR)
			;
		if (r != kids[i]) {
			fail("waitpid(%d): %s", kids[i], strerror(errno));
			failures++;
		} else if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			fail("child %d ended with status %#x", kids[i], st);
			failures++;
		}
	}
}

static int proc_threads(void)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strstr(buf, "\nThreads:");
	return p ? atoi(p + 9) : -1;
}

int main(int argc, char **argv)
{
	if (argc < 4 || (strcmp(argv[3], "threads") && strcmp(argv[3], "forks")))
		die("usage: churn READY STATUS_FILE threads|forks");
	int forks = !strcmp(argv[3], "forks");
	victim_init();
	region = malloc(REGION_WORDS * 8);
	if (!region)
		die("malloc");
	fill(region, REGION_WORDS, 9);
	status_fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (status_fd < 0)
		die("status file %s: %s", argv[2], strerror(errno));

	while (!got_term) {
		if (forks)
			cycle_forks();
		else
			cycle_threads();
		cycles++;
		char line[32];
		snprintf(line, sizeof(line), "%20llu\n", (unsigned long long)cycles);
		if (pwrite(status_fd, line, 21, 0) != 21)
			fail("write status: %s", strerror(errno));
		if (cycles == 20)
			victim_ready(argv[1]);
	}

	check_fill("1 MiB region", region, REGION_WORDS, 9);
	int n = proc_threads();
	if (n != 1)
		fail("Threads: %d after the last cycle, want 1", n);
	if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
		fail("a child is left after the last cycle");
	say("churn (%s): %llu cycles, %d failure(s)", argv[3], (unsigned long long)cycles, failures);
	victim_finish();
}
