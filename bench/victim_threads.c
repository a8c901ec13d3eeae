//go:build ignore

/*
 * (The build line keeps the go tool from treating this file as cgo source;
 * bench embeds it and compiles it with gcc -pthread at run time.)
 *
 * Many-threads victim of the stasis benchmark:
 *
 *   victim_threads N [STACK]     N worker threads, STACK bytes of stack each
 *                                (default 64 KiB, raised to the libc minimum)
 *
 * Even workers block in FUTEX_WAIT (no timeout) on one shared word, odd
 * ones in sigtimedwait (1 hour timeout) for SIGRTMIN+1 sent to them alone.
 * Each keeps a 512-byte canary on its own stack, a pattern of its index,
 * and remembers its tid. Every signal is blocked in every thread; the
 * main thread waits in a 10 ms sigtimedwait loop for SIGUSR1/SIGUSR2:
 *
 *   SIGUSR1  create ./ack-0 (proof that it runs)
 *   SIGUSR2  check: /proc/self/task has N+1 entries; bump the round word,
 *            FUTEX_WAKE every futex worker and tgkill each sigtimedwait
 *            worker; each worker checks its tid and canary and answers
 *            with the round; when all N answered (60 s at most) create
 *            ./ok-0, else ./bad-0 with the reason in it.
 *
 * ./ready-0 ("PID") is created once every worker is asleep (state S in
 * /proc/self/task/TID/stat); ./error-0 with the reason if setup fails
 * (e.g. pthread_create: EAGAIN when threads-max or RLIMIT_NPROC is low).
 * Files are created and closed at once: at dump time the victim holds no
 * fd but stdin/stdout/stderr (/dev/null).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CANARY_WORDS 64

struct worker {
	pthread_t pt;
	int idx;
	volatile pid_t tid;
	volatile uint64_t *canary; /* on the worker's own stack */
	volatile int answered;     /* last round it answered */
	volatile int bad;          /* 1 wrong tid, 2 wrong canary */
};

static struct worker *w;
static int n;
static int round_word; /* futex word; workers wait while it is unchanged */
static int started;

static uint64_t pattern(uint64_t idx, uint64_t j)
{
	return ((idx << 32 | j) * 0x9E3779B97F4A7C15ull) ^ 0x5354415349534221ull;
}

static void report(const char *name, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int fd, len;

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

static void answer(struct worker *me, volatile uint64_t *canary, int round)
{
	if (syscall(SYS_gettid) != me->tid)
		me->bad = 1;
	for (int j = 0; j < CANARY_WORDS; j++)
		if (canary[j] != pattern(me->idx, j))
			me->bad = 2;
	__atomic_store_n(&me->answered, round, __ATOMIC_RELEASE);
}

static void setup(struct worker *me, volatile uint64_t *canary)
{
	for (int j = 0; j < CANARY_WORDS; j++)
		canary[j] = pattern(me->idx, j);
	me->canary = canary;
	me->tid = syscall(SYS_gettid);
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
}

static void *futex_worker(void *arg)
{
	struct worker *me = arg;
	volatile uint64_t canary[CANARY_WORDS];
	int seen = 0;

	setup(me, canary);
	for (;;) {
		syscall(SYS_futex, &round_word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
		int r = __atomic_load_n(&round_word, __ATOMIC_ACQUIRE);
		if (r == seen)
			continue; /* spurious wake-up or EINTR */
		seen = r;
		answer(me, canary, r);
	}
	return NULL;
}

static void *sig_worker(void *arg)
{
	struct worker *me = arg;
	volatile uint64_t canary[CANARY_WORDS];
	sigset_t set;

	setup(me, canary);
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN + 1);
	for (;;) {
		struct timespec ts = {3600, 0};
		if (sigtimedwait(&set, NULL, &ts) != SIGRTMIN + 1)
			continue;
		answer(me, canary, __atomic_load_n(&round_word, __ATOMIC_ACQUIRE));
	}
	return NULL;
}

static int task_count(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int k = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			k++;
	closedir(d);
	return k;
}

/* asleep: the worker's task is in state S (blocked in its wait). */
static int asleep(pid_t tid)
{
	char path[64], buf[512], *p;
	int fd, len;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return 0;
	buf[len] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void check(void)
{
	int tasks = task_count(), r, missing = 0, bad = 0, first = -1;

	if (tasks != n + 1) {
		report("bad-0", "/proc/self/task has %d entries, want %d", tasks, n + 1);
		return;
	}
	r = __atomic_add_fetch(&round_word, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &round_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
	for (int i = 1; i < n; i += 2)
		syscall(SYS_tgkill, getpid(), w[i].tid, SIGRTMIN + 1);
	for (int waited = 0;; waited++) {
		missing = 0;
		first = -1;
		for (int i = 0; i < n; i++)
			if (__atomic_load_n(&w[i].answered, __ATOMIC_ACQUIRE) != r && !missing++)
				first = i;
		if (!missing || waited >= 60000)
			break;
		msleep(1);
	}
	if (missing) {
		report("bad-0", "%d of %d workers did not wake up (first: #%d, tid %d)", missing, n, first, w[first].tid);
		return;
	}
	for (int i = 0; i < n; i++)
		if (w[i].bad && !bad++)
			first = i;
	if (bad)
		report("bad-0", "%d of %d workers found a wrong tid or stack canary (first: #%d, tid %d, %s)",
		       bad, n, first, w[first].tid, w[first].bad == 1 ? "tid" : "canary");
	else
		report("ok-0", "%d workers woke up with their tid and stack canary\n", n);
}

int main(int argc, char **argv)
{
	size_t stack = 64 << 10;
	long min = sysconf(_SC_THREAD_STACK_MIN);
	pthread_attr_t attr;
	sigset_t all, set;
	int err;

	n = argc > 1 ? atoi(argv[1]) : 1000;
	if (argc > 2)
		stack = strtoull(argv[2], NULL, 0);
	if (min > 0 && stack < (size_t)min)
		stack = min;
	if (n < 1) {
		report("error-0", "bad thread count %s", argc > 1 ? argv[1] : "");
		return 2;
	}
	/* Every signal blocked everywhere: SIGUSR1/2 stay pending for the main
	 * thread's wait, SIGRTMIN+1 for the worker it was sent to. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	w = calloc(n, sizeof(*w));
	if (!w) {
		report("error-0", "calloc: %s", strerror(errno));
		return 2;
	}
	pthread_attr_init(&attr);
	if ((err = pthread_attr_setstacksize(&attr, stack))) {
		report("error-0", "pthread_attr_setstacksize(%zu): %s", stack, strerror(err));
		return 2;
	}
	for (int i = 0; i < n; i++) {
		w[i].idx = i;
		err = pthread_create(&w[i].pt, &attr, i % 2 ? sig_worker : futex_worker, &w[i]);
		if (err) {
			report("error-0", "pthread_create of worker %d of %d: %s", i + 1, n, strerror(err));
			return 2;
		}
	}
	while (__atomic_load_n(&started, __ATOMIC_ACQUIRE) < n)
		msleep(1);
	for (int i = 0; i < n; i++)
		while (!asleep(w[i].tid))
			msleep(1);
	report("ready-0", "%d", getpid());

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		struct timespec ts = {0, 10000000};
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGUSR1)
			report("ack-0", "");
		if (sig == SIGUSR2)
			check();
	}
}
