/*
 * creds: a process that dropped from root to nobody, keeping one capability,
 * under two seccomp filters, with a thread and a child that share them.
 *
 *   creds READY        (start it as root; READY's directory must be
 *                       writable by uid/fsuid 2000: the victim creates READY
 *                       after dropping its privileges)
 *
 * Set up as root, in this order:
 *   securebits  NOROOT | NOROOT_LOCKED | NO_SETUID_FIXUP | KEEP_CAPS (0x17)
 *   bounding    only CAP_KILL and CAP_NET_BIND_SERVICE left
 *   groups      4000 4001 65534
 *   gids        real 65534, effective 3000, saved 3001, fs 3001
 *   uids        real 65534, effective 65534, saved 2000, fs 2000
 *   caps        permitted {KILL, NET_BIND_SERVICE}, effective and
 *               inheritable {NET_BIND_SERVICE}, ambient {NET_BIND_SERVICE}
 *   no_new_privs 1
 *   a thread ("creds-thread"), then two filters installed with
 *   SECCOMP_FILTER_FLAG_TSYNC (so the thread has them too):
 *     filter 1: acct() -> SECCOMP_RET_KILL_PROCESS
 *     filter 2: sysinfo() -> SECCOMP_RET_ERRNO(EMLINK)
 *   then a child ("creds-child"), which inherits all of it.
 *
 * On SIGTERM the main thread, the thread and the child each check all of the
 * above (getres[ug]id, setfs[ug]id(-1), getgroups, capget, PR_CAPBSET_READ,
 * PR_CAP_AMBIENT_IS_SET, PR_GET_SECUREBITS, PR_GET_NO_NEW_PRIVS,
 * PR_GET_SECCOMP == 2, "Seccomp_filters: 2" in /proc/thread-self/status,
 * sysinfo() fails with EMLINK); the main thread also binds a TCP socket to a
 * port below ip_unprivileged_port_start (CAP_NET_BIND_SERVICE must work),
 * and forks a process that calls acct(): it must be killed by SIGSYS.
 */
#include "victim.h"
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>

#define SECBITS (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS)
#define CAPBIT(c) (1ULL << (c))
#define WANT_PRM (CAPBIT(CAP_KILL) | CAPBIT(CAP_NET_BIND_SERVICE))
#define WANT_EFF CAPBIT(CAP_NET_BIND_SERVICE)
#define WANT_INH CAPBIT(CAP_NET_BIND_SERVICE)
#define WANT_BND (CAPBIT(CAP_KILL) | CAPBIT(CAP_NET_BIND_SERVICE))
#define WANT_AMB CAPBIT(CAP_NET_BIND_SERVICE)

static const gid_t want_groups[] = { 4000, 4001, 65534 };
static int last_cap;
static volatile int thread_check, thread_named;
static volatile int thread_failures = -1;
static int child_pid;

static int read_int(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	return n > 0 ? atoi(buf) : -1;
}

static int capget3(uint64_t *eff, uint64_t *prm, uint64_t *inh)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		return -1;
	*eff = d[0].effective | (uint64_t)d[1].effective << 32;
	*prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	*inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
	return 0;
}

static int capset3(uint64_t eff, uint64_t prm, uint64_t inh)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = {
		{ (uint32_t)eff, (uint32_t)prm, (uint32_t)inh },
		{ (uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32) },
	};
	return syscall(SYS_capset, &h, d);
}

/* status_field reads one "Name:\tvalue" line of /proc/thread-self/status. */
static int status_field(const char *name, char *out, size_t outsz)
{
	char buf[4096], key[64];
	int fd = open("/proc/thread-self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	snprintf(key, sizeof(key), "\n%s:", name);
	char *p = strstr(buf, key);
	if (!p)
		return -1;
	p += strlen(key);
	while (*p == ' ' || *p == '\t')
		p++;
	size_t l = strcspn(p, "\n");
	if (l >= outsz)
		l = outsz - 1;
	memcpy(out, p, l);
	out[l] = 0;
	return 0;
}

/* check_creds checks the calling thread; it returns its number of failures. */
static int check_creds(const char *who)
{
	int before = victim_failures;
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (getresuid(&ru, &eu, &su) || ru != 65534 || eu != 65534 || su != 2000)
		fail("%s: uids are %d %d %d, want 65534 65534 2000", who, (int)ru, (int)eu, (int)su);
	if (setfsuid(-1) != 2000)
		fail("%s: fsuid is %d, want 2000", who, setfsuid(-1));
	if (getresgid(&rg, &eg, &sg) || rg != 65534 || eg != 3000 || sg != 3001)
		fail("%s: gids are %d %d %d, want 65534 3000 3001", who, (int)rg, (int)eg, (int)sg);
	if (setfsgid(-1) != 3001)
		fail("%s: fsgid is %d, want 3001", who, setfsgid(-1));
	gid_t g[16];
	int ng = getgroups(16, g);
	if (ng != 3 || g[0] != want_groups[0] || g[1] != want_groups[1] || g[2] != want_groups[2])
		fail("%s: %d supplementary groups (first %d), want 4000 4001 65534", who, ng, ng > 0 ? (int)g[0] : -1);

	uint64_t eff, prm, inh, bnd = 0, amb = 0;
	if (capget3(&eff, &prm, &inh))
		fail("%s: capget: %s", who, strerror(errno));
	else if (eff != WANT_EFF || prm != WANT_PRM || inh != WANT_INH)
		fail("%s: caps effective %#llx permitted %#llx inheritable %#llx, want %#llx %#llx %#llx", who,
		     (unsigned long long)eff, (unsigned long long)prm, (unsigned long long)inh, WANT_EFF, WANT_PRM,
		     WANT_INH);
	for (int c = 0; c <= last_cap; c++) {
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
			bnd |= CAPBIT(c);
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1)
			amb |= CAPBIT(c);
	}
	if (bnd != WANT_BND)
		fail("%s: bounding set %#llx, want %#llx", who, (unsigned long long)bnd, WANT_BND);
	if (amb != WANT_AMB)
		fail("%s: ambient set %#llx, want %#llx", who, (unsigned long long)amb, WANT_AMB);
	int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	if (sb != SECBITS)
		fail("%s: securebits %#x, want %#x", who, sb, SECBITS);
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		fail("%s: no_new_privs is not set", who);
	int mode = prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
	if (mode != SECCOMP_MODE_FILTER)
		fail("%s: seccomp mode %d, want 2 (filter)", who, mode);
	char v[64];
	if (status_field("Seccomp_filters", v, sizeof(v)) || strcmp(v, "2"))
		fail("%s: /proc/thread-self/status Seccomp_filters: %s, want 2", who, v);
	struct sysinfo si;
	errno = 0;
	if (sysinfo(&si) == 0 || errno != EMLINK)
		fail("%s: sysinfo() %s, want the filter's EMLINK", who, errno ? strerror(errno) : "succeeded");
	return victim_failures - before;
}

static struct sock_filter kill_acct[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_acct, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static struct sock_filter deny_sysinfo[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sysinfo, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EMLINK),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static void install(struct sock_filter *f, unsigned short len, const char *what)
{
	struct sock_fprog prog = { len, f };
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
	if (r)
		die("seccomp %s (TSYNC): %ld %s", what, r, r < 0 ? strerror(errno) : "(thread that could not sync)");
}

static void *thread_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "creds-thread");
	thread_named = 1;
	while (!thread_check)
		sleep_ms(10);
	thread_failures = check_creds("thread");
	return NULL;
}

/* wait_comm waits until process pid is named name. */
static void wait_comm(int pid, const char *name)
{
	char path[64], buf[32];

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	for (int i = 0; i < 500; i++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		int n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

		if (fd >= 0)
			close(fd);
		if (n > 0 && (buf[n - 1] = 0, !strcmp(buf, name)))
			return;
		sleep_ms(10);
	}
	die("pid %d is not named %s after 5 s", pid, name);
}

static void __attribute__((noreturn)) child_main(void)
{
	victim_failures = 0;
	victim_init();
	prctl(PR_SET_NAME, "creds-child");
	victim_wait();
	check_creds("child");
	exit(victim_failures ? 1 : 0);
}

static void check_bind(void)
{
	int start = read_int("/proc/sys/net/ipv4/ip_unprivileged_port_start");
	if (start < 2) {
		say("creds: ip_unprivileged_port_start is %d: no privileged port to try", start);
		return;
	}
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		fail("main: socket: %s", strerror(errno));
		return;
	}
	int one = 1, ok = 0, err = 0;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	for (int k = 0; k < 50 && !ok; k++) {
		int port = (start > 1024 ? 1024 : start) - 1 - ((getpid() + k * 7) % 400);
		if (port < 1)
			break;
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = { htonl(INADDR_LOOPBACK) } };
		if (bind(s, (struct sockaddr *)&a, sizeof(a)) == 0)
			ok = 1;
		else if ((err = errno) != EADDRINUSE)
			break;
	}
	close(s);
	if (!ok)
		fail("main: bind to a port below %d: %s (CAP_NET_BIND_SERVICE lost?)", start, strerror(err));
}

static void check_kill_filter(void)
{
	int p = fork();
	if (p < 0) {
		fail("main: fork: %s", strerror(errno));
		return;
	}
	if (p == 0) {
		struct rlimit no = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no); /* no core file from the SIGSYS */
		syscall(SYS_acct, NULL);
		_exit(0);
	}
	int st;
	if (waitpid(p, &st, 0) != p)
		fail("main: waitpid: %s", strerror(errno));
	else if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
		fail("main: a fork calling acct() ended with status %#x, want killed by SIGSYS (filter 1 lost?)", st);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: creds READY");
	if (geteuid() != 0)
		die("start creds as root");
	victim_init();
	last_cap = read_int("/proc/sys/kernel/cap_last_cap");
	if (last_cap < CAP_NET_BIND_SERVICE || last_cap > 63)
		die("cap_last_cap is %d", last_cap);

	if (prctl(PR_SET_SECUREBITS, SECBITS, 0, 0, 0))
		die("PR_SET_SECUREBITS: %s", strerror(errno));
	for (int c = 0; c <= last_cap; c++)
		if (!(WANT_BND & CAPBIT(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0))
			die("PR_CAPBSET_DROP %d: %s", c, strerror(errno));
	if (setgroups(3, want_groups))
		die("setgroups: %s", strerror(errno));
	if (setresgid(65534, 3000, 3001))
		die("setresgid: %s", strerror(errno));
	setfsgid(3001);
	if (setresuid(65534, 65534, 2000))
		die("setresuid: %s", strerror(errno));
	setfsuid(2000);
	if (capset3(WANT_EFF, WANT_PRM, WANT_INH))
		die("capset: %s", strerror(errno));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		die("PR_CAP_AMBIENT_RAISE: %s", strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		die("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));

	pthread_t th;
	if (pthread_create(&th, NULL, thread_main, NULL))
		die("pthread_create");
	install(kill_acct, sizeof(kill_acct) / sizeof(kill_acct[0]), "kill acct");
	install(deny_sysinfo, sizeof(deny_sysinfo) / sizeof(deny_sysinfo[0]), "deny sysinfo");

	child_pid = fork();
	if (child_pid < 0)
		die("fork: %s", strerror(errno));
	if (child_pid == 0)
		child_main();

	if (check_creds("main (setup)"))
		die("the setup did not give the state it checks");
	say("creds: pid %d, child %d: uid 65534/65534/2000 fs 2000, gid 65534/3000/3001 fs 3001, cap_net_bind_service, 2 filters",
	    getpid(), child_pid);
	/* READY once the thread and the child have their names: a tree seen
	 * before is not the one dumped. */
	while (!thread_named)
		sleep_ms(1);
	wait_comm(child_pid, "creds-child");
	victim_ready(argv[1]);

	victim_wait();
	check_creds("main");
	thread_check = 1;
	pthread_join(th, NULL);
	if (thread_failures)
		say("creds: the thread found %d problem(s)", thread_failures);
	check_bind();
	check_kill_filter();
	kill(child_pid, SIGTERM);
	int st;
	if (waitpid(child_pid, &st, 0) != child_pid)
		fail("main: waitpid(child %d): %s", child_pid, strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st))
		fail("main: the child %d ended with status %#x (its FAIL lines are above)", child_pid, st);
	victim_finish();
}
