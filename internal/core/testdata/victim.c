/*
 * Victim of the internal/core tests: `victim MODE`.
 *
 * MODE sets some per-task state up (creds, seccomp, strict, timers), or
 * none (target: a fresh task to restore into). Then the victim prints
 * "ready" and serves one-byte commands on stdin, answering one line on
 * stdout each:
 *
 *   p  getppid()          -> "getppid RET ERRNO"
 *   u  uname()            -> "uname RET ERRNO"
 *   s  timer signal stats -> "alrm N VAL TIMERID usr1 N VAL TIMERID"
 *   x  exit(0) by the raw exit syscall
 *
 * The loop uses only read, write and the syscall under test, with raw
 * syscalls and no stdio, so that it also runs in seccomp strict mode.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef SECBIT_NO_CAP_AMBIENT_RAISE
#define SECBIT_NO_CAP_AMBIENT_RAISE (1 << 6)
#endif

static volatile long alrm_n, usr1_n;
static volatile unsigned long alrm_val, usr1_val;
static volatile int alrm_id, usr1_id;

static void on_timer(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (sig == SIGALRM) {
		alrm_n++;
		alrm_val = (unsigned long)si->si_value.sival_ptr;
		alrm_id = si->si_timerid;
	} else {
		usr1_n++;
		usr1_val = (unsigned long)si->si_value.sival_ptr;
		usr1_id = si->si_timerid;
	}
}

static void say(const char *s)
{
	if (write(1, s, strlen(s)) < 0)
		syscall(SYS_exit, 3);
}

static void die(const char *what)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "FAIL %s: %s\n", what, strerror(errno));
	say(buf);
	exit(2);
}

static void setup_creds(void)
{
	gid_t groups[] = {100, 200, 65534};
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	int drop[] = {CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_MKNOD};
	unsigned keep = 1u << CAP_NET_BIND_SERVICE | 1u << CAP_NET_RAW;

	if (setgroups(3, groups))
		die("setgroups");
	for (unsigned i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (prctl(PR_CAPBSET_DROP, drop[i], 0, 0, 0))
			die("PR_CAPBSET_DROP");
	/* keep every cap across the uid switch */
	if (prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0))
		die("PR_SET_SECUREBITS no_setuid_fixup");
	if (setresgid(65534, 65534, 1000) || setfsgid(1000) < 0)
		die("setresgid");
	if (setresuid(65534, 65534, 1001) || setfsuid(1001) < 0)
		die("setresuid");
	/* inheritable first: an ambient cap must be permitted and inheritable */
	if (syscall(SYS_capget, &hdr, data))
		die("capget");
	data[0].inheritable = 1u << CAP_NET_BIND_SERVICE;
	data[1].inheritable = 0;
	if (syscall(SYS_capset, &hdr, data))
		die("capset inheritable");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		die("PR_CAP_AMBIENT_RAISE");
	/* securebits while CAP_SETPCAP is still effective */
	if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
				     SECBIT_NO_CAP_AMBIENT_RAISE, 0, 0, 0))
		die("PR_SET_SECUREBITS");
	data[0].effective = data[0].permitted = keep;
	data[1].effective = data[1].permitted = 0;
	if (syscall(SYS_capset, &hdr, data))
		die("capset");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("PR_SET_NO_NEW_PRIVS");
}

static void install(struct sock_filter *f, unsigned short n, unsigned flags)
{
	struct sock_fprog prog = {n, f};

	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog))
		die("seccomp");
}

#define LOAD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define DENY(nr, err) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), \
		      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))
#define ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/*
 * Two filters. For getppid both answer ERRNO and the newest filter wins a
 * tie, so the errno tells the order they were installed in.
 */
static void setup_seccomp(void)
{
	struct sock_filter older[] = {LOAD_NR, DENY(__NR_getppid, EPERM), DENY(__NR_uname, EPERM), ALLOW};
	struct sock_filter newer[] = {LOAD_NR, DENY(__NR_getppid, EACCES), ALLOW};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("PR_SET_NO_NEW_PRIVS");
	install(older, sizeof(older) / sizeof(older[0]), 0);
	install(newer, sizeof(newer) / sizeof(newer[0]), SECCOMP_FILTER_FLAG_LOG);
}

static int new_timer(int notify, int sig, unsigned long val)
{
	struct sigevent sev;
	int id;

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = notify;
	sev.sigev_signo = sig;
	sev.sigev_value.sival_ptr = (void *)val;
	sev._sigev_un._tid = syscall(SYS_gettid);
	if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &sev, &id))
		die("timer_create");
	return id;
}

static void arm(int id, long first_ns, long every_ns, long first_s)
{
	struct itimerspec its = {{every_ns / 1000000000, every_ns % 1000000000},
				 {first_s + first_ns / 1000000000, first_ns % 1000000000}};

	if (syscall(SYS_timer_settime, id, 0, &its, NULL))
		die("timer_settime");
}

/* Timers 1, 3 and 4 (0 and 2 are deleted, so the ids have holes). */
static void setup_timers(void)
{
	int t0 = new_timer(SIGEV_NONE, 0, 0);
	int t1 = new_timer(SIGEV_SIGNAL, SIGALRM, 0x1234);
	int t2 = new_timer(SIGEV_NONE, 0, 0);
	int t3 = new_timer(SIGEV_THREAD_ID, SIGUSR1, 0x5678);
	int t4 = new_timer(SIGEV_NONE, 0, 0);

	if (t0 != 0 || t1 != 1 || t2 != 2 || t3 != 3 || t4 != 4)
		die("timer ids not 0-4");
	syscall(SYS_timer_delete, t0);
	syscall(SYS_timer_delete, t2);
	arm(t1, 50000000, 50000000, 0);
	arm(t3, 30000000, 100000000, 0);
	arm(t4, 0, 0, 1000);
}

static void serve(void)
{
	char c, buf[256];
	struct utsname u;
	long r;

	for (;;) {
		r = read(0, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			syscall(SYS_exit, 0);
		switch (c) {
		case 'p':
			r = syscall(SYS_getppid);
			snprintf(buf, sizeof(buf), "getppid %ld %d\n", r, r < 0 ? errno : 0);
			break;
		case 'u':
			r = syscall(SYS_uname, &u);
			snprintf(buf, sizeof(buf), "uname %ld %d\n", r, r < 0 ? errno : 0);
			break;
		case 's':
			snprintf(buf, sizeof(buf), "alrm %ld %lx %d usr1 %ld %lx %d\n", alrm_n, alrm_val, alrm_id,
				 usr1_n, usr1_val, usr1_id);
			break;
		case 'x':
			syscall(SYS_exit, 0);
			break;
		default:
			continue;
		}
		say(buf);
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	if (argc != 2)
		return 2;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_timer;
	sa.sa_flags = SA_SIGINFO; /* no SA_RESTART: read returns EINTR */
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);

	if (!strcmp(argv[1], "creds"))
		setup_creds();
	else if (!strcmp(argv[1], "seccomp") || !strcmp(argv[1], "seccomp-fork"))
		setup_seccomp();
	else if (!strcmp(argv[1], "timers"))
		setup_timers();
	else if (strcmp(argv[1], "target") && strcmp(argv[1], "strict"))
		return 2;

	if (!strcmp(argv[1], "seccomp-fork")) {
		/* the child inherits the filters: the same chain, shared */
		pid_t child = fork();
		if (child < 0)
			die("fork");
		if (child == 0) {
			close(0);
			for (;;)
				pause();
		}
		char line[64];
		snprintf(line, sizeof(line), "ready %d\n", child);
		say(line);
	} else {
		/* strict mode still allows the write of "ready" */
		if (!strcmp(argv[1], "strict") && prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
			die("PR_SET_SECCOMP strict");
		say("ready\n");
	}
	serve();
	return 0;
}
