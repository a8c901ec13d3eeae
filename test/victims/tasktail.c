/*
 * tasktail: stopped and traced tasks, and kernel objects processes share
 * without being threads (issue 15), one scenario a run.
 *
 *   tasktail READY SCENARIO
 *
 * stopped      a child stopped by SIGSTOP (group stop), its stop already
 *              reported to the parent: after the restore it is stopped
 *              still (state T); SIGCONT wakes it and it exits 0.
 * stopped-mt   the same with a child of three threads.
 * stopped-unwaited  a child stopped by SIGSTOP whose stop the parent has
 *              not collected: after the restore waitpid(WUNTRACED)
 *              reports it stopped by SIGSTOP.
 * traced       a child that asked to be traced (PTRACE_TRACEME) and
 *              stopped itself, in ptrace-stop under its parent.
 * traced-run   the same child, let run on by PTRACE_CONT: traced, running.
 *              (Both: after the restore the parent still traces it,
 *              TracerPid is the parent, PTRACE_PEEKDATA reads its memory,
 *              PTRACE_DETACH lets it exit 0.)
 * share-fs     a child cloned with CLONE_FS (not CLONE_THREAD): after the
 *              restore a chdir and a umask of the parent are the child's.
 * share-sighand a child cloned with CLONE_VM|CLONE_SIGHAND (not
 *              CLONE_THREAD): after the restore a handler the parent
 *              installs is the child's, and memory is shared.
 * share-files-sib  two children cloned with CLONE_FILES, then the parent
 *              unshares its fd table: the siblings share one table that
 *              is not their parent's. After the restore an fd one opens
 *              is the other's, and not the parent's.
 * share-files-gc  a child forked (a table of its own) clones a grandchild
 *              with CLONE_FILES, which clones a great-grandchild so too:
 *              an fd the last one opens is the child's.
 *
 * The processes talk through a MAP_SHARED page (sh).
 */
#include "victim.h"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>

static struct shared {
	volatile int go, done, res, ready;
	volatile int step;
} *sh;

static pid_t kids[3];
static int nkids;
static char cwd0[4096];

static char *stack(void)
{
	char *s = mmap(NULL, 256 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (s == MAP_FAILED)
		die("mmap stack: %s", strerror(errno));
	return s + (256 << 10);
}

static void wait_go(void)
{
	while (!sh->go)
		sleep_ms(5);
}

/* child_ok waits for child pid and tells whether it exited 0. */
static void child_ok(pid_t pid, const char *what)
{
	int st;

	if (waitpid(pid, &st, __WALL) != pid)
		fail("waitpid %s %d: %s", what, pid, strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("%s %d ended with status %#x, want exit 0", what, pid, st);
}

static char state_of(pid_t pid, int *tracer)
{
	char p[64], buf[4096];
	int fd, n;
	char *s;

	snprintf(p, sizeof(p), "/proc/%d/status", pid);
	fd = open(p, O_RDONLY);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	s = strstr(buf, "TracerPid:");
	if (tracer && s)
		*tracer = atoi(s + 10);
	s = strstr(buf, "State:");
	return s ? s[7] : '?';
}

static int fs_child(void *a)
{
	(void)a;
	wait_go();
	char c[4096];

	if (umask(0) != 027 || !getcwd(c, sizeof(c)) || strcmp(c, "/"))
		_exit(1);
	_exit(0);
}

static void *spin(void *a)
{
	(void)a;
	wait_go();
	return NULL;
}

static void on_usr1(int s) { (void)s; }
static volatile uint64_t vm_word;

static int sighand_child(void *a)
{
	(void)a;
	struct sigaction sa;

	wait_go();
	if (sigaction(SIGUSR1, NULL, &sa) || sa.sa_handler != on_usr1)
		_exit(1);
	if (vm_word != 0x1234)
		_exit(2);
	vm_word = 0x5678;
	_exit(0);
}

/* files_child: step 1 opens fd 20 (the first sibling, or the deepest
 * of the chain); the others see it at step 2. */
static int files_child(void *a)
{
	long role = (long)a;

	wait_go();
	if (role == 1) {
		if (dup2(0, 20) != 20)
			_exit(1);
		sh->step = 1;
	} else {
		while (sh->step < 1)
			sleep_ms(5);
		if (fcntl(20, F_GETFD) < 0)
			_exit(3);
	}
	_exit(0);
}

static int gc_child(void *a)
{
	long depth = (long)a;

	if (depth < 3) {
		pid_t p = clone(gc_child, stack(), CLONE_FILES | SIGCHLD, (void *)(depth + 1));

		if (p < 0)
			_exit(4);
		__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
		wait_go();
		if (depth == 1) {
			/* the forked child: sees the fd its descendant opens */
			while (sh->step < 1)
				sleep_ms(5);
			if (fcntl(20, F_GETFD) < 0)
				_exit(3);
		}
		int st;

		if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st))
			_exit(5);
		_exit(0);
	}
	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	wait_go();
	if (dup2(0, 20) != 20)
		_exit(1);
	sh->step = 1;
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: tasktail READY SCENARIO");
	const char *sc = argv[2];
	int st;

	victim_init();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (!getcwd(cwd0, sizeof(cwd0)))
		die("getcwd: %s", strerror(errno));
	if (!strcmp(sc, "stopped") || !strcmp(sc, "stopped-mt") || !strcmp(sc, "stopped-unwaited")) {
		kids[nkids++] = fork();
		if (kids[0] == 0) {
			pthread_t th[2];
			int n = strcmp(sc, "stopped-mt") ? 0 : 2;

			for (int i = 0; i < n; i++)
				if (pthread_create(&th[i], NULL, spin, NULL))
					_exit(8);
			sh->ready = 1;
			wait_go();
			for (int i = 0; i < n; i++)
				pthread_join(th[i], NULL);
			_exit(0);
		}
		while (!sh->ready)
			sleep_ms(5);
		kill(kids[0], SIGSTOP);
		if (!strcmp(sc, "stopped-unwaited")) {
			for (int i = 0; i < 500 && state_of(kids[0], NULL) != 'T'; i++)
				sleep_ms(5);
		} else if (waitpid(kids[0], &st, WUNTRACED) != kids[0] || !WIFSTOPPED(st))
			die("the child did not stop: %#x", st);
	} else if (!strcmp(sc, "traced") || !strcmp(sc, "traced-run")) {
		kids[nkids++] = fork();
		if (kids[0] == 0) {
			if (ptrace(PTRACE_TRACEME, 0, 0, 0))
				_exit(7);
			raise(SIGSTOP);
			vm_word = 0xfeed;
			wait_go();
			_exit(0);
		}
		if (waitpid(kids[0], &st, 0) != kids[0] || !WIFSTOPPED(st))
			die("the child did not stop: %#x", st);
		if (!strcmp(sc, "traced-run") && ptrace(PTRACE_CONT, kids[0], 0, 0))
			die("PTRACE_CONT: %s", strerror(errno));
	} else if (!strcmp(sc, "share-fs")) {
		kids[nkids++] = clone(fs_child, stack(), CLONE_FS | SIGCHLD, NULL);
	} else if (!strcmp(sc, "share-sighand")) {
		vm_word = 0x1234;
		kids[nkids++] = clone(sighand_child, stack(), CLONE_VM | CLONE_SIGHAND | SIGCHLD, NULL);
	} else if (!strcmp(sc, "share-files-sib")) {
		kids[nkids++] = clone(files_child, stack(), CLONE_FILES | SIGCHLD, (void *)1L);
		kids[nkids++] = clone(files_child, stack(), CLONE_FILES | SIGCHLD, (void *)2L);
		if (unshare(CLONE_FILES))
			die("unshare(CLONE_FILES): %s", strerror(errno));
	} else if (!strcmp(sc, "share-files-gc")) {
		kids[nkids++] = fork();
		if (kids[0] == 0)
			gc_child((void *)1L);
		while (sh->ready < 3)
			sleep_ms(5);
	} else {
		die("unknown scenario %s", sc);
	}
	for (int i = 0; i < nkids; i++)
		if (kids[i] < 0)
			die("clone %d: %s", i, strerror(errno));
	victim_ready(argv[1]);
	victim_wait();

	if (!strcmp(sc, "stopped") || !strcmp(sc, "stopped-mt") || !strcmp(sc, "stopped-unwaited")) {
		char s = state_of(kids[0], NULL);

		if (s != 'T')
			fail("the stopped child %d is in state %c, want T", kids[0], s);
		if (!strcmp(sc, "stopped-unwaited") &&
		    (waitpid(kids[0], &st, WUNTRACED | WNOHANG) != kids[0] || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGSTOP))
			fail("waitpid(WUNTRACED) of the stopped child: status %#x (%s), want stopped by SIGSTOP", st, strerror(errno));
		sh->go = 1;
		kill(kids[0], SIGCONT);
		child_ok(kids[0], "the stopped child");
	} else if (!strcmp(sc, "traced") || !strcmp(sc, "traced-run")) {
		int tracer = 0;
		char s = state_of(kids[0], &tracer);

		if (tracer != getpid())
			fail("the child's TracerPid is %d, want %d", tracer, getpid());
		if (!strcmp(sc, "traced") && s != 't')
			fail("the traced child %d is in state %c, want t (ptrace-stopped)", kids[0], s);
		if (!strcmp(sc, "traced-run")) {
			/* stop it under ptrace to read it */
			kill(kids[0], SIGSTOP);
			if (waitpid(kids[0], &st, 0) != kids[0] || !WIFSTOPPED(st))
				fail("the traced child did not stop for its tracer: %#x", st);
		}
		errno = 0;
		long w = ptrace(PTRACE_PEEKDATA, kids[0], &sh, 0);

		if (errno || (void *)w != (void *)sh)
			fail("PTRACE_PEEKDATA of the traced child: %lx (%s)", w, strerror(errno));
		sh->go = 1;
		if (ptrace(PTRACE_DETACH, kids[0], 0, 0))
			fail("PTRACE_DETACH: %s", strerror(errno));
		child_ok(kids[0], "the traced child");
	} else if (!strcmp(sc, "share-fs")) {
		umask(027);
		if (chdir("/"))
			fail("chdir /: %s", strerror(errno));
		sh->go = 1;
		child_ok(kids[0], "the CLONE_FS child (its umask or cwd is not the parent's)");
	} else if (!strcmp(sc, "share-sighand")) {
		struct sigaction sa = { .sa_handler = on_usr1 };

		sigaction(SIGUSR1, &sa, NULL);
		sh->go = 1;
		child_ok(kids[0], "the CLONE_SIGHAND child (exit 1: handler not shared, 2: memory)");
		if (vm_word != 0x5678)
			fail("the CLONE_VM child's write is not seen: %#llx", (unsigned long long)vm_word);
	} else if (!strcmp(sc, "share-files-sib")) {
		sh->go = 1;
		child_ok(kids[0], "the first sibling");
		child_ok(kids[1], "the second sibling (exit 3: fd 20 of the first not in its table)");
		if (fcntl(20, F_GETFD) >= 0)
			fail("fd 20 the siblings opened is in the parent's table");
	} else if (!strcmp(sc, "share-files-gc")) {
		sh->go = 1;
		child_ok(kids[0], "the child (exit 3: fd 20 of its descendant not in its table; 5: a descendant failed)");
	}
	victim_finish();
}
