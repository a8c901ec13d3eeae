/*
 * sleeper: a task that spends its life blocked in one system call, for the
 * tests of system call injection (internal/ptrace): an injected call, or a
 * tracer that dies, must leave the sleep as it was.
 *
 *   sleeper READY MODE MS
 *
 * MODE is the call it sleeps in, MS its timeout in milliseconds:
 *   nanosleep   clock_nanosleep(CLOCK_MONOTONIC, relative MS)
 *   read        read() of fd 3 (a pipe the harness writes to; no timeout)
 *   futex       FUTEX_WAIT on a private word, relative timeout MS
 *   epoll       epoll_wait() on fd 3, timeout MS
 * Each wake-up prints one line on stdout, "tick N SLEPT_MS" for a timeout
 * (SLEPT_MS measured on CLOCK_MONOTONIC around the call, restarts
 * included), "byte N C" for a read or an epoll event (it then reads
 * the byte). A sleep that returns early, or a call that fails in any way
 * (an injected call's result, or a restart code, seen as an error), is a
 * FAIL. SIGUSR1 (handler with SA_RESTART) prints "usr1 N" after the call
 * returns, N the number of times the handler ran so far; a nanosleep or epoll_wait it interrupts (EINTR, as the kernel
 * does even with SA_RESTART) sleeps again. SIGTRAP has a handler that is
 * never expected to run (a single-step left behind would call it): "trap"
 * is a FAIL. SIGTERM: finish and exit.
 */
#include "victim.h"
#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

static volatile sig_atomic_t got_usr1, usr1_runs;

static volatile sig_atomic_t got_trap;

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
	usr1_runs++;
}

static void on_trap(int sig)
{
	(void)sig;
	got_trap++;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: sleeper READY MODE MS");
	const char *mode = argv[2];
	long ms = atol(argv[3]);
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	struct sigaction sa;
	static int word;
	int ep = -1;

	victim_init();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	sa.sa_handler = on_trap;
	if (sigaction(SIGTRAP, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	if (!strcmp(mode, "epoll")) {
		struct epoll_event ev = { .events = EPOLLIN };
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 3, &ev))
			die("epoll: %s", strerror(errno));
	} else if (strcmp(mode, "nanosleep") && strcmp(mode, "read") && strcmp(mode, "futex"))
		die("unknown mode %s", mode);
	victim_ready(argv[1]);

	for (long n = 1; !got_term; n++) {
		long start = now_ms(), r = 0;
		char c = 0;
		int timed_out = 0;

		if (!strcmp(mode, "nanosleep")) {
			r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
			if (r == EINTR)
				continue;
			if (r)
				fail("clock_nanosleep: %s (%ld)", strerror(r), r);
			timed_out = 1;
		} else if (!strcmp(mode, "read")) {
			r = read(3, &c, 1);
			if (r != 1) {
				if (r < 0 && errno == EINTR)
					continue;
				fail("read: %ld, %s", r, strerror(errno));
			}
		} else if (!strcmp(mode, "futex")) {
			r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
			if (r == 0 || errno == EINTR)
				continue;
			if (errno != ETIMEDOUT)
				fail("futex: %ld, %s (%d)", r, strerror(errno), errno);
			timed_out = 1;
		} else {
			struct epoll_event ev;
			r = epoll_wait(ep, &ev, 1, (int)ms);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				fail("epoll_wait: %s (%d)", strerror(errno), errno);
			if (r == 0)
				timed_out = 1;
			else if (read(3, &c, 1) != 1)
				fail("read after epoll: %s", strerror(errno));
		}
		long slept = now_ms() - start;
		if (timed_out) {
			if (slept < ms)
				fail("%s of %ld ms returned after %ld ms", mode, ms, slept);
			say("tick %ld %ld", n, slept);
		} else if (r > 0)
			say("byte %ld %c", n, c);
		if (got_trap) {
			fail("SIGTRAP handler ran %d times", (int)got_trap);
			got_trap = 0;
		}
		if (got_usr1) {
			got_usr1 = 0;
			say("usr1 %d", (int)usr1_runs);
		}
	}
	victim_finish();
}
