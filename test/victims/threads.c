/*
 * threads: N threads, each with state of its own, survive a dump and restore.
 *
 *   threads READY [N]        N worker threads, default 100, 1..10000
 *
 * Worker i (0-based) has its own:
 *   - TID (gettid() is checked against the one it had at start);
 *   - name "w<i>" (PR_SET_NAME; /proc/PID/task/TID/comm);
 *   - blocked mask: SIGTERM, SIGRTMIN+1, SIGRTMIN+2, plus a per-thread pattern
 *     of SIGRTMIN+8..SIGRTMIN+23;
 *   - sigaltstack (a 32 KiB slice of one shared mapping); a SIGUSR1 it sends
 *     itself after the restore must run its handler on that stack;
 *   - __thread variables; robust futex list head and clear_child_tid address
 *     as glibc registered them; rseq registration (rseq() with the same
 *     arguments must say EBUSY);
 *   - every 10th worker: one SIGRTMIN+1 pending on its own (thread) queue with
 *     si_value 1000+i, queued by the main thread (pthread_sigqueue);
 *   - a counter (a local variable, mirrored in a global slot), and a kind:
 *       i%4 == 0  FUTEX   FUTEX_WAIT without timeout on a word that stays 0
 *                         until the check: it must never return EINTR (the
 *                         interrupted wait must be restarted, not failed);
 *       i%4 == 1  SLEEP   nanosleep loop (20 ms, 200 ms when N > 200);
 *       i%4 == 2  SPIN    (first 4 of them; the others SLEEP) an inline-asm
 *                         loop holding per-thread values in r12-r14, xmm3 and
 *                         xmm8, compared every iteration (it returns to C
 *                         for a 2 ms sleep every ~2^20 iterations);
 *       i%4 == 3  TIMED   FUTEX_WAIT with a 20 ms (200 ms) timeout, looping.
 * Worker 0 holds a robust mutex (PTHREAD_MUTEX_ROBUST) that it never unlocks:
 * when it exits after the check, the kernel walks its robust list and the
 * main thread's lock must return EOWNERDEAD.
 * The main thread has its own TLS, sigaltstack and mask too, and the process
 * has one SIGRTMIN+2 pending on the shared queue (blocked in every thread).
 *
 * READY is created once every worker runs and every FUTEX worker is blocked
 * in futex (/proc/self/task/TID/syscall).
 *
 * On SIGTERM the main thread checks /proc/self/status "Threads: N+1", that
 * every SLEEP, SPIN and TIMED worker still makes progress, then sets the check
 * phase and wakes the FUTEX workers. Each worker checks its own state and
 * exits; the main thread joins them all (pthread_timedjoin_np: joining relies
 * on clear_child_tid, so a lost one shows up as a worker that finished its
 * check but cannot be joined), checks the robust mutex, the shared pending
 * signal, that it is alone again ("Threads: 1"), and its own state.
 */
#include "victim.h"
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

#define MAX_THREADS 10000
#define MAX_SPIN 4
#define ALT_SIZE (32 * 1024)
#define STACK_SIZE (256 * 1024)

enum kind { FUTEX, SLEEP, SPIN, TIMED };
static const char *kind_name[] = { "futex", "sleep", "spin", "timed" };

struct th {
	pthread_t pt;
	int idx, kind;
	pid_t tid;
	sigset_t mask;
	char name[16];
	char *alt;
	void *robust_head;
	size_t robust_len;
	void *tid_addr;
	void *rseq_area;
	unsigned int rseq_len;
	int has_rt;
	volatile uint64_t count;
	volatile int started;
	volatile int result; /* 0 running, 1 pass, 2 fail */
	volatile int regfail;
	volatile int eintr;
};

static struct th *ths;
static int nthreads;
static long sleep_interval_ms = 20;
static volatile int phase;   /* 0 run, 1 check */
static uint32_t fword;       /* futex word of the FUTEX workers: 0 until the check */
static pthread_mutex_t robust;
static int nfail;            /* failures of all threads, atomically */

static __thread uint64_t tls_val;
static __thread struct th *tls_self;
static __thread volatile uintptr_t tls_altseen;

/* tfail is a thread-safe fail(): one line, counted atomically. */
static __attribute__((format(printf, 2, 3))) void tfail(struct th *t, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	if (t)
		n = snprintf(buf, sizeof(buf), "FAIL: worker %d (%s, tid %d): ", t->idx, kind_name[t->kind], t->tid);
	else
		n = snprintf(buf, sizeof(buf), "FAIL: main thread: ");
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(2, buf, n) < 0) { /* nothing better to do */ }
	__atomic_add_fetch(&nfail, 1, __ATOMIC_SEQ_CST);
	if (t)
		t->result = 2;
}

static long futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

static void on_usr1(int sig)
{
	volatile char here;

	(void)sig;
	tls_altseen = (uintptr_t)&here;
}

/*
 * spin_regs holds a, b and a^b in r12-r14, (a, b) in xmm8 and b in xmm3 for up to
 * 2^20 iterations, counting in *count, until *stop is set; it returns 1 as
 * soon as one of them changed.
 */
static int spin_regs(uint64_t a, uint64_t b, volatile uint64_t *count, volatile int *stop)
{
	uint64_t ret;

	__asm__ volatile(
		"mov %[a], %%r12\n\t"
		"mov %[b], %%r13\n\t"
		"mov %[a], %%r14\n\t"
		"xor %[b], %%r14\n\t"
		"movq %[a], %%xmm8\n\t"
		"movq %[b], %%xmm9\n\t"
		"punpcklqdq %%xmm9, %%xmm8\n\t"
		"movq %[b], %%xmm3\n\t"
		"pxor %%xmm9, %%xmm9\n\t"
		"mov $0x100000, %%ecx\n\t"
		"1:\n\t"
		"incq (%[cnt])\n\t"
		"cmp %[a], %%r12\n\t"
		"jne 2f\n\t"
		"cmp %[b], %%r13\n\t"
		"jne 2f\n\t"
		"mov %[a], %%rax\n\t"
		"xor %[b], %%rax\n\t"
		"cmp %%rax, %%r14\n\t"
		"jne 2f\n\t"
		"movq %%xmm8, %%rax\n\t"
		"cmp %[a], %%rax\n\t"
		"jne 2f\n\t"
		"pshufd $0x4e, %%xmm8, %%xmm9\n\t"
		"movq %%xmm9, %%rax\n\t"
		"cmp %[b], %%rax\n\t"
		"jne 2f\n\t"
		"movq %%xmm3, %%rax\n\t"
		"cmp %[b], %%rax\n\t"
		"jne 2f\n\t"
		"pause\n\t"
		"cmpl $0, (%[stop])\n\t"
		"jne 3f\n\t"
		"dec %%ecx\n\t"
		"jnz 1b\n\t"
		"3:\n\t"
		"xor %%eax, %%eax\n\t"
		"jmp 4f\n\t"
		"2:\n\t"
		"mov $1, %%eax\n\t"
		"4:\n\t"
		: "=&a"(ret)
		: [a] "r"(a), [b] "r"(b), [cnt] "r"(count), [stop] "r"(stop)
		: "rcx", "r12", "r13", "r14", "xmm3", "xmm8", "xmm9", "memory", "cc");
	return (int)ret;
}

/* sigset_equal compares the masks of the signals a program can block. */
static int sigset_equal(const sigset_t *a, const sigset_t *b, int *first)
{
	for (int s = 1; s <= 64; s++) {
		if (s == 32 || s == 33 || s == SIGKILL || s == SIGSTOP)
			continue; /* glibc-internal, or never blocked */
		if (sigismember(a, s) != sigismember(b, s)) {
			*first = s;
			return 0;
		}
	}
	return 1;
}

/* rseq_probe: rseq() with the registered arguments says EBUSY. */
static long rseq_call(void *area, unsigned int len)
{
	return syscall(SYS_rseq, area, len, 0, RSEQ_SIG);
}

/* setup_rseq finds the length glibc registered the thread's rseq area with. */
static void setup_rseq(void **area, unsigned int *len)
{
	*area = (char *)__builtin_thread_pointer() + __rseq_offset;
	*len = 0;
	if (__rseq_size == 0)
		return; /* glibc did not register rseq (tunable): nothing to check */
	unsigned int tries[] = { 32, __rseq_size };
	for (int i = 0; i < 2; i++) {
		long r = rseq_call(*area, tries[i]);
		if ((r < 0 && errno == EBUSY) || r == 0) {
			*len = tries[i];
			return;
		}
	}
}

static void check_common(struct th *t, const sigset_t *want_mask, const char *want_name,
			 uint64_t want_tls, const char *alt, void *rh, size_t rl, void *tid_addr,
			 void *rseq_area, unsigned int rseq_len)
{
	sigset_t cur;
	char name[17] = "";
	int s;

	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	if (!sigset_equal(&cur, want_mask, &s))
		tfail(t, "blocked mask changed: signal %d is %s", s, sigismember(&cur, s) ? "blocked" : "not blocked");
	prctl(PR_GET_NAME, name);
	if (strcmp(name, want_name))
		tfail(t, "name (PR_GET_NAME) is \"%s\", want \"%s\"", name, want_name);
	if (tls_val != want_tls)
		tfail(t, "__thread variable is %#llx, want %#llx", (unsigned long long)tls_val, (unsigned long long)want_tls);
	if (tls_self != t)
		tfail(t, "__thread pointer is %p, want %p", (void *)tls_self, (void *)t);

	stack_t ss;
	if (sigaltstack(NULL, &ss))
		tfail(t, "sigaltstack: %s", strerror(errno));
	else if (ss.ss_sp != alt || ss.ss_size != ALT_SIZE || ss.ss_flags != 0)
		tfail(t, "sigaltstack is sp %p size %zu flags %#x, want sp %p size %d flags 0", ss.ss_sp, ss.ss_size, ss.ss_flags,
		      (void *)alt, ALT_SIZE);
	tls_altseen = 0;
	pthread_kill(pthread_self(), SIGUSR1);
	if (tls_altseen == 0)
		tfail(t, "SIGUSR1 handler did not run");
	else if (tls_altseen < (uintptr_t)alt || tls_altseen >= (uintptr_t)alt + ALT_SIZE)
		tfail(t, "SIGUSR1 handler ran at %#lx, not on the sigaltstack %p..+%#x", (unsigned long)tls_altseen,
		      (void *)alt, ALT_SIZE);

	void *h = NULL;
	size_t l = 0;
	if (syscall(SYS_get_robust_list, 0, &h, &l))
		tfail(t, "get_robust_list: %s", strerror(errno));
	else if (h != rh || l != rl)
		tfail(t, "robust list is %p len %zu, want %p len %zu", h, l, rh, rl);
	void *ta = NULL;
	if (prctl(PR_GET_TID_ADDRESS, &ta, 0, 0, 0))
		tfail(t, "PR_GET_TID_ADDRESS: %s", strerror(errno));
	else if (ta != tid_addr)
		tfail(t, "clear_child_tid is %p, want %p", ta, tid_addr);
	if (rseq_len) {
		long r = rseq_call(rseq_area, rseq_len);
		if (r == 0)
			tfail(t, "rseq area %p (len %u) was not registered any more", rseq_area, rseq_len);
		else if (errno != EBUSY)
			tfail(t, "rseq(%p, %u) says %s, want EBUSY (registered with other arguments?)", rseq_area, rseq_len,
			      strerror(errno));
	}
}

static void *worker(void *arg)
{
	struct th *t = arg;
	uint64_t mine = 0;
	struct timespec ts = { 0, sleep_interval_ms * 1000000L };
	uint64_t a = pattern(t->idx, 1), b = pattern(t->idx, 2);

	tls_self = t;
	tls_val = pattern(t->idx, 7);
	t->tid = gettid();
	prctl(PR_SET_NAME, t->name);
	stack_t ss = { .ss_sp = t->alt, .ss_size = ALT_SIZE, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL))
		die("worker %d: sigaltstack: %s", t->idx, strerror(errno));
	if (syscall(SYS_get_robust_list, 0, &t->robust_head, &t->robust_len))
		die("worker %d: get_robust_list: %s", t->idx, strerror(errno));
	if (prctl(PR_GET_TID_ADDRESS, &t->tid_addr, 0, 0, 0))
		die("worker %d: PR_GET_TID_ADDRESS: %s", t->idx, strerror(errno));
	setup_rseq(&t->rseq_area, &t->rseq_len);
	if (t->idx == 0 && pthread_mutex_lock(&robust))
		die("worker 0: lock the robust mutex");
	pthread_sigmask(SIG_SETMASK, &t->mask, NULL);
	__atomic_store_n(&t->started, 1, __ATOMIC_SEQ_CST);

	while (!phase) {
		switch (t->kind) {
		case FUTEX:
			if (futex(&fword, FUTEX_WAIT_PRIVATE, 0, NULL) && errno == EINTR)
				t->eintr++;
			break;
		case TIMED:
			futex(&fword, FUTEX_WAIT_PRIVATE, 0, &ts);
			break;
		case SLEEP:
			nanosleep(&ts, NULL);
			break;
		case SPIN:
			if (spin_regs(a, b, &t->count, &phase))
				t->regfail = 1;
			sleep_ms(2);
			continue; /* spin_regs counts in t->count */
		}
		t->count = ++mine;
	}

	if (gettid() != t->tid)
		tfail(t, "gettid() is %d now", (int)gettid());
	check_common(t, &t->mask, t->name, pattern(t->idx, 7), t->alt, t->robust_head, t->robust_len, t->tid_addr,
		     t->rseq_area, t->rseq_len);
	if (t->kind != SPIN && mine != t->count)
		tfail(t, "its counter is %llu, its slot says %llu", (unsigned long long)mine, (unsigned long long)t->count);
	if (t->regfail)
		tfail(t, "a register (r12-r14, xmm3 or xmm8) changed while it spun");
	if (t->eintr)
		tfail(t, "FUTEX_WAIT returned EINTR %d time(s) with no signal for it: the interrupted wait was not restarted",
		      t->eintr);

	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN + 1);
	siginfo_t si;
	struct timespec zero = { 0, 0 };
	int got = sigtimedwait(&rt, &si, &zero);
	if (t->has_rt) {
		if (got != SIGRTMIN + 1)
			tfail(t, "its pending SIGRTMIN+1 is gone");
		else if (si.si_value.sival_int != 1000 + t->idx)
			tfail(t, "its pending SIGRTMIN+1 has si_value %d, want %d", si.si_value.sival_int, 1000 + t->idx);
		else if (sigtimedwait(&rt, &si, &zero) == SIGRTMIN + 1)
			tfail(t, "SIGRTMIN+1 was pending twice");
	} else if (got == SIGRTMIN + 1) {
		tfail(t, "a SIGRTMIN+1 (si_value %d) is pending for it, none was sent to it", si.si_value.sival_int);
	}
	if (t->result == 0)
		t->result = 1;
	return (void *)(uintptr_t)(t->idx + 1);
}

/* proc_threads is "Threads:" of /proc/self/status. */
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

/* in_syscall reports whether thread tid is blocked in syscall nr. */
static int in_syscall(pid_t tid, long nr)
{
	char path[64], buf[64] = "";
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 && strtol(buf, NULL, 10) == nr && buf[0] != 'r';
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: threads READY [N]");
	nthreads = argc > 2 ? atoi(argv[2]) : 100;
	if (nthreads < 1 || nthreads > MAX_THREADS)
		die("N must be 1..%d", MAX_THREADS);
	if (nthreads > 200)
		sleep_interval_ms = 200;
	victim_init();

	ths = mmap(NULL, sizeof(*ths) * nthreads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *alts = mmap(NULL, (size_t)ALT_SIZE * (nthreads + 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ths == MAP_FAILED || alts == MAP_FAILED)
		die("mmap: %s", strerror(errno));

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction(SIGUSR1): %s", strerror(errno));

	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&robust, &ma);

	/* The main thread: its own TLS, altstack, mask. */
	struct th *mainth = NULL;
	tls_val = pattern(99999, 7);
	char *main_alt = alts + (size_t)ALT_SIZE * nthreads;
	stack_t ss = { .ss_sp = main_alt, .ss_size = ALT_SIZE, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL))
		die("sigaltstack: %s", strerror(errno));
	sigset_t main_mask;
	sigemptyset(&main_mask);
	sigaddset(&main_mask, SIGRTMIN + 1);
	sigaddset(&main_mask, SIGRTMIN + 2);
	pthread_sigmask(SIG_SETMASK, &main_mask, NULL);
	void *main_rh, *main_ta, *main_rseq;
	size_t main_rl;
	unsigned int main_rseq_len;
	if (syscall(SYS_get_robust_list, 0, &main_rh, &main_rl) || prctl(PR_GET_TID_ADDRESS, &main_ta, 0, 0, 0))
		die("get_robust_list / PR_GET_TID_ADDRESS: %s", strerror(errno));
	setup_rseq(&main_rseq, &main_rseq_len);
	char main_name[17] = "";
	prctl(PR_GET_NAME, main_name);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STACK_SIZE);
	int spinners = 0;
	for (int i = 0; i < nthreads; i++) {
		struct th *t = &ths[i];
		t->idx = i;
		t->kind = i % 4;
		if (t->kind == SPIN && spinners++ >= MAX_SPIN)
			t->kind = SLEEP;
		t->alt = alts + (size_t)ALT_SIZE * i;
		t->has_rt = i % 10 == 0;
		snprintf(t->name, sizeof(t->name), "w%d", i);
		sigemptyset(&t->mask);
		sigaddset(&t->mask, SIGTERM);
		sigaddset(&t->mask, SIGRTMIN + 1);
		sigaddset(&t->mask, SIGRTMIN + 2);
		uint32_t bits = (uint32_t)(pattern(i, 3) & 0xffff);
		for (int s = 0; s < 16; s++)
			if (bits & (1u << s))
				sigaddset(&t->mask, SIGRTMIN + 8 + s);
		int e = pthread_create(&t->pt, &attr, worker, t);
		if (e)
			die("pthread_create %d: %s", i, strerror(e));
	}
	for (int i = 0; i < nthreads; i++)
		while (!__atomic_load_n(&ths[i].started, __ATOMIC_SEQ_CST))
			sleep_ms(1);
	for (int i = 0; i < nthreads; i++) {
		if (!ths[i].has_rt)
			continue;
		union sigval v = { .sival_int = 1000 + i };
		int e = pthread_sigqueue(ths[i].pt, SIGRTMIN + 1, v);
		if (e)
			die("pthread_sigqueue to worker %d: %s", i, strerror(e));
	}
	union sigval sv = { .sival_int = 0xC0FFEE };
	if (sigqueue(getpid(), SIGRTMIN + 2, sv))
		die("sigqueue: %s", strerror(errno));

	/* Let the dump find the FUTEX workers inside futex_wait. */
	for (int i = 0; i < nthreads; i++) {
		int ok = 0;
		for (int k = 0; k < 1000 && !ok; k++) {
			ok = ths[i].kind != FUTEX || in_syscall(ths[i].tid, SYS_futex);
			if (!ok)
				sleep_ms(5);
		}
		if (!ok)
			die("worker %d (tid %d) is not blocked in futex after 5 s", i, ths[i].tid);
	}
	int n = proc_threads();
	if (n != nthreads + 1)
		die("/proc/self/status says Threads: %d, want %d", n, nthreads + 1);
	say("threads: %d workers ready (pid %d)", nthreads, getpid());
	for (int i = 0; i < nthreads; i++)
		if (ths[i].kind == SPIN)
			say("threads: worker %d spins as tid %d", i, ths[i].tid);
	victim_ready(argv[1]);

	victim_wait();

	/* At SIGTERM: all threads are there and running. */
	n = proc_threads();
	if (n != nthreads + 1)
		tfail(mainth, "/proc/self/status says Threads: %d, want %d", n, nthreads + 1);
	static uint64_t before[MAX_THREADS];
	for (int i = 0; i < nthreads; i++)
		before[i] = ths[i].count;
	/* Each must move on: a stuck thread never does, a running one may
	 * wait for a core a while when the machine is loaded (40 spinning
	 * threads of two victims on 2 cores), so the bound is generous. */
	const long progress_ms = 5000;
	for (long waited = 0;; waited += sleep_interval_ms) {
		int stuck = 0;
		for (int i = 0; i < nthreads; i++)
			if (ths[i].kind != FUTEX && ths[i].count == before[i])
				stuck++;
		if (!stuck || waited >= progress_ms)
			break;
		sleep_ms(sleep_interval_ms);
	}
	for (int i = 0; i < nthreads; i++)
		if (ths[i].kind != FUTEX && ths[i].count == before[i])
			tfail(&ths[i], "made no progress in %ld ms (counter stuck at %llu)", progress_ms,
			      (unsigned long long)before[i]);

	check_common(mainth, &main_mask, main_name, pattern(99999, 7), main_alt, main_rh, main_rl, main_ta, main_rseq,
		     main_rseq_len);

	/* The check phase: every worker checks itself and exits. */
	__atomic_store_n(&phase, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&fword, 1, __ATOMIC_SEQ_CST);
	futex(&fword, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);

	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	int joined = 0;
	for (int i = 0; i < nthreads; i++) {
		void *ret = NULL;
		int e = pthread_timedjoin_np(ths[i].pt, &ret, &deadline);
		if (e == ETIMEDOUT) {
			if (ths[i].result)
				tfail(&ths[i], "finished its check but cannot be joined: clear_child_tid lost?");
			else
				tfail(&ths[i], "did not finish its check in 10 s (stuck in its wait?)");
			continue;
		}
		if (e) {
			tfail(&ths[i], "pthread_join: %s", strerror(e));
			continue;
		}
		joined++;
		if (ret != (void *)(uintptr_t)(i + 1))
			tfail(&ths[i], "returned %p, want %#x", ret, i + 1);
		if (ths[i].result != 1 && ths[i].result != 2)
			tfail(&ths[i], "exited without its check");
	}

	if (joined == nthreads) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 2;
		int e = pthread_mutex_timedlock(&robust, &dl);
		if (e == EOWNERDEAD)
			pthread_mutex_consistent(&robust);
		else
			tfail(mainth, "locking the robust mutex worker 0 died holding gave %s, want EOWNERDEAD (robust list lost?)",
			      strerror(e));
		for (int k = 0; k < 100 && (n = proc_threads()) != 1; k++)
			sleep_ms(10);
		if (n != 1)
			tfail(mainth, "/proc/self/status says Threads: %d after joining every worker, want 1", n);
	}

	sigset_t rt2;
	sigemptyset(&rt2);
	sigaddset(&rt2, SIGRTMIN + 2);
	siginfo_t si;
	struct timespec zero = { 0, 0 };
	if (sigtimedwait(&rt2, &si, &zero) != SIGRTMIN + 2)
		tfail(mainth, "the process-wide pending SIGRTMIN+2 is gone");
	else if (si.si_value.sival_int != 0xC0FFEE)
		tfail(mainth, "the process-wide SIGRTMIN+2 has si_value %#x, want 0xc0ffee", si.si_value.sival_int);

	victim_failures += nfail;
	say("threads: %d workers checked, %d failure(s)", nthreads, nfail);
	victim_finish();
}
