/*
 * tree: a process tree of 3 levels and 20 live processes, with its own
 * sessions and process groups, 2 zombies and memory shared by all.
 *
 *   tree READY [memfd]
 *
 * The tree (name = comm; R keeps the comm "tree"):
 *
 *   R   root: child subreaper; session and group leader (started by setsid)
 *   |-- A    group R; sets no_new_privs, inherited by A1-A3
 *   |   |-- A1   own group A1
 *   |   |-- A2   joins group A1
 *   |   `-- A3   group R; pdeath_signal SIGUSR2; dumpable 0
 *   |-- B    setsid: session B, group B
 *   |   |-- B1   own group B1 (session B)
 *   |   |-- B2   group B
 *   |   `-- B3   joins group B1
 *   |-- C    own group C (session R)
 *   |   |-- C1, C2   group C
 *   |   `-- Z2   zombie: killed by SIGUSR1, never reaped before the check
 *   |-- Z1   zombie: exit(3), never reaped before the check
 *   |-- D1, D2   born to D (own group D, session R), which exited: group D
 *   |            has no leader; re-parented to R (subreaper)
 *   |-- E1, E2, E3   born to E (setsid: session E), which exited: session E
 *   |            and group E have no leader; E1 made its own group E1
 *   `-- F    group R
 *       `-- F1, F2
 *
 * D and E were reaped by R; their pids are held by no task.
 * Levels: R; A B C D1 D2 E1 E2 E3 F Z1; A1-3 B1-3 C1 C2 Z2 F1 F2.
 *
 * Memory: one MAP_SHARED|MAP_ANONYMOUS region (a header page with one slot
 * per member, then one data page per member, written by that member) that
 * every member maps from R; with "memfd", a MAP_SHARED mapping of a memfd
 * (fd closed) too, one page per member. A 4 MiB private region written by R
 * before any fork (copy-on-write in all); one private page per member.
 *
 * READY is created once every member has set itself up and recorded its
 * pid, ppid, pgid and sid in its slot, R has checked the shape of the tree,
 * and both zombies are zombies.
 *
 * On SIGTERM (to R only) R sets the check phase in the shared header; every
 * member sees it there (so the region must still be shared), checks its
 * pid, ppid, pgid, sid, comm, prctl attributes, every member's data page, the
 * private memory, and writes its result and a token into its slot. C checks
 * that Z2 is still a zombie killed by SIGUSR1 and reaps it; R does the same
 * for Z1 (exit status 3). Each parent signals its children too (only tasks
 * /proc shows as its own children) and reaps them. R waits up to 8 s for
 * every report, and exits 0 only if all 20 members reported PASS with the
 * right token and every child ended with status 0. A member woken by SIGTERM
 * that does not see the check phase in the shared region reports so.
 *
 * A member whose parent changes before the check (its parent died) prints
 * a FAIL line and exits 1; R exits 1 if it finds itself orphaned to init in
 * the pid namespace it started in (the harness was killed): a killed test
 * leaves no tree behind.
 */
#include "victim.h"
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define NMEM 20
#define PAGE 4096
#define COW_WORDS (4UL << 20 >> 3)
#define MAGIC 0x7472656573686d31ULL /* "treeshm1" */

enum { R, A, A1, A2, A3, B, B1, B2, B3, C, C1, C2, D1, D2, E1, E2, E3, F, F1, F2 };
#define REF_D (-1)
#define REF_E (-2)
#define CREATOR_D (-1)
#define CREATOR_E (-2)

struct member {
	const char *name;
	int creator; /* who forks it; -1 D, -2 E */
	int parent;  /* its parent when the tree is complete */
	int pg, sid; /* member whose pid is its pgid / sid; REF_D, REF_E */
};

static const struct member tree[NMEM] = {
	[R] = { "tree", -9, -9, R, R },
	[A] = { "tree-A", R, R, R, R },
	[A1] = { "tree-A1", A, A, A1, R },
	[A2] = { "tree-A2", A, A, A1, R },
	[A3] = { "tree-A3", A, A, R, R },
	[B] = { "tree-B", R, R, B, B },
	[B1] = { "tree-B1", B, B, B1, B },
	[B2] = { "tree-B2", B, B, B, B },
	[B3] = { "tree-B3", B, B, B1, B },
	[C] = { "tree-C", R, R, C, R },
	[C1] = { "tree-C1", C, C, C, R },
	[C2] = { "tree-C2", C, C, C, R },
	[D1] = { "tree-D1", CREATOR_D, R, REF_D, R },
	[D2] = { "tree-D2", CREATOR_D, R, REF_D, R },
	[E1] = { "tree-E1", CREATOR_E, R, E1, REF_E },
	[E2] = { "tree-E2", CREATOR_E, R, REF_E, REF_E },
	[E3] = { "tree-E3", CREATOR_E, R, REF_E, REF_E },
	[F] = { "tree-F", R, R, R, R },
	[F1] = { "tree-F1", F, F, R, R },
	[F2] = { "tree-F2", F, F, R, R },
};

struct slot {
	int pid, ppid, pgid, sid;
	int ready;
	int result; /* 0 none yet, 1 pass, 2 fail */
	uint64_t token;
};

struct hdr {
	uint64_t magic;
	int phase; /* 0 run, 1 check */
	int d_pid, e_pid, z1_pid, z2_pid;
	int use_memfd;
	struct slot slot[NMEM];
};
_Static_assert(sizeof(struct hdr) <= PAGE, "header fits one page");

static struct hdr *hdr;
static char *shdata;  /* NMEM pages after the header */
static char *mfdata;  /* memfd mapping: NMEM pages, or NULL */
static uint64_t *cow; /* 4 MiB private, written by R before the forks */
static uint64_t mine[PAGE / 8];
static int me;

#define MFAIL(fmt, ...) fail("%s (pid %d): " fmt, tree[me].name, (int)getpid(), ##__VA_ARGS__)

static int ref_pid(int ref)
{
	if (ref == REF_D)
		return hdr->d_pid;
	if (ref == REF_E)
		return hdr->e_pid;
	return hdr->slot[ref].pid;
}

static int load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

static void wait_ready(int idx)
{
	for (int i = 0; i < 1000 && !load(&hdr->slot[idx].ready); i++)
		sleep_ms(10);
	if (!load(&hdr->slot[idx].ready))
		die("%s not ready after 10 s", tree[idx].name);
}

/* is_zombie_child waits (WNOWAIT) for pid to be a zombie, up to ms. */
static int zombie_info(int pid, siginfo_t *si, int ms)
{
	for (int i = 0; i <= ms / 5; i++) {
		memset(si, 0, sizeof(*si));
		if (waitid(P_PID, pid, si, WEXITED | WNOHANG | WNOWAIT) == 0 && si->si_pid == pid)
			return 1;
		if (ms)
			sleep_ms(5);
	}
	return 0;
}

/* own_child tells whether /proc shows pid as a live child of ours. */
static int own_child(int pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	char state;
	int ppid;
	if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2)
		return 0;
	return ppid == getpid() && state != 'Z' && state != 'X';
}

static void member(int idx);

/*
 * A tree must not outlive a harness that was killed (a test timeout skips
 * every cleanup). The root's parent turns into init of its own pid
 * namespace only then: it is the test process (a subreaper) or stasis
 * restore otherwise, and in a copy restored into a new pid namespace the
 * namespace differs from the one recorded at start. Members leave when
 * their parent changes.
 */
static char start_pidns[64];

static void remember_pidns(void)
{
	if (readlink("/proc/self/ns/pid", start_pidns, sizeof(start_pidns) - 1) < 0)
		start_pidns[0] = 0;
}

static int harness_gone(void)
{
	char now[64] = "";

	if (getppid() != 1 || !start_pidns[0])
		return 0;
	if (readlink("/proc/self/ns/pid", now, sizeof(now) - 1) < 0)
		return 0;
	return strcmp(now, start_pidns) == 0;
}

/*
 * R's setup may fail (die) with members already running: they would outlive
 * it. R kills them if it exits before READY (after READY the harness knows
 * the tree and cleans up; a pid may have been reused by then).
 */
static int root_pid, setup_done;

static void kill_members(void)
{
	if (getpid() != root_pid || setup_done)
		return;
	for (int i = 1; i < NMEM; i++)
		if (hdr->slot[i].pid > 0)
			kill(hdr->slot[i].pid, SIGKILL);
	if (hdr->z1_pid > 0)
		kill(hdr->z1_pid, SIGKILL);
}

static int spawn(int idx)
{
	int pid = fork();
	if (pid < 0)
		die("fork %s: %s", tree[idx].name, strerror(errno));
	if (pid == 0)
		member(idx); /* never returns */
	return pid;
}

static int prctl_get(int op)
{
	int v = -1;
	if (op == PR_GET_PDEATHSIG || op == PR_GET_CHILD_SUBREAPER) {
		if (prctl(op, &v, 0, 0, 0))
			return -1;
		return v;
	}
	return prctl(op, 0, 0, 0, 0);
}

static void check_member(void)
{
	struct slot *s = &hdr->slot[me];
	char name[17] = "";

	if (getpid() != s->pid)
		MFAIL("getpid() is %d, was %d", (int)getpid(), s->pid);
	if (me != R && getppid() != s->ppid) /* R's parent is whoever restored it */
		MFAIL("getppid() is %d, was %d", (int)getppid(), s->ppid);
	if (getpgid(0) != s->pgid)
		MFAIL("getpgid(0) is %d, was %d", (int)getpgid(0), s->pgid);
	if (getsid(0) != s->sid)
		MFAIL("getsid(0) is %d, was %d", (int)getsid(0), s->sid);
	prctl(PR_GET_NAME, name);
	if (strcmp(name, tree[me].name))
		MFAIL("comm is \"%s\"", name);
	if (hdr->magic != MAGIC)
		MFAIL("shared header magic is %#llx", (unsigned long long)hdr->magic);
	for (int i = 0; i < NMEM; i++) {
		char what[64];
		snprintf(what, sizeof(what), "shared page of %s", tree[i].name);
		if (check_fill(what, (uint64_t *)(shdata + (size_t)i * PAGE), PAGE / 8, 100 + i))
			break;
		if (mfdata) {
			snprintf(what, sizeof(what), "memfd page of %s", tree[i].name);
			if (check_fill(what, (uint64_t *)(mfdata + (size_t)i * PAGE), PAGE / 8, 150 + i))
				break;
		}
	}
	check_fill("4 MiB private region inherited from R", cow, COW_WORDS, 55);
	check_fill("own private page", mine, PAGE / 8, 200 + me);

	int nnp = me == A || me == A1 || me == A2 || me == A3;
	if (prctl_get(PR_GET_NO_NEW_PRIVS) != nnp)
		MFAIL("no_new_privs is %d, want %d", prctl_get(PR_GET_NO_NEW_PRIVS), nnp);
	if (prctl_get(PR_GET_CHILD_SUBREAPER) != (me == R))
		MFAIL("child_subreaper is %d, want %d", prctl_get(PR_GET_CHILD_SUBREAPER), me == R);
	if (prctl_get(PR_GET_PDEATHSIG) != (me == A3 ? SIGUSR2 : 0))
		MFAIL("pdeath_signal is %d, want %d", prctl_get(PR_GET_PDEATHSIG), me == A3 ? SIGUSR2 : 0);
	if (prctl_get(PR_GET_DUMPABLE) != (me == A3 ? 0 : 1))
		MFAIL("dumpable is %d, want %d", prctl_get(PR_GET_DUMPABLE), me == A3 ? 0 : 1);

	int zpid = me == R ? hdr->z1_pid : me == C ? hdr->z2_pid : 0;
	if (zpid) {
		siginfo_t si;
		const char *zn = me == R ? "Z1" : "Z2";
		if (!zombie_info(zpid, &si, 0)) {
			MFAIL("child %s (pid %d) is not a zombie: %s", zn, zpid,
			      kill(zpid, 0) == 0 ? "it is alive" : "it is gone");
		} else {
			int code_ok = me == R ? si.si_code == CLD_EXITED && si.si_status == 3
					      : si.si_code == CLD_KILLED && si.si_status == SIGUSR1;
			if (!code_ok)
				MFAIL("zombie %s (pid %d): si_code %d si_status %d, want %s", zn, zpid, si.si_code,
				      si.si_status, me == R ? "CLD_EXITED 3" : "CLD_KILLED SIGUSR1");
			int st;
			if (waitpid(zpid, &st, WNOHANG) != zpid)
				MFAIL("waitpid(%s = %d): %s", zn, zpid, strerror(errno));
			else if (me == R ? !(WIFEXITED(st) && WEXITSTATUS(st) == 3)
					 : !(WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR1))
				MFAIL("zombie %s (pid %d) reaped with status %#x, want %s", zn, zpid, st,
				      me == R ? "exit 3" : "killed by SIGUSR1");
		}
	}
}

/* my_children lists the members whose parent is me (complete tree). */
static int my_children(int *out)
{
	int n = 0;
	for (int i = 1; i < NMEM; i++)
		if (tree[i].parent == me)
			out[n++] = i;
	return n;
}

/* reap_children waits up to ms for each member child of mine to exit 0. */
static void reap_children(int ms)
{
	int kids[NMEM], n = my_children(kids);
	for (int k = 0; k < n; k++) {
		int pid = hdr->slot[kids[k]].pid, st = 0, r = 0;
		for (int i = 0; i <= ms / 10; i++) {
			r = waitpid(pid, &st, WNOHANG);
			if (r != 0)
				break;
			ms -= 10;
			sleep_ms(10);
		}
		if (r == 0)
			MFAIL("child %s (pid %d) did not exit", tree[kids[k]].name, pid);
		else if (r < 0)
			MFAIL("waitpid(%s = %d): %s", tree[kids[k]].name, pid, strerror(errno));
		else if (!WIFEXITED(st) || WEXITSTATUS(st))
			MFAIL("child %s (pid %d) ended with status %#x", tree[kids[k]].name, pid, st);
	}
}

static void term_children(void)
{
	int kids[NMEM], n = my_children(kids);
	for (int k = 0; k < n; k++) {
		int pid = hdr->slot[kids[k]].pid;
		if (own_child(pid))
			kill(pid, SIGTERM);
	}
}

/* member_loop waits for the check phase, checks, reports and exits. */
static void __attribute__((noreturn)) member_loop(void)
{
	while (!load(&hdr->phase) && !got_term) {
		if (getppid() != hdr->slot[me].ppid) {
			MFAIL("its parent changed from %d to %d before the check: leaving", hdr->slot[me].ppid, (int)getppid());
			exit(1);
		}
		sleep_ms(10);
	}
	for (int i = 0; i < 200 && !load(&hdr->phase); i++)
		sleep_ms(10);
	if (!load(&hdr->phase))
		MFAIL("got SIGTERM but never saw the check phase in the MAP_SHARED region: not shared any more?");
	term_children();
	check_member();
	hdr->slot[me].token = pattern(me, 777);
	store(&hdr->slot[me].result, victim_failures ? 2 : 1);
	reap_children(10000);
	exit(victim_failures ? 1 : 0);
}

static void record(void)
{
	struct slot *s = &hdr->slot[me];

	fill(mine, PAGE / 8, 200 + me);
	fill((uint64_t *)(shdata + (size_t)me * PAGE), PAGE / 8, 100 + me);
	if (mfdata)
		fill((uint64_t *)(mfdata + (size_t)me * PAGE), PAGE / 8, 150 + me);
	s->pid = getpid();
	s->ppid = getppid();
	s->pgid = getpgid(0);
	s->sid = getsid(0);
	store(&s->ready, 1);
}

/* transient is D or E: it makes a group (D) or session (E), forks its
 * members and exits; R reaps it and inherits the members. */
static void __attribute__((noreturn)) transient(int which)
{
	prctl(PR_SET_NAME, which == CREATOR_D ? "tree-D" : "tree-E");
	if (which == CREATOR_D ? setpgid(0, 0) : setsid() < 0)
		die("%s: %s", which == CREATOR_D ? "setpgid D" : "setsid E", strerror(errno));
	for (int i = 0; i < NMEM; i++)
		if (tree[i].creator == which)
			spawn(i);
	_exit(0);
}

static void member(int idx)
{
	const struct member *m = &tree[idx];

	me = idx;
	victim_failures = 0;
	victim_init();
	hdr->slot[idx].pid = getpid(); /* its children may need it before record() */
	prctl(PR_SET_NAME, m->name);
	if (m->sid == idx) {
		if (setsid() < 0)
			die("%s: setsid: %s", m->name, strerror(errno));
	} else if (m->pg == idx) {
		if (setpgid(0, 0))
			die("%s: setpgid(0, 0): %s", m->name, strerror(errno));
	} else if (m->pg >= 0 && getpgid(0) != hdr->slot[m->pg].pid) {
		if (setpgid(0, hdr->slot[m->pg].pid))
			die("%s: setpgid(0, %d): %s", m->name, hdr->slot[m->pg].pid, strerror(errno));
	}
	if (idx == A && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("A: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	if (idx == A3 && (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0) || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)))
		die("A3: prctl: %s", strerror(errno));
	if (m->creator < 0) {
		/* Wait until the creator's exit re-parents us to R. */
		int root = hdr->slot[R].pid, i;
		for (i = 0; i < 1000 && getppid() != root; i++)
			sleep_ms(10);
		if (getppid() != root)
			die("%s: parent is %d, not R (%d), 10 s after its creator exited", m->name, (int)getppid(), root);
	}
	for (int i = 0; i < NMEM; i++) {
		if (tree[i].creator != idx || i == idx)
			continue;
		spawn(i);
		wait_ready(i);
	}
	if (idx == C) {
		int z = fork();
		if (z < 0)
			die("fork Z2: %s", strerror(errno));
		if (z == 0) {
			prctl(PR_SET_NAME, "tree-Z2");
			signal(SIGUSR1, SIG_DFL);
			kill(getpid(), SIGUSR1);
			_exit(99);
		}
		hdr->z2_pid = z;
		siginfo_t si;
		if (!zombie_info(z, &si, 5000))
			die("Z2 (pid %d) is not a zombie after 5 s", z);
	}
	record();
	member_loop();
}

/* check_shape verifies, before READY, that the tree is what it claims. */
static void check_shape(void)
{
	for (int i = 0; i < NMEM; i++) {
		const struct member *m = &tree[i];
		struct slot *s = &hdr->slot[i];
		int ppid = i == R ? s->ppid : hdr->slot[m->parent].pid;
		if (s->ppid != ppid || s->pgid != ref_pid(m->pg) || s->sid != ref_pid(m->sid))
			die("%s: ppid %d pgid %d sid %d, want %d %d %d", m->name, s->ppid, s->pgid, s->sid, ppid,
			    ref_pid(m->pg), ref_pid(m->sid));
	}
}

static void spawn_transient(int which, int *pid)
{
	int p = fork(), st;
	if (p < 0)
		die("fork: %s", strerror(errno));
	if (p == 0)
		transient(which);
	*pid = p;
	if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st))
		die("transient %c (pid %d) ended with status %#x", which == CREATOR_D ? 'D' : 'E', p, st);
	for (int i = 0; i < NMEM; i++)
		if (tree[i].creator == which)
			wait_ready(i);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: tree READY [memfd]");
	victim_init();
	remember_pidns();
	me = R;
	if (getsid(0) != getpid() || getpgid(0) != getpid())
		die("R must be a session leader (started with setsid)");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));

	char *sh = mmap(NULL, (size_t)(NMEM + 1) * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap shared: %s", strerror(errno));
	hdr = (struct hdr *)sh;
	shdata = sh + PAGE;
	hdr->magic = MAGIC;
	if (argc > 2 && !strcmp(argv[2], "memfd")) {
		int fd = memfd_create("tree-shared", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)NMEM * PAGE))
			die("memfd: %s", strerror(errno));
		mfdata = mmap(NULL, (size_t)NMEM * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (mfdata == MAP_FAILED)
			die("mmap memfd: %s", strerror(errno));
		close(fd);
		hdr->use_memfd = 1;
	}
	cow = mmap(NULL, COW_WORDS * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (cow == MAP_FAILED)
		die("mmap private: %s", strerror(errno));
	fill(cow, COW_WORDS, 55);
	hdr->slot[R].pid = root_pid = getpid();
	atexit(kill_members);

	for (int i = 1; i < NMEM; i++) {
		if (tree[i].creator != R)
			continue;
		if (i == F) {
			/* Z1, D and E come before F: fork order is pid order. */
			int z = fork();
			if (z < 0)
				die("fork Z1: %s", strerror(errno));
			if (z == 0) {
				prctl(PR_SET_NAME, "tree-Z1");
				_exit(3);
			}
			hdr->z1_pid = z;
			spawn_transient(CREATOR_D, &hdr->d_pid);
			spawn_transient(CREATOR_E, &hdr->e_pid);
		}
		spawn(i);
		wait_ready(i);
	}
	siginfo_t si;
	if (!zombie_info(hdr->z1_pid, &si, 5000))
		die("Z1 (pid %d) is not a zombie after 5 s", hdr->z1_pid);
	record();
	check_shape();
	say("tree: R %d, 20 members, zombies %d %d, leaderless group D %d, session E %d%s; shared region at %p",
	    getpid(), hdr->z1_pid, hdr->z2_pid, hdr->d_pid, hdr->e_pid, mfdata ? ", memfd" : "", (void *)hdr);
	setup_done = 1;
	victim_ready(argv[1]);

	while (!got_term) {
		if (harness_gone()) {
			MFAIL("orphaned (parent is init): the harness is gone, leaving");
			exit(1);
		}
		sleep_ms(10);
	}
	store(&hdr->phase, 1);
	term_children();
	check_member();

	/* Every member reports through its slot. */
	for (int i = 0; i < 800; i++) {
		int all = 1;
		for (int k = 1; k < NMEM; k++)
			all &= load(&hdr->slot[k].result) != 0;
		if (all)
			break;
		sleep_ms(10);
	}
	int bad = 0;
	for (int k = 1; k < NMEM; k++) {
		struct slot *s = &hdr->slot[k];
		int r = load(&s->result);
		if (r == 0)
			MFAIL("%s (pid %d) did not report in 8 s", tree[k].name, s->pid);
		else if (r != 1)
			bad++;
		else if (s->token != pattern(k, 777))
			MFAIL("%s (pid %d) reported PASS with token %#llx: its write did not reach R", tree[k].name, s->pid,
			      (unsigned long long)s->token);
	}
	if (bad)
		MFAIL("%d member(s) reported failures (their FAIL lines are above)", bad);
	reap_children(5000);
	say("tree: %d member(s) checked", NMEM);
	victim_finish();
}
