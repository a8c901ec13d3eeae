/*
 * nsuser: the init of a container made with `unshare --user [--map-root-user]
 * --pid --fork --uts --ipc [--time --monotonic N --boottime M] nsuser READY
 * DIR [time|wait-map]` (see README.md); pid 1 of its pid namespace.
 *
 * With wait-map it is started as `nsuser READY DIR wait-map` and is its own
 * launcher, as util-linux unshare with newuidmap: it unshares a user
 * namespace, waits for the test to write a range map (0 100000 65536)
 * from outside, sets its groups to {0, 5} and its ids to 0 inside, unshares
 * pid, uts and ipc namespaces and forks their init, which goes on below.
 *
 * Setup: setsid; records its uid_map, gid_map and setgroups, its real,
 * effective, saved ids, groups and capabilities as it sees them; creates
 * DIR/owned (its own, kept open) and DIR/chowned (chowned to 7:7 inside with wait-map),
 * records their owners as it sees them; forks a child that (with wait-map) changes its ids
 * to 1000:1000 inside (keeping no capability) and records its own; records
 * CLOCK_MONOTONIC and CLOCK_BOOTTIME; then samples CLOCK_MONOTONIC every
 * 10 ms, keeping the largest step forward and any step back.
 *
 * On SIGTERM: the child checks its ids; init checks everything recorded is
 * the same, the owners of both files (by fd and by path), and that the clock
 * never went back and, with "time" (a time namespace), never jumped forward
 * by more than 3 s (the time the tree spent dumped must not show: the
 * test keeps it dumped for 4 s).
 */
#include "victim.h"

#include <grp.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/capability.h>

struct ids {
	char uid_map[256], gid_map[256], setgroups[32];
	uid_t r, e, s;
	gid_t gr, ge, gs;
	gid_t groups[16];
	int ngroups;
	uint32_t eff[2], prm[2];
};

static void read_file(const char *p, char *buf, size_t n)
{
	int fd = open(p, O_RDONLY);
	ssize_t k;

	buf[0] = 0;
	if (fd < 0)
		return;
	k = read(fd, buf, n - 1);
	buf[k > 0 ? k : 0] = 0;
	close(fd);
}

static void get_ids(struct ids *x)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	memset(x, 0, sizeof(*x));
	read_file("/proc/self/uid_map", x->uid_map, sizeof(x->uid_map));
	read_file("/proc/self/gid_map", x->gid_map, sizeof(x->gid_map));
	read_file("/proc/self/setgroups", x->setgroups, sizeof(x->setgroups));
	getresuid(&x->r, &x->e, &x->s);
	getresgid(&x->gr, &x->ge, &x->gs);
	x->ngroups = getgroups(16, x->groups);
	if (syscall(SYS_capget, &h, d) == 0) {
		x->eff[0] = d[0].effective, x->eff[1] = d[1].effective;
		x->prm[0] = d[0].permitted, x->prm[1] = d[1].permitted;
	}
}

static void check_ids(const char *who, const struct ids *was)
{
	struct ids now;
	int i;

	get_ids(&now);
	if (strcmp(now.uid_map, was->uid_map))
		fail("%s: uid_map %s, was %s", who, now.uid_map, was->uid_map);
	if (strcmp(now.gid_map, was->gid_map))
		fail("%s: gid_map %s, was %s", who, now.gid_map, was->gid_map);
	if (strcmp(now.setgroups, was->setgroups))
		fail("%s: setgroups %s, was %s", who, now.setgroups, was->setgroups);
	if (now.r != was->r || now.e != was->e || now.s != was->s)
		fail("%s: uids %d %d %d, were %d %d %d", who, now.r, now.e, now.s, was->r, was->e, was->s);
	if (now.gr != was->gr || now.ge != was->ge || now.gs != was->gs)
		fail("%s: gids %d %d %d, were %d %d %d", who, now.gr, now.ge, now.gs, was->gr, was->ge, was->gs);
	if (now.ngroups != was->ngroups)
		fail("%s: %d groups, were %d", who, now.ngroups, was->ngroups);
	for (i = 0; i < now.ngroups && i < was->ngroups; i++)
		if (now.groups[i] != was->groups[i])
			fail("%s: group %d is %d, was %d", who, i, now.groups[i], was->groups[i]);
	if (memcmp(now.eff, was->eff, sizeof(now.eff)) || memcmp(now.prm, was->prm, sizeof(now.prm)))
		fail("%s: capabilities eff %08x%08x prm %08x%08x, were eff %08x%08x prm %08x%08x", who,
		     now.eff[1], now.eff[0], now.prm[1], now.prm[0], was->eff[1], was->eff[0], was->prm[1], was->prm[0]);
}

static double now_s(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void check_owner(const char *what, struct stat *st, uid_t u, gid_t g)
{
	if (st->st_uid != u || st->st_gid != g)
		fail("%s: owner %d:%d, want %d:%d", what, st->st_uid, st->st_gid, u, g);
}

int main(int argc, char **argv)
{
	struct ids init_ids, child_ids;
	char owned[4096], chowned[4096];
	struct stat st;
	double mono0, boot0, last, maxstep = 0, back = 0;
	int fd, status, sync[2], other = 0, timens;
	char c;
	pid_t child;

	if (argc < 3)
		die("usage: nsuser READY DIR [time|wait-map]");
	victim_init();
	timens = argc > 3 && !strcmp(argv[3], "time");
	if (argc > 3 && !strcmp(argv[3], "wait-map")) {
		/*
		 * The launcher, as util-linux unshare with newuidmap: a user
		 * namespace, the maps written from outside, ids 0 inside (no
		 * exec in between, which would drop the capabilities), then the
		 * other namespaces and their init.
		 */
		char m[64];
		gid_t g[2] = { 0, 5 };
		int st;

		if (unshare(CLONE_NEWUSER))
			die("unshare(CLONE_NEWUSER): %s", strerror(errno));
		for (m[0] = 0; !m[0]; sleep_ms(10))
			read_file("/proc/self/gid_map", m, sizeof(m));
		if (setgroups(2, g))
			die("setgroups: %s", strerror(errno));
		if (setresgid(0, 0, 0) || setresuid(0, 0, 0))
			die("set ids 0 inside: %s", strerror(errno));
		if (unshare(CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC))
			die("unshare: %s", strerror(errno));
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child > 0) {
			while (waitpid(child, &st, 0) < 0 && errno == EINTR)
				;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
		}
		victim_pid = getpid();
		other = 7;
	}
	if (getpid() != 1)
		die("not pid 1 of a pid namespace: %d", getpid());
	if (setsid() < 0)
		die("setsid: %s", strerror(errno));
	get_ids(&init_ids);
	snprintf(owned, sizeof(owned), "%s/owned", argv[2]);
	snprintf(chowned, sizeof(chowned), "%s/chowned", argv[2]);
	fd = open(owned, O_RDWR | O_CREAT, 0600);
	move_to(fd, 10);
	move_to(open(chowned, O_RDWR | O_CREAT, 0600), 11);
	if (fchown(11, other, other))
		die("chown %s %d:%d: %s", chowned, other, other, strerror(errno));
	fstat(10, &st);
	check_owner("setup: owned", &st, init_ids.e, init_ids.ge);
	if (victim_failures)
		die("files not owned as they were created");

	if (pipe(sync))
		die("pipe: %s", strerror(errno));
	child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		victim_pid = getpid();
		if (other && (setresgid(1000, 1000, 1000) || setresuid(1000, 1000, 1000)))
			die("child: set ids 1000: %s", strerror(errno));
		get_ids(&child_ids);
		close(sync[0]);
		close(sync[1]);
		victim_wait();
		check_ids("child", &child_ids);
		if (getpid() != 2)
			fail("child: pid %d, want 2", getpid());
		exit(victim_failures ? 1 : 0);
	}

	close(sync[1]);
	if (read(sync[0], &c, 1) != 0)
		die("child did not set up");
	close(sync[0]);
	victim_ready(argv[1]);
	mono0 = now_s(CLOCK_MONOTONIC);
	boot0 = now_s(CLOCK_BOOTTIME);
	say("nsuser: uid_map %s setgroups %s uids %d/%d/%d groups %d monotonic %.3f boottime %.3f",
	    init_ids.uid_map, init_ids.setgroups, init_ids.r, init_ids.e, init_ids.s, init_ids.ngroups, mono0, boot0);
	last = mono0;
	while (!got_term) {
		double t;

		sleep_ms(10);
		t = now_s(CLOCK_MONOTONIC);
		if (t < last && last - t > back)
			back = last - t;
		if (t - last > maxstep)
			maxstep = t - last;
		last = t;
	}
	check_ids("init", &init_ids);
	if (fstat(10, &st))
		fail("fstat owned: %s", strerror(errno));
	check_owner("owned (fd)", &st, init_ids.e, init_ids.ge);
	if (stat(owned, &st))
		fail("stat %s: %s", owned, strerror(errno));
	check_owner("owned (path)", &st, init_ids.e, init_ids.ge);
	if (fstat(11, &st))
		fail("fstat chowned: %s", strerror(errno));
	check_owner("chowned (fd)", &st, other, other);
	if (back > 0)
		fail("CLOCK_MONOTONIC went back by %.3f s", back);
	/* The test keeps the tree dumped 4 s; a restore on a loaded machine
	 * (criu's sets the offsets well before the task runs) may take 2. */
	if (timens && maxstep > 3.0)
		fail("CLOCK_MONOTONIC jumped forward by %.3f s: the time spent dumped shows", maxstep);
	if (now_s(CLOCK_MONOTONIC) < mono0 || now_s(CLOCK_BOOTTIME) < boot0)
		fail("clocks %.3f/%.3f are below their values at setup %.3f/%.3f",
		     now_s(CLOCK_MONOTONIC), now_s(CLOCK_BOOTTIME), mono0, boot0);
	say("nsuser: monotonic %.3f boottime %.3f largest step %.3f", now_s(CLOCK_MONOTONIC), now_s(CLOCK_BOOTTIME), maxstep);
	kill(child, SIGTERM);
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("child ended with %#x", status);
	victim_finish();
}
