/*
 * timers: POSIX timers and itimers keep firing at their intervals after a
 * restore, with their IDs, targets, values and overruns.
 *
 *   timers READY
 *
 * Two threads: main spins in user space (so that CPU-time itimers advance);
 * a worker sleeps and is the SIGEV_THREAD_ID target. Timers (all
 * CLOCK_MONOTONIC, periodic, first expiry = interval):
 *   T0  SIGEV_SIGNAL     SIGRTMIN+4  si_value 0xa0  every 50 ms
 *   T1  created, then deleted (an ID gap)
 *   T2  SIGEV_THREAD_ID  SIGRTMIN+5  si_value 0xb2  every 30 ms, to the worker
 *   T3  created, then deleted
 *   T4  SIGEV_SIGNAL     SIGRTMIN+6  si_value 0xc4  every 10 ms; the signal is
 *       blocked in both threads, so it stays pending and overruns pile up
 *   T5  SIGEV_NONE       every 100 ms (only timer_gettime sees it)
 * itimers: ITIMER_REAL 40 ms (SIGALRM), ITIMER_VIRTUAL 30 ms (SIGVTALRM),
 * ITIMER_PROF 60 ms (SIGPROF); the worker blocks those three.
 *
 * Each handler records when it ran (CLOCK_MONOTONIC, or
 * CLOCK_PROCESS_CPUTIME_ID for VIRTUAL and PROF) in a ring, and for the POSIX
 * timers checks si_timerid and si_value (and, for T2, that it runs in the
 * worker). READY comes after 1.5 s, once every periodic timer has fired
 * K+1 = 9 times (what the check at SIGTERM measures, so that a check right
 * after READY passes): the CPU-time ones count the CPU time the spinning
 * thread got, which
 * on a loaded machine is a fraction of the wall time, so READY waits for it
 * (up to 15 s) instead of expecting it in a wall-time window.
 *
 * On SIGTERM it checks, for T0, T2, REAL, VIRTUAL and PROF, the last 8
 * intervals (median within 25 % of the nominal interval, 40 % for the
 * CPU-time ones; the harness leaves it running >= 1.5 s and >= 0.8 s of
 * user CPU time after the restore, so that these 8 intervals all come after
 * it: ITIMER_PROF at 60 ms of CPU needs 0.54 s of it) and that the last
 * expiry is recent; timer_gettime() of T0, T2, T4, T5 (intervals exact, value
 * within the interval) and EINVAL for T1, T3; getitimer() intervals exact;
 * and that T4's signal is still pending with its value, ID and an si_overrun
 * of at least 100 (>= 150 expirations happened before READY).
 */
#include "victim.h"
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/time.h>

#define RING 64
#define K 8

struct ring {
	uint64_t t[RING];
	volatile uint32_t n;
	volatile int bad_value, bad_id, bad_tid;
	volatile int last_value, last_id, last_tid;
};

enum { R_T0, R_T2, R_REAL, R_VIRT, R_PROF, NRING };
static const char *ring_name[NRING] = { "T0 (SIGEV_SIGNAL, 50 ms)", "T2 (SIGEV_THREAD_ID, 30 ms)",
					"ITIMER_REAL (40 ms)", "ITIMER_VIRTUAL (30 ms CPU)",
					"ITIMER_PROF (60 ms CPU)" };
static const long ring_ms[NRING] = { 50, 30, 40, 30, 60 };
static const int ring_cpu[NRING] = { 0, 0, 0, 1, 1 };
static struct ring rings[NRING];

static timer_t tid[6];
static int tid_int[6];
static pid_t worker_tid;
static volatile int stop_worker;

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void record(struct ring *r, uint64_t t)
{
	r->t[r->n % RING] = t;
	r->n++;
}

static void on_timer(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	struct ring *r = sig == SIGRTMIN + 4 ? &rings[R_T0] : &rings[R_T2];
	int want_value = sig == SIGRTMIN + 4 ? 0xa0 : 0xb2;
	int want_id = sig == SIGRTMIN + 4 ? tid_int[0] : tid_int[2];

	record(r, now_ns(CLOCK_MONOTONIC));
	if (si->si_value.sival_int != want_value) {
		r->bad_value++;
		r->last_value = si->si_value.sival_int;
	}
	if (si->si_code != SI_TIMER || si->si_timerid != want_id) {
		r->bad_id++;
		r->last_id = si->si_code == SI_TIMER ? si->si_timerid : -1000 - si->si_code;
	}
	if (sig == SIGRTMIN + 5 && syscall(SYS_gettid) != worker_tid) {
		r->bad_tid++;
		r->last_tid = syscall(SYS_gettid);
	}
}

static void on_itimer(int sig)
{
	if (sig == SIGALRM)
		record(&rings[R_REAL], now_ns(CLOCK_MONOTONIC));
	else if (sig == SIGVTALRM)
		record(&rings[R_VIRT], now_ns(CLOCK_PROCESS_CPUTIME_ID));
	else
		record(&rings[R_PROF], now_ns(CLOCK_PROCESS_CPUTIME_ID));
}

static void *worker(void *arg)
{
	(void)arg;
	sigset_t m;
	sigfillset(&m);
	sigdelset(&m, SIGRTMIN + 5);
	pthread_sigmask(SIG_SETMASK, &m, NULL);
	worker_tid = syscall(SYS_gettid);
	while (!stop_worker)
		sleep_ms(100);
	return NULL;
}

static void make_timer(int i, int notify, int sig, int value, long ms)
{
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = notify;
	ev.sigev_signo = sig;
	ev.sigev_value.sival_int = value;
	if (notify == SIGEV_THREAD_ID)
		ev._sigev_un._tid = worker_tid; /* sigev_notify_thread_id: glibc < 2.41 lacks the name */
	if (timer_create(CLOCK_MONOTONIC, &ev, &tid[i]))
		die("timer_create T%d: %s", i, strerror(errno));
	tid_int[i] = (int)(intptr_t)tid[i];
	if (ms) {
		struct itimerspec its = { { ms / 1000, (ms % 1000) * 1000000L }, { ms / 1000, (ms % 1000) * 1000000L } };
		if (timer_settime(tid[i], 0, &its, NULL))
			die("timer_settime T%d: %s", i, strerror(errno));
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void check_ring(int i)
{
	struct ring *r = &rings[i];
	uint32_t n = r->n;
	uint64_t iv[K];
	uint64_t nominal = (uint64_t)ring_ms[i] * 1000000ULL;

	if (r->bad_value)
		fail("%s: %d signal(s) with si_value %#x", ring_name[i], r->bad_value, r->last_value);
	if (r->bad_id)
		fail("%s: %d signal(s) with si_timerid %d (or not SI_TIMER), want %d", ring_name[i], r->bad_id, r->last_id,
		     i == R_T0 ? tid_int[0] : tid_int[2]);
	if (r->bad_tid)
		fail("%s: %d signal(s) handled in thread %d, not in the worker %d", ring_name[i], r->bad_tid, r->last_tid,
		     (int)worker_tid);
	if (n < K + 1) {
		fail("%s fired only %u times", ring_name[i], n);
		return;
	}
	for (int k = 0; k < K; k++) {
		uint64_t a = r->t[(n - 1 - k) % RING], b = r->t[(n - 2 - k) % RING];
		iv[k] = a > b ? a - b : 0;
	}
	qsort(iv, K, sizeof(iv[0]), cmp_u64);
	uint64_t med = (iv[K / 2 - 1] + iv[K / 2]) / 2;
	uint64_t tol = nominal * (ring_cpu[i] ? 40 : 25) / 100;
	if (med + tol < nominal || med > nominal + tol)
		fail("%s: median of its last %d intervals is %.1f ms (min %.1f, max %.1f), want %ld ms", ring_name[i], K,
		     med / 1e6, iv[0] / 1e6, iv[K - 1] / 1e6, ring_ms[i]);
	uint64_t last = r->t[(n - 1) % RING];
	uint64_t now = now_ns(ring_cpu[i] ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC);
	if (now > last + 4 * nominal)
		fail("%s: last fired %.1f ms ago: it stopped", ring_name[i], (now - last) / 1e6);
	say("timers: %s fired %u times, median interval %.1f ms (min %.1f, max %.1f)", ring_name[i], n, med / 1e6,
	    iv[0] / 1e6, iv[K - 1] / 1e6);
}

static void check_posix(int i, long ms)
{
	struct itimerspec its;
	if (timer_gettime(tid[i], &its)) {
		fail("timer_gettime(T%d = id %d): %s", i, tid_int[i], strerror(errno));
		return;
	}
	long long iv = its.it_interval.tv_sec * 1000000000LL + its.it_interval.tv_nsec;
	long long v = its.it_value.tv_sec * 1000000000LL + its.it_value.tv_nsec;
	if (iv != ms * 1000000LL)
		fail("T%d (id %d): interval %lld ns, want %ld ms", i, tid_int[i], iv, ms);
	if (v <= 0 || v > ms * 1000000LL)
		fail("T%d (id %d): next expiry in %lld ns, want 0 < it <= %ld ms (disarmed?)", i, tid_int[i], v, ms);
}

static void check_itimer(int which, const char *name, long ms)
{
	struct itimerval it;
	if (getitimer(which, &it)) {
		fail("getitimer(%s): %s", name, strerror(errno));
		return;
	}
	long long iv = it.it_interval.tv_sec * 1000000LL + it.it_interval.tv_usec;
	long long v = it.it_value.tv_sec * 1000000LL + it.it_value.tv_usec;
	if (iv != ms * 1000)
		fail("%s: interval %lld us, want %ld ms", name, iv, ms);
	if (v <= 0 || v > ms * 1000)
		fail("%s: next expiry in %lld us, want 0 < it <= %ld ms (disarmed?)", name, v, ms);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: timers READY");
	victim_init();

	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGRTMIN + 5);
	sigaddset(&m, SIGRTMIN + 6);
	pthread_sigmask(SIG_BLOCK, &m, NULL);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_timer;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGRTMIN + 4, &sa, NULL) || sigaction(SIGRTMIN + 5, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_itimer;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGALRM, &sa, NULL) || sigaction(SIGVTALRM, &sa, NULL) || sigaction(SIGPROF, &sa, NULL))
		die("sigaction: %s", strerror(errno));

	pthread_t w;
	if (pthread_create(&w, NULL, worker, NULL))
		die("pthread_create");
	while (!__atomic_load_n(&worker_tid, __ATOMIC_SEQ_CST))
		sleep_ms(1);

	make_timer(0, SIGEV_SIGNAL, SIGRTMIN + 4, 0xa0, 50);
	make_timer(1, SIGEV_SIGNAL, SIGRTMIN + 4, 0xa1, 0);
	make_timer(2, SIGEV_THREAD_ID, SIGRTMIN + 5, 0xb2, 30);
	make_timer(3, SIGEV_SIGNAL, SIGRTMIN + 4, 0xa3, 0);
	make_timer(4, SIGEV_SIGNAL, SIGRTMIN + 6, 0xc4, 10);
	make_timer(5, SIGEV_NONE, 0, 0, 100);
	if (timer_delete(tid[1]) || timer_delete(tid[3]))
		die("timer_delete: %s", strerror(errno));

	struct itimerval it;
	it = (struct itimerval){ { 0, 40000 }, { 0, 40000 } };
	if (setitimer(ITIMER_REAL, &it, NULL))
		die("setitimer REAL: %s", strerror(errno));
	it = (struct itimerval){ { 0, 30000 }, { 0, 30000 } };
	if (setitimer(ITIMER_VIRTUAL, &it, NULL))
		die("setitimer VIRTUAL: %s", strerror(errno));
	it = (struct itimerval){ { 0, 60000 }, { 0, 60000 } };
	if (setitimer(ITIMER_PROF, &it, NULL))
		die("setitimer PROF: %s", strerror(errno));

	uint64_t start = now_ns(CLOCK_MONOTONIC);
	int readied = 0;
	while (!got_term) {
		/* Spin: the CPU-time itimers need CPU time. */
		uint64_t wall = now_ns(CLOCK_MONOTONIC) - start;
		if (!readied && wall > 1500000000ULL) {
			int short_of = -1;
			for (int i = 0; i < NRING; i++)
				if (rings[i].n < K + 1)
					short_of = i;
			if (short_of >= 0 && wall > 15000000000ULL)
				die("%s fired only %u times in %.1f s (%.2f s of CPU time)", ring_name[short_of],
				    rings[short_of].n, wall / 1e9, now_ns(CLOCK_PROCESS_CPUTIME_ID) / 1e9);
			if (short_of >= 0)
				continue;
			say("timers: ids T0 %d, T2 %d, T4 %d, T5 %d (T1 %d, T3 %d deleted); worker tid %d", tid_int[0],
			    tid_int[2], tid_int[4], tid_int[5], tid_int[1], tid_int[3], (int)worker_tid);
			victim_ready(argv[1]);
			readied = 1;
		}
	}

	for (int i = 0; i < NRING; i++)
		check_ring(i);
	check_posix(0, 50);
	check_posix(2, 30);
	check_posix(4, 10);
	check_posix(5, 100);
	for (int i = 1; i <= 3; i += 2) {
		struct itimerspec its;
		if (timer_gettime(tid[i], &its) == 0 || errno != EINVAL)
			fail("T%d (id %d) was deleted, but timer_gettime says %s", i, tid_int[i],
			     errno == EINVAL ? "it exists" : strerror(errno));
	}
	check_itimer(ITIMER_REAL, "ITIMER_REAL", 40);
	check_itimer(ITIMER_VIRTUAL, "ITIMER_VIRTUAL", 30);
	check_itimer(ITIMER_PROF, "ITIMER_PROF", 60);

	sigset_t p, t4;
	sigpending(&p);
	if (!sigismember(&p, SIGRTMIN + 6))
		fail("T4's SIGRTMIN+6 is not pending any more");
	sigemptyset(&t4);
	sigaddset(&t4, SIGRTMIN + 6);
	siginfo_t si;
	struct timespec zero = { 0, 0 };
	if (sigtimedwait(&t4, &si, &zero) != SIGRTMIN + 6) {
		fail("T4's SIGRTMIN+6 cannot be received: %s", strerror(errno));
	} else {
		if (si.si_code != SI_TIMER || si.si_timerid != tid_int[4] || si.si_value.sival_int != 0xc4)
			fail("T4's signal: si_code %d si_timerid %d si_value %#x, want SI_TIMER %d 0xc4", si.si_code,
			     si.si_timerid, si.si_value.sival_int, tid_int[4]);
		if (si.si_overrun < 100)
			fail("T4's signal has si_overrun %d, want >= 100 (it was blocked for > 1.5 s at 10 ms)", si.si_overrun);
		say("timers: T4 overrun %d", si.si_overrun);
	}
	stop_worker = 1;
	pthread_join(w, NULL);
	victim_finish();
}
