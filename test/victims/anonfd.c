/*
 * anonfd: eventfd, signalfd, timerfd and epoll fds, each with state.
 *
 *   anonfd READY SENDER_PID
 *
 * - 60 eventfd, counter 7, non-blocking;
 * - 61 eventfd in semaphore mode, counter 3, non-blocking;
 * - 62 signalfd for SIGUSR1 and SIGRTMIN+1 (both blocked), non-blocking;
 * - 63 timerfd (CLOCK_MONOTONIC) periodic, 50 ms;
 * - 64 epoll watching 60 (EPOLLIN), 61 (EPOLLIN|EPOLLET), 62 (EPOLLIN),
 *   63 (EPOLLIN), 65 (EPOLLOUT|EPOLLONESHOT, not fired yet), 68
 *   (EPOLLOUT|EPOLLONESHOT, fired before READY: disabled) and the epoll 66
 *   (EPOLLIN), each with its own data;
 * - 65, 68 eventfds (counter 0: writable);
 * - 66 epoll watching 67, an eventfd with counter 1 (EPOLLIN);
 * - 69 timerfd (CLOCK_MONOTONIC) one-shot, 100 s.
 *
 * The harness sends SIGUSR1 after the restore, before SIGTERM. On SIGTERM
 * it checks: epoll 64 reports 60, 62 (the SIGUSR1), 65 and 66, never 68,
 * and 65 only once; the counters (7; 1, 1, 1 then EAGAIN); a new event on
 * 61 reaches epoll (EPOLLET); the signalfd gives the SIGUSR1 from
 * SENDER_PID and a SIGRTMIN+1 sent now; timerfd_gettime of 63 has the
 * 50 ms interval and fires every 50 ms (over 20 expirations or more,
 * within 25 %: the wall time over the expirations read, so that a late
 * wake-up on a loaded machine weighs little); 69 has
 * no interval and no more than the time left since setup.
 */
#include "victim.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

#define PERIOD_NS 50000000L

static struct timespec t0; /* setup time, CLOCK_MONOTONIC */

static void watch(int epfd, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
		die("epoll_ctl add %d to %d: %s", fd, epfd, strerror(errno));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* reported returns the events epoll fd reports now for data, 0 if none. */
static uint32_t poll_once(int epfd, uint64_t *datas, uint32_t *evs, int max)
{
	struct epoll_event ev[16];
	int n = epoll_wait(epfd, ev, 16, 0);

	if (n < 0) {
		fail("epoll_wait %d: %s", epfd, strerror(errno));
		return 0;
	}
	for (int i = 0; i < n && i < max; i++) {
		datas[i] = ev[i].data.u64;
		evs[i] = ev[i].events;
	}
	return n;
}

static int has(uint64_t *datas, int n, uint64_t d)
{
	for (int i = 0; i < n; i++)
		if (datas[i] == d)
			return 1;
	return 0;
}

static void check_eventfds(void)
{
	uint64_t v = 0;

	if (read(60, &v, 8) != 8 || v != 7)
		fail("eventfd 60: counter %llu (%s), want 7", (unsigned long long)v, strerror(errno));
	for (int i = 0; i < 3; i++) {
		v = 0;
		if (read(61, &v, 8) != 8 || v != 1)
			fail("eventfd 61 (semaphore): read %d gave %llu (%s), want 1", i, (unsigned long long)v, strerror(errno));
	}
	if (read(61, &v, 8) >= 0 || errno != EAGAIN)
		fail("eventfd 61 (semaphore): a fourth read did not say EAGAIN: counter or O_NONBLOCK lost");
	if (!(fcntl(60, F_GETFL) & O_NONBLOCK))
		fail("eventfd 60 lost O_NONBLOCK");
}

static void check_epoll(void)
{
	uint64_t d[16];
	uint32_t e[16];
	int n = poll_once(64, d, e, 16);

	if (!has(d, n, 0x1000000060ULL))
		fail("epoll 64 does not report eventfd 60 (counter 7)");
	if (!has(d, n, 0x62))
		fail("epoll 64 does not report signalfd 62 (a SIGUSR1 is pending)");
	if (!has(d, n, 0x65))
		fail("epoll 64 does not report eventfd 65 (EPOLLOUT|EPOLLONESHOT, not fired yet)");
	if (!has(d, n, 0x66))
		fail("epoll 64 does not report the epoll 66 inside it (its eventfd 67 is readable)");
	if (has(d, n, 0x68))
		fail("epoll 64 reports eventfd 68, whose EPOLLONESHOT fired before the dump");
	n = poll_once(64, d, e, 16);
	if (has(d, n, 0x65))
		fail("epoll 64 reports eventfd 65 twice: EPOLLONESHOT lost");
	if (has(d, n, 0x68))
		fail("epoll 64 reports eventfd 68, whose EPOLLONESHOT fired before the dump");

	n = poll_once(66, d, e, 16);
	if (n != 1 || d[0] != 0x67 || e[0] != EPOLLIN)
		fail("epoll 66: %d events (first data %#llx events %#x), want eventfd 67 EPOLLIN", n,
		     n > 0 ? (unsigned long long)d[0] : 0ULL, n > 0 ? e[0] : 0);
}

/* check_et: a new event on 61 (EPOLLET) is reported, then not again. */
static void check_et(void)
{
	uint64_t one = 1, d[16];
	uint32_t e[16];
	int n;

	poll_once(64, d, e, 16); /* drop what the restore may have queued */
	if (write(61, &one, 8) != 8)
		fail("eventfd 61: write: %s", strerror(errno));
	n = poll_once(64, d, e, 16);
	if (!has(d, n, 0x61))
		fail("epoll 64 does not report a new event on eventfd 61 (EPOLLET)");
	n = poll_once(64, d, e, 16);
	if (has(d, n, 0x61))
		fail("epoll 64 reports eventfd 61 again with no new event: EPOLLET lost");
}

static void check_signalfd(pid_t sender)
{
	struct signalfd_siginfo si;

	memset(&si, 0, sizeof(si));
	if (read(62, &si, sizeof(si)) != sizeof(si))
		fail("signalfd 62: no SIGUSR1 to read: %s", strerror(errno));
	else if (si.ssi_signo != SIGUSR1 || (pid_t)si.ssi_pid != sender)
		fail("signalfd 62: signal %u from %u, want SIGUSR1 from %d", si.ssi_signo, si.ssi_pid, sender);
	kill(getpid(), SIGRTMIN + 1);
	memset(&si, 0, sizeof(si));
	if (read(62, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != (unsigned)SIGRTMIN + 1)
		fail("signalfd 62: SIGRTMIN+1 sent now not read (%u): its mask lost", si.ssi_signo);
	{
		sigset_t usr2;

		sigemptyset(&usr2);
		sigaddset(&usr2, SIGUSR2);
		sigprocmask(SIG_BLOCK, &usr2, NULL);
		kill(getpid(), SIGUSR2);
		if (read(62, &si, sizeof(si)) >= 0)
			fail("signalfd 62 gives SIGUSR2, not in its mask");
	}
}

static void check_timers(void)
{
	struct itimerspec its;
	uint64_t ticks, total = 0;
	double first;

	if (timerfd_gettime(63, &its))
		fail("timerfd 63: timerfd_gettime: %s", strerror(errno));
	else if (its.it_interval.tv_sec != 0 || its.it_interval.tv_nsec != PERIOD_NS ||
		 its.it_value.tv_sec != 0 || its.it_value.tv_nsec > PERIOD_NS)
		fail("timerfd 63: interval %ld.%09ld value %ld.%09ld, want interval 0.050000000 and value <= it",
		     (long)its.it_interval.tv_sec, its.it_interval.tv_nsec, (long)its.it_value.tv_sec, its.it_value.tv_nsec);
	if (read(63, &ticks, 8) != 8 || ticks == 0)
		fail("timerfd 63: first read: %s", strerror(errno));
	/* Each read returns some time after an expiration: the wall time
	 * from the first to the last is that many periods give or take one
	 * wake-up's delay, which 20 periods make small. */
	first = now_s();
	while (total < 20) {
		if (read(63, &ticks, 8) != 8) {
			fail("timerfd 63: read: %s", strerror(errno));
			return;
		}
		total += ticks;
	}
	double period = (now_s() - first) / total;

	say("anonfd: timerfd 63 period %.1f ms over %llu expirations", period * 1e3, (unsigned long long)total);
	if (period < 0.0375 || period > 0.0625)
		fail("timerfd 63 fires every %.1f ms, want 50", period * 1e3);

	if (timerfd_gettime(69, &its))
		fail("timerfd 69: timerfd_gettime: %s", strerror(errno));
	else {
		double left = its.it_value.tv_sec + its.it_value.tv_nsec / 1e9;
		double most = 100 - (now_s() - (t0.tv_sec + t0.tv_nsec / 1e9));

		if (its.it_interval.tv_sec || its.it_interval.tv_nsec)
			fail("timerfd 69 got an interval");
		/* The dump-to-restore gap may add to it, never take away. */
		if (left <= 0 || left > 100 || left < most - 0.5)
			fail("timerfd 69: %.3f s left, want between %.3f and 100", left, most);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: anonfd READY SENDER_PID");
	victim_init();
	pid_t sender = atoi(argv[2]);
	sigset_t mask;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGRTMIN + 1);
	if (sigprocmask(SIG_BLOCK, &mask, NULL))
		die("sigprocmask: %s", strerror(errno));

	move_to(eventfd(7, EFD_NONBLOCK), 60);
	move_to(eventfd(3, EFD_NONBLOCK | EFD_SEMAPHORE), 61);
	move_to(signalfd(-1, &mask, SFD_NONBLOCK), 62);
	move_to(timerfd_create(CLOCK_MONOTONIC, 0), 63);
	{
		struct itimerspec its = {.it_interval = {0, PERIOD_NS}, .it_value = {0, PERIOD_NS}};

		if (timerfd_settime(63, 0, &its, NULL))
			die("timerfd_settime 63: %s", strerror(errno));
	}
	move_to(timerfd_create(CLOCK_MONOTONIC, 0), 69);
	{
		struct itimerspec its = {.it_value = {100, 0}};

		if (timerfd_settime(69, 0, &its, NULL))
			die("timerfd_settime 69: %s", strerror(errno));
	}
	move_to(eventfd(0, EFD_NONBLOCK), 65);
	move_to(eventfd(0, EFD_NONBLOCK), 68);
	move_to(eventfd(1, EFD_NONBLOCK), 67);
	move_to(epoll_create1(0), 66);
	watch(66, 67, EPOLLIN, 0x67);
	move_to(epoll_create1(0), 64);
	watch(64, 60, EPOLLIN, 0x1000000060ULL);
	watch(64, 61, EPOLLIN | EPOLLET, 0x61);
	watch(64, 62, EPOLLIN, 0x62);
	watch(64, 63, EPOLLIN, 0x63);
	watch(64, 68, EPOLLOUT | EPOLLONESHOT, 0x68);
	{
		/* Fire 68's one shot (and 61's edge), then add 65. */
		struct epoll_event ev[16];
		int n = epoll_wait(64, ev, 16, 0), fired = 0;

		for (int i = 0; i < n; i++)
			fired |= ev[i].data.u64 == 0x68;
		if (!fired)
			die("epoll 64 did not report eventfd 68");
	}
	watch(64, 65, EPOLLOUT | EPOLLONESHOT, 0x65);
	watch(64, 66, EPOLLIN, 0x66);

	victim_ready(argv[1]);
	victim_wait();

	check_epoll();
	check_eventfds();
	check_et();
	check_signalfd(sender);
	check_timers();
	victim_finish();
}
