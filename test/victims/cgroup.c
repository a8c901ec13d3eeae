/*
 * cgroup: a process, one of its threads and a child, each in cgroups of
 * their own, keep their cgroups and the limits of those cgroups.
 *
 *   cgroup READY [-p FILE]... [-t FILE]... [-k FILE]... [-l MOUNT:CTRL:NAME]...
 *          [-r OLD=NEW]...
 *
 *   -P FILE   the process writes its pid to FILE first, and once all -P
 *             are done unshares its cgroup namespace there (its root)
 *   -p FILE   the process writes its pid to FILE (a cgroup.procs)
 *   -t FILE   a second thread writes its tid to FILE (cgroup.threads, or a
 *             v1 hierarchy's tasks)
 *   -k FILE   a child (forked once the thread runs) writes its pid to FILE
 *   -l M:C:N  a limit to keep: the file N of the process's cgroup in
 *             controller C ("" for cgroup v2), in the hierarchy mounted at M
 *   -r O=N    the restore moved the cgroups: a path starting with O is
 *             expected to start with N instead (--cgroup-root)
 *   -R FILE   more -r rules, one O=N a line, read from FILE (if it is
 *             there) at check time: the test writes it once it knows
 *
 * Once set up, each records its own /proc/thread-self/cgroup (the
 * process, the thread, the child) and the process the limits, then READY
 * is created. On SIGTERM the process checks its cgroups, the thread's
 * (/proc/self/task/TID/cgroup) and the limits (read again through its
 * cgroup as it is now), wakes the child, which checks its own cgroups,
 * and reaps it.
 */
#include "victim.h"
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define MAXARG 16

static char nsroot[MAXARG][512], procs[MAXARG][512], thr[MAXARG][512], kid[MAXARG][512], lim[MAXARG][512], rel[MAXARG][512];
static int nnsroot, nprocs, nthr, nkid, nlim, nrel;
static char relfile[512];
static char self_cg[4096], thr_cg[4096], kid_cg[4096], lim_val[MAXARG][256];
static volatile pid_t thr_tid;
static volatile int thr_ready;

static void slurp(const char *p, char *buf, size_t n)
{
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t k;

	buf[0] = 0;
	if (fd < 0)
		return;
	k = read(fd, buf, n - 1);
	close(fd);
	buf[k > 0 ? k : 0] = 0;
}

static int put(const char *file, long v)
{
	char b[32];
	int fd = open(file, O_WRONLY | O_CLOEXEC), n = snprintf(b, sizeof(b), "%ld", v), ok;

	if (fd < 0)
		return -1;
	ok = write(fd, b, n) == n ? 0 : -1;
	close(fd);
	return ok;
}

/* load_rel adds the rules of -R's file, if it is there. */
static void load_rel(void)
{
	char buf[4096], *l;

	if (!relfile[0])
		return;
	slurp(relfile, buf, sizeof(buf));
	for (l = strtok(buf, "\n"); l && nrel < MAXARG; l = strtok(NULL, "\n"))
		if (strchr(l, '='))
			snprintf(rel[nrel++], 512, "%s", l);
}

/* relocate applies the -r rules to a /proc/PID/cgroup text. */
static void relocate(const char *in, char *out, size_t n)
{
	char line[1024];
	const char *p = in;

	out[0] = 0;
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		char *path;
		int i;

		if (len >= sizeof(line))
			len = sizeof(line) - 1;
		memcpy(line, p, len);
		line[len] = 0;
		path = strchr(line, ':');
		path = path ? strchr(path + 1, ':') : NULL;
		if (path) {
			path++;
			for (i = 0; i < nrel; i++) {
				char *eq = strchr(rel[i], '=');
				size_t ol = eq - rel[i];

				if (strncmp(path, rel[i], ol) == 0 && (path[ol] == 0 || path[ol] == '/')) {
					char rest[1024];

					snprintf(rest, sizeof(rest), "%s", path + ol);
					snprintf(path, sizeof(line) - (path - line), "%s%s", eq + 1, rest);
					break;
				}
			}
		}
		strncat(out, line, n - strlen(out) - 2);
		strcat(out, "\n");
		p += e ? (size_t)(e - p) + 1 : len;
	}
}

/* limit reads -l spec i through the process's current cgroup. */
static int limit(int i, char *val, size_t n)
{
	char spec[512], cg[4096], file[1024], *mnt, *ctl, *name, *p;

	snprintf(spec, sizeof(spec), "%s", lim[i]);
	mnt = spec;
	ctl = strchr(mnt, ':');
	if (!ctl)
		return -1;
	*ctl++ = 0;
	name = strchr(ctl, ':');
	if (!name)
		return -1;
	*name++ = 0;
	slurp("/proc/self/cgroup", cg, sizeof(cg));
	for (p = strtok(cg, "\n"); p; p = strtok(NULL, "\n")) {
		char *c = strchr(p, ':'), *path;

		if (!c)
			continue;
		path = strchr(c + 1, ':');
		if (!path)
			continue;
		*path++ = 0;
		if (strcmp(c + 1, ctl))
			continue;
		snprintf(file, sizeof(file), "%s%s/%s", mnt, strcmp(path, "/") ? path : "", name);
		slurp(file, val, n);
		return val[0] ? 0 : -1;
	}
	return -1;
}

static void *thread_main(void *arg)
{
	int i;

	(void)arg;
	thr_tid = syscall(SYS_gettid);
	for (i = 0; i < nthr; i++)
		if (put(thr[i], thr_tid))
			die("thread: write %d to %s: %s", (int)thr_tid, thr[i], strerror(errno));
	slurp("/proc/thread-self/cgroup", thr_cg, sizeof(thr_cg));
	thr_ready = 1;
	for (;;)
		sleep_ms(10);
	return NULL;
}

int main(int argc, char **argv)
{
	char now[4096], want[4096], p[64], val[256];
	int opt, i, status, pipefd[2];
	pthread_t t;
	pid_t child;

	if (argc < 2)
		die("usage: cgroup READY [-p FILE] [-t FILE] [-k FILE] [-l M:C:N] [-r O=N]");
	victim_init();
	optind = 2;
	while ((opt = getopt(argc, argv, "P:p:t:k:l:r:R:")) != -1) {
		char(*dst)[512];
		int *n;

		switch (opt) {
		case 'P': dst = nsroot, n = &nnsroot; break;
		case 'p': dst = procs, n = &nprocs; break;
		case 't': dst = thr, n = &nthr; break;
		case 'k': dst = kid, n = &nkid; break;
		case 'l': dst = lim, n = &nlim; break;
		case 'r': dst = rel, n = &nrel; break;
		case 'R': snprintf(relfile, sizeof(relfile), "%s", optarg); continue;
		default: die("unknown option");
		}
		if (*n >= MAXARG)
			die("too many -%c", opt);
		snprintf(dst[(*n)++], 512, "%s", optarg);
	}
	for (i = 0; i < nrel; i++)
		if (!strchr(rel[i], '='))
			die("-r %s: want OLD=NEW", rel[i]);
	for (i = 0; i < nnsroot; i++)
		if (put(nsroot[i], getpid()))
			die("write %d to %s: %s", getpid(), nsroot[i], strerror(errno));
	if (nnsroot && unshare(CLONE_NEWCGROUP))
		die("unshare(CLONE_NEWCGROUP): %s", strerror(errno));
	for (i = 0; i < nprocs; i++)
		if (put(procs[i], getpid()))
			die("write %d to %s: %s", getpid(), procs[i], strerror(errno));
	if (pthread_create(&t, NULL, thread_main, NULL))
		die("pthread_create");
	while (!thr_ready)
		sleep_ms(1);
	if (pipe(pipefd))
		die("pipe: %s", strerror(errno));
	child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		char mine[4096];

		for (i = 0; i < nkid; i++)
			if (put(kid[i], getpid()))
				die("child: write %d to %s: %s", getpid(), kid[i], strerror(errno));
		slurp("/proc/thread-self/cgroup", kid_cg, sizeof(kid_cg));
		close(pipefd[0]);
		if (write(pipefd[1], "x", 1) != 1)
			die("child: pipe");
		close(pipefd[1]);
		victim_pid = getpid();
		victim_wait();
		load_rel();
		slurp("/proc/self/cgroup", now, sizeof(now));
		relocate(kid_cg, mine, sizeof(mine));
		if (strcmp(now, mine))
			fail("child: cgroups\n%s\nwant\n%s", now, mine);
		victim_finish();
	}
	close(pipefd[1]);
	if (read(pipefd[0], p, 1) != 1)
		die("child did not set up");
	close(pipefd[0]);
	slurp("/proc/self/cgroup", self_cg, sizeof(self_cg));
	for (i = 0; i < nlim; i++)
		if (limit(i, lim_val[i], sizeof(lim_val[i])))
			die("limit %s: not found", lim[i]);
	say("cgroup: pid %d tid %d child %d", getpid(), (int)thr_tid, child);
	victim_ready(argv[1]);
	victim_wait();
	load_rel();

	slurp("/proc/self/cgroup", now, sizeof(now));
	relocate(self_cg, want, sizeof(want));
	if (strcmp(now, want))
		fail("process: cgroups\n%s\nwant\n%s", now, want);
	snprintf(p, sizeof(p), "/proc/self/task/%d/cgroup", (int)thr_tid);
	slurp(p, now, sizeof(now));
	relocate(thr_cg, want, sizeof(want));
	if (strcmp(now, want))
		fail("thread %d: cgroups\n%s\nwant\n%s", (int)thr_tid, now, want);
	for (i = 0; i < nlim; i++) {
		if (limit(i, val, sizeof(val)))
			fail("limit %s: unreadable now", lim[i]);
		else if (strcmp(val, lim_val[i]))
			fail("limit %s: %s, was %s", lim[i], val, lim_val[i]);
	}
	kill(child, SIGTERM);
	if (waitpid(child, &status, 0) != child)
		fail("waitpid(child): %s", strerror(errno));
	else if (!WIFEXITED(status) || WEXITSTATUS(status))
		fail("child: status %#x", status);
	victim_finish();
}
