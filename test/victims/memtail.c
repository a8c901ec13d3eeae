/*
 * memtail: the long tail of memory and task state (issue 15), one
 * scenario per run.
 *
 *   memtail READY SCENARIO
 *
 * - novdso: unmaps its [vvar], [vvar_vclock] and [vdso] (it calls no
 *   vDSO function after that); checks /proc/self/maps still has none of
 *   them and that 64 KiB of patterned memory is intact.
 * - droppable: 16 pages MAP_DROPPABLE|MAP_ANONYMOUS, patterned; checks
 *   the pattern and that the mapping is still droppable (smaps VmFlags
 *   "dp", and "wf": such memory is wiped in a child).
 * - guard: 8 patterned anonymous pages with guard regions
 *   (MADV_GUARD_INSTALL) on pages 2-3 and 6; checks the other pages and
 *   that each guard page still faults (SIGSEGV on a read) and the others
 *   do not.
 * - memfdpriv: a 4-page memfd (fd 50, pattern 1) mapped MAP_PRIVATE
 *   read-write, its third page written through the mapping (pattern 2);
 *   checks the mapping (pages 0, 1, 3 the memfd's, page 2 its own), the
 *   memfd (pattern 1 everywhere), and that pages it never wrote still
 *   follow the memfd (a pwrite to page 0 shows in the mapping).
 * - memfdpriv-closed: the same, but fd 50 closed once the memfd is also
 *   mapped MAP_SHARED (through which it checks the memfd).
 * - memfdpriv-only: the private mapping at offset 1 page of a 5-page
 *   memfd, fd closed: the mapping is all that holds the memfd.
 * - execmemfd: /bin/true copied into a memfd (MFD_CLOEXEC) kept at fd 50
 *   as memfd_create made it (read-write, but not counted as a writer of
 *   the inode, which a reopen read-write is); checks that a child can
 *   execveat(50, "", AT_EMPTY_PATH) it (not ETXTBSY) and exits 0.
 * - execmemfd-ro: the same, fd 50 a read-only reopen (writable fd closed).
 * - sched: main thread SCHED_RR priority 7 with SCHED_RESET_ON_FORK and
 *   nice 3; a second thread SCHED_BATCH nice 7, a third SCHED_OTHER nice 0;
 *   checks all three with sched_getattr and getpriority.
 * - loginuid: writes 4242 to /proc/self/loginuid; checks it reads 4242.
 * - sigtrap: SIGTRAP blocked and sent to itself with kill(), so pending; checks it is still
 *   pending and blocked, then takes it with sigtimedwait (si_code SI_USER,
 *   si_pid itself).
 * - sparse: a 1 TiB PROT_NONE reservation (MAP_NORESERVE) of which 4
 *   pages (first, 1000, 2^27, last) were made read-write and patterned,
 *   as mariadbd's buffer pool; checks them and that the rest still faults.
 * - zombie-ign: a child that exited with 7 and is not reaped, then SIGCHLD
 *   set to SIG_IGN (which reaps children that exit later, not it);
 *   checks waitpid still gets its status. zombie-thread: the child forked
 *   by a second thread, which stays; zombie-thread-gone: which exits;
 *   zombie-thread-leader: a child whose leader left by pthread_exit while
 *   a thread of it runs (a zombie leader with a live thread: both tools
 *   refuse to dump it); checks the child still has 2 threads and can be
 *   killed and reaped.
 */
#include "victim.h"
#include <pthread.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define PG 4096

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif
#ifndef SCHED_BATCH
#define SCHED_BATCH 3
#endif

static const char *scenario;
static uint64_t *area;

/* vma_flags copies the smaps VmFlags line of the VMA holding addr. */
static int vma_flags(void *addr, char *out, size_t n)
{
	static char buf[1 << 16];
	int fd = open("/proc/self/smaps", O_RDONLY);
	size_t len = 0;
	ssize_t r;
	int in = 0;

	if (fd < 0)
		return -1;
	while ((r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += r;
	close(fd);
	buf[len] = 0;
	for (char *l = buf; l && *l; ) {
		char *nl = strchr(l, '\n');
		unsigned long s, e;

		if (nl)
			*nl = 0;
		if (sscanf(l, "%lx-%lx ", &s, &e) == 2 && strchr(l, '-') < strchr(l, ' '))
			in = (unsigned long)addr >= s && (unsigned long)addr < e;
		else if (in && !strncmp(l, "VmFlags:", 8)) {
			snprintf(out, n, "%s", l + 8);
			return 0;
		}
		l = nl ? nl + 1 : NULL;
	}
	return -1;
}

static int has_flag(const char *flags, const char *f)
{
	char pat[8];

	snprintf(pat, sizeof(pat), " %s", f);
	for (const char *p = flags; (p = strstr(p, pat)); p++)
		if (p[3] == ' ' || p[3] == 0)
			return 1;
	return 0;
}

/* ---- novdso ---- */

static int maps_has(const char *name)
{
	static char buf[1 << 16];
	int fd = open("/proc/self/maps", O_RDONLY);
	size_t len = 0;
	ssize_t r;

	if (fd < 0)
		return -1;
	while ((r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += r;
	close(fd);
	buf[len] = 0;
	return strstr(buf, name) != NULL;
}

static void setup_novdso(void)
{
	static char buf[1 << 16];
	int fd = open("/proc/self/maps", O_RDONLY);
	size_t len = 0;
	ssize_t r;
	unsigned long s[8], e[8];
	int n = 0;

	if (fd < 0)
		die("open maps: %s", strerror(errno));
	while ((r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += r;
	close(fd);
	buf[len] = 0;
	for (char *l = buf; l && *l && n < 8; ) {
		char *nl = strchr(l, '\n');

		if (nl)
			*nl = 0;
		if (strstr(l, "[vdso]") || strstr(l, "[vvar]") || strstr(l, "[vvar_vclock]")) {
			if (sscanf(l, "%lx-%lx", &s[n], &e[n]) == 2)
				n++;
		}
		l = nl ? nl + 1 : NULL;
	}
	if (n == 0)
		die("no vDSO to unmap");
	for (int i = 0; i < n; i++)
		if (munmap((void *)s[i], e[i] - s[i]))
			die("munmap vdso part %lx: %s", s[i], strerror(errno));
	area = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	fill(area, 16 * PG / 8, 11);
	if (maps_has("[vdso]") || maps_has("[vvar"))
		die("vDSO still mapped");
}

static void check_novdso(void)
{
	if (maps_has("[vdso]"))
		fail("a [vdso] is mapped after the restore");
	if (maps_has("[vvar"))
		fail("a [vvar] is mapped after the restore");
	check_fill("novdso memory", area, 16 * PG / 8, 11);
}

/* ---- droppable ---- */

static void setup_droppable(void)
{
	area = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		die("mmap MAP_DROPPABLE: %s", strerror(errno));
	fill(area, 16 * PG / 8, 12);
}

static void check_droppable(void)
{
	char f[256];

	check_fill("droppable memory", area, 16 * PG / 8, 12);
	if (vma_flags(area, f, sizeof(f)))
		fail("droppable: no VMA at %p", (void *)area);
	else {
		if (!has_flag(f, "dp"))
			fail("droppable: VmFlags%s lack dp (not droppable any more)", f);
		if (!has_flag(f, "wf"))
			fail("droppable: VmFlags%s lack wf", f);
	}
}

/* ---- guard ---- */

static sigjmp_buf probe_jmp;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(probe_jmp, 1);
}

/* faults reports whether reading addr raises SIGSEGV. */
static int faults(volatile uint64_t *addr)
{
	struct sigaction sa, old;
	int r;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_segv;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, &old);
	if (sigsetjmp(probe_jmp, 1) == 0) {
		(void)*addr;
		r = 0;
	} else
		r = 1;
	sigaction(SIGSEGV, &old, NULL);
	return r;
}

static int is_guard(int i) { return i == 2 || i == 3 || i == 6; }

static void setup_guard(void)
{
	area = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	fill(area, 8 * PG / 8, 13);
	if (madvise((char *)area + 2 * PG, 2 * PG, MADV_GUARD_INSTALL) ||
	    madvise((char *)area + 6 * PG, PG, MADV_GUARD_INSTALL))
		die("MADV_GUARD_INSTALL: %s", strerror(errno));
	if (!faults(area + 2 * PG / 8))
		die("guard page 2 does not fault");
}

static void check_guard(void)
{
	for (int i = 0; i < 8; i++) {
		uint64_t *p = area + i * PG / 8;
		int f = faults(p);

		if (is_guard(i) && !f)
			fail("guard: page %d reads without a fault: its guard region is gone", i);
		if (!is_guard(i) && f)
			fail("guard: page %d faults", i);
		if (!is_guard(i) && !f)
			for (int w = 0; w < PG / 8; w++)
				if (p[w] != pattern(13, i * PG / 8 + w)) {
					fail("guard: page %d word %d is %#llx", i, w, (unsigned long long)p[w]);
					break;
				}
	}
}

/* ---- memfdpriv ---- */

static int memfd(const char *name, unsigned flags)
{
	return syscall(SYS_memfd_create, name, flags);
}

static uint64_t *shared_view;

static void setup_memfdpriv(void)
{
	static uint64_t buf[4 * PG / 8];

	int only = !strcmp(scenario, "memfdpriv-only");

	move_to(memfd("memtail-priv", 0), 50);
	fill(buf, 4 * PG / 8, 14);
	if (only && pwrite(50, buf, PG, 0) != PG) /* the page before the mapping */
		die("pwrite memfd: %s", strerror(errno));
	if (pwrite(50, buf, sizeof(buf), only ? PG : 0) != sizeof(buf))
		die("pwrite memfd: %s", strerror(errno));
	area = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, 50, only ? PG : 0);
	if (area == MAP_FAILED)
		die("mmap memfd private: %s", strerror(errno));
	if (*(volatile uint64_t *)&area[0] + *(volatile uint64_t *)&area[PG / 8] == 1) /* read: shared pages mapped */
		say("unlikely");
	fill(area + 2 * PG / 8, PG / 8, 15);
	if (!strcmp(scenario, "memfdpriv-closed")) {
		shared_view = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, 50, 0);
		if (shared_view == MAP_FAILED)
			die("mmap memfd shared: %s", strerror(errno));
		close(50);
	}
	if (only)
		close(50);
}

static void check_memfdpriv(void)
{
	static uint64_t buf[4 * PG / 8];

	for (int i = 0; i < 4; i++) {
		char what[64];

		snprintf(what, sizeof(what), "private memfd mapping page %d", i);
		if (i == 2)
			check_fill(what, area + i * PG / 8, PG / 8, 15);
		else
			for (int w = 0; w < PG / 8; w++)
				if (area[i * PG / 8 + w] != pattern(14, i * PG / 8 + w)) {
					fail("%s: word %d is %#llx", what, w, (unsigned long long)area[i * PG / 8 + w]);
					break;
				}
	}
	if (!strcmp(scenario, "memfdpriv-only"))
		return;
	if (shared_view) {
		check_fill("memfd content (shared mapping)", shared_view, 4 * PG / 8, 14);
		shared_view[0] = 0x5eed;
		if (area[0] != 0x5eed)
			fail("private page 0 no longer follows the memfd (a private copy was made at restore)");
		return;
	}
	if (pread(50, buf, sizeof(buf), 0) != sizeof(buf))
		fail("pread memfd: %s", strerror(errno));
	else
		check_fill("memfd content", buf, 4 * PG / 8, 14);
	buf[0] = 0x5eed;
	if (pwrite(50, buf, 8, 0) != 8)
		fail("pwrite memfd: %s", strerror(errno));
	else if (area[0] != 0x5eed)
		fail("private page 0 no longer follows the memfd (a private copy was made at restore)");
}

/* ---- execmemfd ---- */

static void setup_execmemfd(void)
{
	static char buf[1 << 16];
	int in = open("/bin/true", O_RDONLY), fd = memfd("memtail-exe", MFD_CLOEXEC);
	ssize_t n;
	char p[64];

	if (in < 0 || fd < 0)
		die("open /bin/true or memfd: %s", strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(fd, buf, n) != n)
			die("write memfd: %s", strerror(errno));
	close(in);
	if (!strcmp(scenario, "execmemfd-ro")) {
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		move_to(open(p, O_RDONLY | O_CLOEXEC), 50);
		close(fd);
	} else
		move_to(fd, 50);
}

static void check_execmemfd(void)
{
	char *argv[] = { "true", NULL }, *envp[] = { NULL };
	int st;
	pid_t c = fork();

	if (c < 0) {
		fail("fork: %s", strerror(errno));
		return;
	}
	if (c == 0) {
		syscall(SYS_execveat, 50, "", argv, envp, AT_EMPTY_PATH);
		_exit(100 + errno);
	}
	if (waitpid(c, &st, 0) != c)
		fail("waitpid: %s", strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("execveat of the memfd: status %#x (exit %d = 100 + errno %d)", st, WEXITSTATUS(st), WEXITSTATUS(st) - 100);
}

/* ---- sched ---- */

struct sched_attr_k {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t prio;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

static volatile pid_t worker_tid, plain_tid;
static volatile int worker_stop;

/* sched_worker runs SCHED_BATCH nice 7, or with arg set, as it was
 * created: SCHED_OTHER nice 0, which a restore must give it back even
 * when the restorer runs under another policy. */
static void *sched_worker(void *arg)
{
	struct sched_param sp = { 0 };

	if (arg) {
		if (sched_setscheduler(0, SCHED_OTHER, &sp) || setpriority(PRIO_PROCESS, 0, 0))
			die("plain worker: sched_setscheduler/setpriority: %s", strerror(errno));
		plain_tid = gettid();
	} else {
		if (sched_setscheduler(0, SCHED_BATCH, &sp) || setpriority(PRIO_PROCESS, 0, 7))
			die("worker: sched_setscheduler/setpriority: %s", strerror(errno));
		worker_tid = gettid();
	}
	while (!worker_stop)
		sleep_ms(10);
	return NULL;
}

static void check_sched_of(pid_t tid, const char *who, uint32_t policy, uint64_t flags, uint32_t prio, int nice)
{
	struct sched_attr_k a;

	memset(&a, 0, sizeof(a));
	if (syscall(SYS_sched_getattr, tid, &a, sizeof(a), 0)) {
		fail("%s: sched_getattr: %s", who, strerror(errno));
		return;
	}
	if (a.policy != policy || a.flags != flags || a.prio != prio)
		fail("%s: policy %u flags %#llx priority %u, want %u %#llx %u", who, a.policy,
		     (unsigned long long)a.flags, a.prio, policy, (unsigned long long)flags, prio);
	errno = 0;
	int n = getpriority(PRIO_PROCESS, tid);
	if (n != nice)
		fail("%s: nice %d, want %d", who, n, nice);
}

static void setup_sched(void)
{
	struct sched_param sp = { .sched_priority = 7 };
	pthread_t th;

	if (setpriority(PRIO_PROCESS, 0, 3))
		die("setpriority: %s", strerror(errno));
	if (sched_setscheduler(0, SCHED_RR | SCHED_RESET_ON_FORK, &sp))
		die("sched_setscheduler: %s", strerror(errno));
	if (pthread_create(&th, NULL, sched_worker, NULL) || pthread_create(&th, NULL, sched_worker, "plain"))
		die("pthread_create");
	while (!worker_tid || !plain_tid)
		sleep_ms(1);
}

static void check_sched(void)
{
	check_sched_of(0, "main thread", SCHED_RR, 1 /* SCHED_FLAG_RESET_ON_FORK */, 7, 3);
	check_sched_of(worker_tid, "worker thread", SCHED_BATCH, 0, 0, 7);
	check_sched_of(plain_tid, "plain thread", SCHED_OTHER, 0, 0, 0);
}

/* ---- loginuid ---- */

static unsigned long read_loginuid(void)
{
	char b[32] = "";
	int fd = open("/proc/self/loginuid", O_RDONLY);

	if (fd < 0 || read(fd, b, sizeof(b) - 1) <= 0)
		return 0;
	close(fd);
	return strtoul(b, NULL, 10);
}

static void setup_loginuid(void)
{
	int fd = open("/proc/self/loginuid", O_WRONLY);

	if (fd < 0 || write(fd, "4242", 4) != 4)
		die("write /proc/self/loginuid: %s", strerror(errno));
	close(fd);
	if (read_loginuid() != 4242)
		die("loginuid not set");
}

static void check_loginuid(void)
{
	unsigned long u = read_loginuid();

	if (u != 4242)
		fail("loginuid %lu, want 4242", u);
}

/* ---- sigtrap ---- */

static void setup_sigtrap(void)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGTRAP);
	if (sigprocmask(SIG_BLOCK, &s, NULL))
		die("sigprocmask: %s", strerror(errno));
	if (kill(getpid(), SIGTRAP))
		die("kill: %s", strerror(errno));
}

static void check_sigtrap(void)
{
	sigset_t s, cur, pend;
	siginfo_t si;
	struct timespec ts = { 0, 0 };

	sigemptyset(&s);
	sigaddset(&s, SIGTRAP);
	sigprocmask(SIG_BLOCK, NULL, &cur);
	if (!sigismember(&cur, SIGTRAP))
		fail("SIGTRAP is no longer blocked");
	sigpending(&pend);
	if (!sigismember(&pend, SIGTRAP)) {
		fail("the pending SIGTRAP is gone");
		return;
	}
	if (sigtimedwait(&s, &si, &ts) != SIGTRAP)
		fail("sigtimedwait: %s", strerror(errno));
	else if (si.si_code != SI_USER || si.si_pid != victim_pid)
		fail("SIGTRAP si_code %d si_pid %d, want SI_USER from %d", si.si_code, si.si_pid, victim_pid);
}

/* ---- sparse ---- */

#define SPARSE_SIZE (1ULL << 40)
static const uint64_t sparse_pages[] = { 0, 1000, 1ULL << 27, (SPARSE_SIZE >> 12) - 1 };

static void setup_sparse(void)
{
	char *r = mmap(NULL, SPARSE_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (r == MAP_FAILED)
		die("mmap 1 TiB PROT_NONE: %s", strerror(errno));
	area = (uint64_t *)r;
	for (unsigned i = 0; i < sizeof(sparse_pages) / sizeof(sparse_pages[0]); i++) {
		uint64_t *p = (uint64_t *)(r + sparse_pages[i] * PG);

		if (mprotect(p, PG, PROT_READ | PROT_WRITE))
			die("mprotect: %s", strerror(errno));
		fill(p, PG / 8, 20 + i);
	}
	say("sparse reservation at %p", (void *)r);
}

static void check_sparse(void)
{
	char *r = (char *)area;
	char f[256];

	for (unsigned i = 0; i < sizeof(sparse_pages) / sizeof(sparse_pages[0]); i++) {
		char what[64];

		snprintf(what, sizeof(what), "sparse page %llu", (unsigned long long)sparse_pages[i]);
		check_fill(what, (uint64_t *)(r + sparse_pages[i] * PG), PG / 8, 20 + i);
	}
	if (!faults((uint64_t *)(r + 2 * PG)))
		fail("sparse: page 2 of the reservation is readable, not PROT_NONE");
	if (vma_flags(r + (1ULL << 30), f, sizeof(f)))
		fail("sparse: no VMA in the middle of the reservation");
}

/* ---- zombie ---- */

static pid_t zombie;

static void *zombie_worker(void *arg)
{
	(void)arg;
	for (;;)
		sleep_ms(10);
	return NULL;
}

static void *zombie_forker(void *arg)
{
	(void)arg;
	zombie = fork();
	if (zombie == 0) {
		if (!strcmp(scenario, "zombie-thread-leader")) {
			/* the child's leader leaves, a thread of it runs on
			 * (and dies with the victim: pdeath signal) */
			pthread_t th;

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			pthread_create(&th, NULL, zombie_worker, NULL);
			pthread_exit(NULL);
		}
		_exit(7);
	}
	if (!strcmp(scenario, "zombie-thread-leader"))
		return NULL;
	if (strcmp(scenario, "zombie-thread-gone"))
		for (;;)
			sleep_ms(10);
	return NULL;
}

static void setup_zombie(void)
{
	siginfo_t si;

	if (!strcmp(scenario, "zombie-thread-leader")) {
		char p[64];

		zombie_forker(NULL);
		for (int i = 0; i < 1000; i++) {
			char st[256] = "";
			int fd;

			snprintf(p, sizeof(p), "/proc/%d/stat", zombie);
			fd = open(p, O_RDONLY);
			if (fd >= 0) {
				if (read(fd, st, sizeof(st) - 1) < 0)
					st[0] = 0;
				close(fd);
			}
			if (strstr(st, ") Z "))
				break;
			sleep_ms(2);
		}
		say("zombie leader %d", zombie);
		return;
	}
	if (!strncmp(scenario, "zombie-thread", 13)) {
		pthread_t th;

		if (pthread_create(&th, NULL, zombie_forker, NULL))
			die("pthread_create");
		while (!zombie)
			sleep_ms(1);
	} else
		zombie = fork();
	if (zombie < 0)
		die("fork: %s", strerror(errno));
	if (zombie == 0)
		_exit(7);
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT))
		die("waitid: %s", strerror(errno));
	if (!strcmp(scenario, "zombie-ign"))
		signal(SIGCHLD, SIG_IGN);
	say("zombie %d", zombie);
}

static void check_zombie(void)
{
	int st;

	if (!strcmp(scenario, "zombie-thread-leader")) {
		char path[64], buf[2048] = "";
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/status", zombie);
		fd = open(path, O_RDONLY);
		if (fd < 0 || read(fd, buf, sizeof(buf) - 1) < 0)
			fail("zombie leader %d: no status: %s", zombie, strerror(errno));
		else if (!strstr(buf, "Threads:\t2\n"))
			fail("zombie leader %d: its live thread is gone", zombie);
		if (fd >= 0)
			close(fd);
		kill(zombie, SIGKILL);
		if (waitpid(zombie, &st, 0) != zombie)
			fail("zombie leader %d: waitpid: %s", zombie, strerror(errno));
		return;
	}

	if (waitpid(zombie, &st, WNOHANG) != zombie)
		fail("zombie %d: waitpid: %s", zombie, strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 7)
		fail("zombie %d: status %#x, want exit 7", zombie, st);
}

static const struct {
	const char *name;
	void (*setup)(void), (*check)(void);
} scenarios[] = {
	{ "novdso", setup_novdso, check_novdso },
	{ "droppable", setup_droppable, check_droppable },
	{ "guard", setup_guard, check_guard },
	{ "memfdpriv", setup_memfdpriv, check_memfdpriv },
	{ "memfdpriv-closed", setup_memfdpriv, check_memfdpriv },
	{ "memfdpriv-only", setup_memfdpriv, check_memfdpriv },
	{ "execmemfd", setup_execmemfd, check_execmemfd },
	{ "execmemfd-ro", setup_execmemfd, check_execmemfd },
	{ "sched", setup_sched, check_sched },
	{ "loginuid", setup_loginuid, check_loginuid },
	{ "sigtrap", setup_sigtrap, check_sigtrap },
	{ "sparse", setup_sparse, check_sparse },
	{ "zombie-ign", setup_zombie, check_zombie },
	{ "zombie-thread", setup_zombie, check_zombie },
	{ "zombie-thread-gone", setup_zombie, check_zombie },
	{ "zombie-thread-leader", setup_zombie, check_zombie },
};

int main(int argc, char **argv)
{
	int i, n = sizeof(scenarios) / sizeof(scenarios[0]);

	if (argc != 3)
		die("usage: memtail READY SCENARIO");
	scenario = argv[2];
	for (i = 0; i < n && strcmp(scenarios[i].name, scenario); i++)
		;
	if (i == n)
		die("unknown scenario %s", scenario);
	victim_init();
	scenarios[i].setup();
	victim_ready(argv[1]);
	victim_wait();
	scenarios[i].check();
	victim_finish();
}
