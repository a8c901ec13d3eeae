/*
 * nsinit: the init of a container made with `unshare --pid --fork --uts
 * --ipc nsinit READY MODE` (see README.md). It must be pid 1 of its pid
 * namespace. Setup: setsid; hostname "stasis-ct", domainname "stasis-dom";
 * IPC sysctls kernel.msgmax 4000 and kernel.sem "250 32000 32 200"; System V
 * objects whose ids are not the first ones (one of each made and removed
 * first): shm A (key 0x53540001, 64 KiB, pattern, attached here), shm B
 * (IPC_PRIVATE, 3 pages, one written, not attached), a semaphore set (key
 * 0x53540002, values 1 2 3 42), a message queue (key 0x53540003, messages
 * of types 5, 1, 7); two children (pids 2 and 3) and an orphan: a child
 * that forks a grandchild and exits, which init reaps, so the grandchild's
 * parent is init. MODE "nested" adds, from child pid 2, two nested pid
 * namespaces (each made by unshare(CLONE_NEWPID) and a fork, whose child
 * is pid 1 there with a child of its own; the deepest child has a thread).
 *
 * On SIGTERM every task checks its pid and parent and passes SIGTERM on to
 * its children, waits for each and fails if one failed; init also checks
 * the uts and ipc namespace: names, sysctls, each object's id, key, mode,
 * contents, the attachment.
 */
#include "victim.h"

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#define KEY_A 0x53540001
#define KEY_SEM 0x53540002
#define KEY_MSG 0x53540003
#define SZ_A (64 << 10)
#define SZ_B (3 * 4096)

static pid_t kids[8];
static int nkids;
static pid_t my_pid, my_ppid;
static int is_root; /* the container's init */

static void wait_term(void)
{
	while (!got_term)
		sleep_ms(10);
}

/* finish checks the task's own ids, ends its children and exits. */
static void __attribute__((noreturn)) finish(void)
{
	int i;

	if (getpid() != my_pid)
		fail("pid %d, want %d", getpid(), my_pid);
	if (getppid() != my_ppid)
		fail("pid %d: parent %d, want %d", my_pid, getppid(), my_ppid);
	for (i = 0; i < nkids; i++) {
		int st;

		if (kill(kids[i], SIGTERM))
			fail("pid %d: kill child %d: %s", my_pid, kids[i], strerror(errno));
		if (waitpid(kids[i], &st, 0) != kids[i])
			fail("pid %d: wait child %d: %s", my_pid, kids[i], strerror(errno));
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail("pid %d: child %d ended with status %#x", my_pid, kids[i], st);
	}
	if (my_pid == 1 && my_ppid == 0 && !victim_failures && getpid() == 1 && is_root)
		say("PASS");
	exit(victim_failures ? 1 : 0);
}

static pid_t spawn(void (*fn)(int), int arg)
{
	pid_t parent = getpid();
	pid_t p = fork();

	if (p < 0)
		die("fork: %s", strerror(errno));
	if (p == 0) {
		nkids = 0;
		is_root = 0;
		my_pid = getpid();
		my_ppid = parent;
		fn(arg);
		exit(0);
	}
	kids[nkids++] = p;
	return p;
}

static pid_t thread_tid;
static volatile int thread_ok;

/* a thread of the deepest leaf: it keeps its tid at every level too */
static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = syscall(SYS_gettid);
	while (!got_term)
		sleep_ms(10);
	if (syscall(SYS_gettid) != thread_tid)
		fail("thread of pid %d: tid %ld, want %d", my_pid, (long)syscall(SYS_gettid), thread_tid);
	thread_ok = 1;
	return NULL;
}

static void leaf(int with_thread)
{
	pthread_t th;

	if (with_thread) {
		if (pthread_create(&th, NULL, thread_main, NULL))
			die("pthread_create");
		while (!thread_tid)
			sleep_ms(1);
	}
	wait_term();
	if (with_thread) {
		pthread_join(th, NULL);
		if (!thread_ok)
			fail("pid %d: its thread did not check itself", my_pid);
	}
	finish();
}

/* nested: unshare a pid namespace and fork its init (pid 1 there), which
 * has a leaf child and, while levels are left, nests again. */
static void nest_init(int levels);

static void nest(int levels)
{
	if (unshare(CLONE_NEWPID))
		die("unshare(CLONE_NEWPID): %s", strerror(errno));
	spawn(nest_init, levels);
	wait_term();
	finish();
}

static void nest_init(int levels)
{
	if (getpid() != 1)
		die("nested init is pid %d", getpid());
	my_ppid = 0; /* its parent is in the namespace above */
	spawn(leaf, levels == 1); /* the deepest leaf has a thread */
	if (levels > 1)
		spawn(nest, levels - 1);
	wait_term();
	finish();
}

static void orphaner(int arg)
{
	(void)arg;
	pid_t g = fork();

	if (g < 0)
		die("fork: %s", strerror(errno));
	if (g == 0) {
		nkids = 0;
		my_pid = getpid();
		my_ppid = 1; /* reparented to init */
		while (getppid() != 1)
			sleep_ms(1);
		wait_term();
		finish();
	}
	/* tell init the orphan's pid through the exit status */
	exit(g);
}

static int write_sysctl(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);
	int ok;

	if (fd < 0)
		return -1;
	ok = write(fd, val, strlen(val)) == (ssize_t)strlen(val);
	close(fd);
	return ok ? 0 : -1;
}

static void check_sysctl(const char *path, const char *want)
{
	char buf[128];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0) {
		fail("open %s: %s", path, strerror(errno));
		return;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0) {
		fail("read %s", path);
		return;
	}
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n'))
		buf[--n] = 0;
	for (char *p = buf; *p; p++)
		if (*p == '\t')
			*p = ' ';
	if (strcmp(buf, want))
		fail("%s is \"%s\", want %s", path, buf, want);
}

static unsigned char pat(int i, int salt) { return (unsigned char)(i * 7 + salt + (i >> 12)); }

struct msgbuf_ {
	long mtype;
	char text[64];
};

static const struct {
	long type;
	const char *text;
} msgs[] = { { 5, "first message" }, { 1, "second, type 1" }, { 7, "third and last" } };

int main(int argc, char **argv)
{
	int shm_a, shm_b, sem, msq, i, nested;
	unsigned char *a, *b;
	unsigned short vals[4] = { 1, 2, 3, 42 };
	pid_t orphan = 0;
	unsigned long nattch;

	if (argc < 3)
		die("usage: nsinit READY flat|nested");
	nested = !strcmp(argv[2], "nested");
	victim_init();
	if (getpid() != 1)
		die("not pid 1 of a pid namespace but %d", getpid());
	my_pid = 1;
	my_ppid = 0;
	is_root = 1;
	if (setsid() < 0)
		die("setsid: %s", strerror(errno));
	if (sethostname("stasis-ct", 9) || setdomainname("stasis-dom", 10))
		die("sethostname: %s", strerror(errno));
	if (write_sysctl("/proc/sys/kernel/msgmax", "4000") || write_sysctl("/proc/sys/kernel/sem", "250 32000 32 200"))
		die("ipc sysctls: %s", strerror(errno));

	/* one of each made and removed: the ids are not the first ones */
	shmctl(shmget(IPC_PRIVATE, 4096, 0600), IPC_RMID, NULL);
	semctl(semget(IPC_PRIVATE, 1, 0600), 0, IPC_RMID);
	msgctl(msgget(IPC_PRIVATE, 0600), IPC_RMID, NULL);

	shm_a = shmget(KEY_A, SZ_A, IPC_CREAT | IPC_EXCL | 0640);
	shm_b = shmget(IPC_PRIVATE, SZ_B, IPC_CREAT | 0604);
	sem = semget(KEY_SEM, 4, IPC_CREAT | IPC_EXCL | 0660);
	msq = msgget(KEY_MSG, IPC_CREAT | IPC_EXCL | 0620);
	if (shm_a < 0 || shm_b < 0 || sem < 0 || msq < 0)
		die("System V objects: %s", strerror(errno));
	a = shmat(shm_a, NULL, 0);
	b = shmat(shm_b, NULL, 0);
	if (a == (void *)-1 || b == (void *)-1)
		die("shmat: %s", strerror(errno));
	for (i = 0; i < SZ_A; i++)
		a[i] = pat(i, 1);
	memset(b + 4096, 0x5a, 4096);
	shmdt(b);
	if (semctl(sem, 0, SETALL, vals))
		die("semctl(SETALL): %s", strerror(errno));
	for (i = 0; i < 3; i++) {
		struct msgbuf_ m = { msgs[i].type, "" };

		strcpy(m.text, msgs[i].text);
		if (msgsnd(msq, &m, strlen(m.text) + 1, IPC_NOWAIT))
			die("msgsnd: %s", strerror(errno));
	}

	spawn(leaf, 0);
	if (nested)
		spawn(nest, 2);
	else
		spawn(leaf, 0);
	{
		pid_t o = fork();
		int st;

		if (o == 0) {
			is_root = 0;
			my_pid = getpid();
			orphaner(0);
		}
		if (waitpid(o, &st, 0) != o || !WIFEXITED(st))
			die("orphaner: %s", strerror(errno));
		orphan = WEXITSTATUS(st);
		kids[nkids++] = orphan;
	}
	/* Every task inherits the attachment: ready once the whole tree is
	 * there (init, 2 children, the orphan; nested: 5 more). */
	nattch = nested ? 9 : 4;
	for (i = 0;; i++) {
		struct shmid_ds ds;

		if (shmctl(shm_a, IPC_STAT, &ds))
			die("shmctl: %s", strerror(errno));
		if (ds.shm_nattch == nattch)
			break;
		if (i == 1000)
			die("shm %d: %lu attachments, want %lu", shm_a, (unsigned long)ds.shm_nattch, nattch);
		sleep_ms(10);
	}
	say("nsinit: shm %d %d sem %d msg %d orphan %d", shm_a, shm_b, sem, msq, orphan);
	victim_ready(argv[1]);
	wait_term();

	/* uts */
	{
		struct utsname u;

		uname(&u);
		if (strcmp(u.nodename, "stasis-ct"))
			fail("hostname \"%s\"", u.nodename);
		if (strcmp(u.domainname, "stasis-dom"))
			fail("domainname \"%s\"", u.domainname);
	}
	check_sysctl("/proc/sys/kernel/msgmax", "4000");
	check_sysctl("/proc/sys/kernel/sem", "250 32000 32 200");
	/* shm: ids, keys, modes, contents, the attachment */
	{
		struct shmid_ds ds;

		if (shmget(KEY_A, 0, 0) != shm_a)
			fail("shm key %#x: id %d, want %d", KEY_A, shmget(KEY_A, 0, 0), shm_a);
		if (shmctl(shm_a, IPC_STAT, &ds))
			fail("shm %d: %s", shm_a, strerror(errno));
		else if ((ds.shm_perm.mode & 0777) != 0640 || ds.shm_segsz != SZ_A || ds.shm_nattch != nattch)
			fail("shm %d: mode %o size %zu nattch %lu (want %lu)", shm_a, ds.shm_perm.mode, ds.shm_segsz, (unsigned long)ds.shm_nattch, nattch);
		for (i = 0; i < SZ_A; i++)
			if (a[i] != pat(i, 1)) {
				fail("shm %d byte %d through the attachment: %#x", shm_a, i, a[i]);
				break;
			}
		a[100] = 0xee; /* still shared with the segment */
		b = shmat(shm_a, NULL, SHM_RDONLY);
		if (b == (void *)-1 || b[100] != 0xee)
			fail("shm %d: a write through the attachment is not in the segment", shm_a);
		else
			shmdt(b);
		if (shmctl(shm_b, IPC_STAT, &ds) || (ds.shm_perm.mode & 0777) != 0604 || ds.shm_segsz != SZ_B || ds.shm_perm.__key != IPC_PRIVATE)
			fail("shm %d (private): %s mode %o", shm_b, strerror(errno), ds.shm_perm.mode);
		b = shmat(shm_b, NULL, SHM_RDONLY);
		if (b == (void *)-1)
			fail("shmat %d: %s", shm_b, strerror(errno));
		else {
			for (i = 0; i < SZ_B; i++)
				if (b[i] != (i >= 4096 && i < 8192 ? 0x5a : 0)) {
					fail("shm %d byte %d: %#x", shm_b, i, b[i]);
					break;
				}
			shmdt(b);
		}
	}
	/* semaphores */
	{
		unsigned short got[4] = { 0 };
		struct semid_ds ds;
		union { int val; struct semid_ds *buf; unsigned short *array; } arg;

		if (semget(KEY_SEM, 0, 0) != sem)
			fail("sem key %#x: id %d, want %d", KEY_SEM, semget(KEY_SEM, 0, 0), sem);
		arg.array = got;
		if (semctl(sem, 0, GETALL, arg))
			fail("sem %d: %s", sem, strerror(errno));
		for (i = 0; i < 4; i++)
			if (got[i] != vals[i])
				fail("sem %d value %d: %d, want %d", sem, i, got[i], vals[i]);
		arg.buf = &ds;
		if (semctl(sem, 0, IPC_STAT, arg) || (ds.sem_perm.mode & 0777) != 0660 || ds.sem_nsems != 4)
			fail("sem %d: mode %o nsems %lu", sem, ds.sem_perm.mode, (unsigned long)ds.sem_nsems);
	}
	/* messages, in order, with their types */
	{
		struct msqid_ds ds;

		if (msgget(KEY_MSG, 0) != msq)
			fail("msg key %#x: id %d, want %d", KEY_MSG, msgget(KEY_MSG, 0), msq);
		if (msgctl(msq, IPC_STAT, &ds) || (ds.msg_perm.mode & 0777) != 0620 || ds.msg_qnum != 3)
			fail("msg %d: mode %o qnum %lu", msq, ds.msg_perm.mode, (unsigned long)ds.msg_qnum);
		for (i = 0; i < 3; i++) {
			struct msgbuf_ m;
			ssize_t n = msgrcv(msq, &m, sizeof(m.text), 0, IPC_NOWAIT);

			if (n < 0) {
				fail("msg %d message %d: %s", msq, i, strerror(errno));
				break;
			}
			if (m.mtype != msgs[i].type || n != (ssize_t)strlen(msgs[i].text) + 1 || strcmp(m.text, msgs[i].text))
				fail("msg %d message %d: type %ld \"%s\"", msq, i, m.mtype, m.text);
		}
	}
	finish();
}
