/*
 * mntinit: the init of a container with a mount namespace of its own,
 * made with `unshare --pid --fork --mount --uts --ipc ROOTFS/mntinit
 * stage1 ROOTFS EXTDIR MODE` (see README.md). Built static: after
 * pivot_root it runs from the container's rootfs, which holds no libc.
 *
 * stage1 (pid 1, still on the host's tree): makes every mount private
 * (MODE "slave": a slave of the host's, so that the container's binds from
 * the host are slaves of host peer groups: external masters; "peer": left
 * as they are, peers of the host's),
 * binds ROOTFS on itself (pivot_root wants a mount), binds EXTDIR at
 * /ext (an external mount), mounts a tmpfs at /tmp and one at /dev with
 * the host's /dev/null bound on /dev/null (as runtimes do), then
 * pivot_root's into ROOTFS, drops the old root and re-executes itself
 * from the new root (criu needs the exe inside the container).
 *
 * stage2: setsid; stdin /dev/null, stdout and stderr /ext/log (append);
 * proc, sysfs (read-only), devpts, mqueue; /proc/timer_list masked by a bind of
 * /dev/null and /proc/sys bound read-only, as runtimes do; a
 * shared-propagation tree: a tmpfs /tmp/a made shared, /tmp/b its peer,
 * /tmp/s its slave, then a tmpfs /tmp/a/sub that propagates to both; an
 * unbindable tmpfs /tmp/u; /tmp/rodir bound read-only, nosuid at /rob.
 * Files on the tmpfs: /tmp/f1 (0640), a symlink, a hard link, a FIFO, a
 * deep directory. Open: fd 3 /tmp/f1 read-write at offset 5, fd 4
 * /ext/host.txt (made by the test) at offset 2, fd 5 /tmp/a/sub/x, fd 6
 * an unlinked file of the tmpfs (a ghost), fds 7 and 8 the master and
 * slave of pty 0 of the container's devpts, fd 9 a unix socket listening
 * at /tmp/lsock, fds 10 and 11 a connection to it; cwd /tmp/d. A child, pid 2,
 * is busybox sleep from the rootfs. The hostname is stasis-mnt; a System
 * V shm segment (attached, "shared memory"), a semaphore (42) and a queued
 * message (type 7) are in its ipc namespace. MODE "badfs" adds a ramfs at
 * /tmp/ram, which no dump can make again; "cgroup" a cgroup2 mount at
 * /tmp/cg2; "net" a TCP echo server (pid 3) on port 7000 of its network
 * namespace (the test makes the container with --net); "nestmnt" a
 * process (pid 3) in a mount namespace of its own, nested in the
 * container's (see nest()). READY is
 * /ext/ready.
 *
 * On SIGTERM it checks all of it from inside: its pid and session, cwd,
 * each fd's file, offset and contents, the ghost is still unlinked, the
 * files of the tmpfs, the read-only bind, the peer group, master and
 * unbindable flags of the tree in its own mountinfo, the pty's index and
 * a line through it, the socket's name, the connection, a new one to the
 * listener's path, the hostname and System V objects, then ends the child
 * and checks it was pid 2.
 */
#include "victim.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/mount.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static void xmount(const char *src, const char *dst, const char *fs, unsigned long fl, const char *data)
{
	if (mount(src, dst, fs, fl, data))
		die("mount %s on %s (%s, %#lx, %s): %s", src ? src : "-", dst, fs ? fs : "-", fl, data ? data : "-", strerror(errno));
}

static void xmkdir(const char *p)
{
	if (mkdir(p, 0755) && errno != EEXIST)
		die("mkdir %s: %s", p, strerror(errno));
}

static void put(const char *p, const char *s, mode_t mode)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		die("write %s: %s", p, strerror(errno));
	fchmod(fd, mode);
	close(fd);
}

static void stage1(const char *root, const char *ext, const char *mode)
{
	char p[4096];

	/*
	 * "slave": the host's mounts stay masters of the container's copies;
	 * "peer": peers (unshare leaves them so with --propagation unchanged).
	 */
	if (strcmp(mode, "peer"))
		xmount(NULL, "/", NULL, MS_REC | (strcmp(mode, "slave") ? MS_PRIVATE : MS_SLAVE), NULL);
	xmount(root, root, NULL, MS_BIND, NULL);
	snprintf(p, sizeof(p), "%s/ext", root);
	xmount(ext, p, NULL, MS_BIND, NULL);
	snprintf(p, sizeof(p), "%s/tmp", root);
	xmount("tmpfs", p, "tmpfs", 0, "size=8m,mode=1777");
	snprintf(p, sizeof(p), "%s/dev", root);
	xmount("dev", p, "tmpfs", MS_NOSUID, "size=64k,mode=755");
	snprintf(p, sizeof(p), "%s/dev/null", root);
	put(p, "", 0666);
	xmount("/dev/null", p, NULL, MS_BIND, NULL);
	if (chdir(root))
		die("chdir %s: %s", root, strerror(errno));
	if (syscall(SYS_pivot_root, ".", "."))
		die("pivot_root: %s", strerror(errno));
	if (umount2(".", MNT_DETACH))
		die("umount the old root: %s", strerror(errno));
	if (chdir("/"))
		die("chdir /: %s", strerror(errno));
	execl("/mntinit", "mntinit", "stage2", mode, (char *)NULL);
	die("exec /mntinit: %s", strerror(errno));
}

#define KEY_SHM 0x4d4e5401
#define KEY_SEM 0x4d4e5402
#define KEY_MSG 0x4d4e5403

static pid_t child, server, nested;
static char *shm;
static struct stat f1st;

static void check_fd(int fd, off_t off, const char *want);
static void check_file(const char *p, const char *want);
static int mountline(const char *mp, char *opts, size_t n);

/*
 * nest is pid 3 of MODE "nestmnt": it unshares a mount namespace of its
 * own, private, where a tmpfs is at /tmp/nest (empty in the container's)
 * with a file open as fd 12 and cwd, and /rob is unmounted. On SIGTERM
 * it checks them and exits 0 if all is well.
 */
static __attribute__((noreturn)) void nest(void)
{
	char opts[512], cwd[256];
	struct stat st;

	if (unshare(CLONE_NEWNS))
		die("unshare CLONE_NEWNS: %s", strerror(errno));
	xmount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	xmount("nest", "/tmp/nest", "tmpfs", 0, "size=1m");
	put("/tmp/nest/n", "nested\n", 0644);
	xmkdir("/tmp/nest/dir");
	if (umount2("/rob", 0))
		die("umount /rob: %s", strerror(errno));
	move_to(open("/tmp/nest/n", O_RDONLY), 12);
	lseek(12, 3, SEEK_SET);
	if (chdir("/tmp/nest/dir"))
		die("chdir /tmp/nest/dir: %s", strerror(errno));
	victim_wait();
	check_fd(12, 3, "nested\n");
	check_file("/tmp/nest/n", "nested\n");
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/tmp/nest/dir"))
		fail("nested: cwd %s, want /tmp/nest/dir", cwd);
	if (!mountline("/tmp/nest", opts, sizeof(opts)) || strstr(opts, "shared:"))
		fail("nested: /tmp/nest is not a private mount here");
	if (mountline("/rob", opts, sizeof(opts)) || !stat("/rob/r", &st))
		fail("nested: /rob is mounted in the nested namespace");
	if (getpid() != 3)
		fail("nested: pid %d, want 3", getpid());
	_exit(victim_failures ? 1 : 0);
}

static void stage2(const char *mode)
{
	int fd;

	setsid();
	/* Whatever the caller left open is on the host's mounts. */
	syscall(SYS_close_range, 3, ~0U, 0);
	move_to(open("/dev/null", O_RDONLY), 0);
	fd = open("/ext/log", O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0)
		die("open /ext/log: %s", strerror(errno));
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
	victim_init();

	xmount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	xmount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	xmkdir("/dev/pts");
	xmkdir("/dev/mqueue");
	xmount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620");
	xmount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	xmount("/dev/null", "/proc/timer_list", NULL, MS_BIND, NULL);
	xmount("/proc/sys", "/proc/sys", NULL, MS_BIND, NULL);
	xmount(NULL, "/proc/sys", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);

	xmkdir("/tmp/a");
	xmkdir("/tmp/b");
	xmkdir("/tmp/s");
	xmkdir("/tmp/u");
	xmount("shr", "/tmp/a", "tmpfs", 0, "size=1m");
	xmount(NULL, "/tmp/a", NULL, MS_SHARED, NULL);
	xmount("/tmp/a", "/tmp/b", NULL, MS_BIND, NULL);
	xmount("/tmp/a", "/tmp/s", NULL, MS_BIND, NULL);
	xmount(NULL, "/tmp/s", NULL, MS_SLAVE, NULL);
	xmkdir("/tmp/a/sub");
	xmount("sub", "/tmp/a/sub", "tmpfs", 0, "size=1m");
	put("/tmp/a/sub/x", "sub file\n", 0644);
	xmount("unb", "/tmp/u", "tmpfs", 0, "size=1m");
	xmount(NULL, "/tmp/u", NULL, MS_UNBINDABLE, NULL);
	xmkdir("/tmp/rodir");
	put("/tmp/rodir/r", "read-only\n", 0644);
	xmount("/tmp/rodir", "/rob", NULL, MS_BIND, NULL);
	xmount(NULL, "/rob", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, NULL);
	if (!strcmp(mode, "cgroup")) {
		xmkdir("/tmp/cg2");
		xmount("cgroup2", "/tmp/cg2", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	}
	if (!strcmp(mode, "badfs")) {
		xmkdir("/tmp/ram");
		xmount("ram", "/tmp/ram", "ramfs", 0, NULL);
	}

	put("/tmp/f1", "hello tmpfs\n", 0640);
	if (symlink("f1", "/tmp/link") || link("/tmp/f1", "/tmp/hl") || mkfifo("/tmp/fifo", 0600))
		die("links and fifo: %s", strerror(errno));
	xmkdir("/tmp/d");
	xmkdir("/tmp/d/e");
	put("/tmp/d/e/file", "deep\n", 0600);
	stat("/tmp/f1", &f1st);

	move_to(open("/tmp/f1", O_RDWR), 3);
	lseek(3, 5, SEEK_SET);
	move_to(open("/ext/host.txt", O_RDONLY), 4);
	lseek(4, 2, SEEK_SET);
	move_to(open("/tmp/a/sub/x", O_RDONLY), 5);
	move_to(open("/tmp/ghost", O_RDWR | O_CREAT | O_EXCL, 0600), 6);
	if (write(6, "ghost data", 10) != 10 || unlink("/tmp/ghost"))
		die("ghost: %s", strerror(errno));
	if (chdir("/tmp/d"))
		die("chdir /tmp/d: %s", strerror(errno));
	/* A pty of the container's own devpts instance. */
	move_to(open("/dev/pts/ptmx", O_RDWR | O_NOCTTY), 7);
	if (unlockpt(7))
		die("unlockpt: %s", strerror(errno));
	move_to(open("/dev/pts/0", O_RDWR | O_NOCTTY), 8);
	/* A unix socket listening at a path of the tmpfs, a connection to it. */
	{
		struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = "/tmp/lsock" };

		move_to(socket(AF_UNIX, SOCK_STREAM, 0), 9);
		if (bind(9, (struct sockaddr *)&a, sizeof(a)) || listen(9, 4))
			die("bind /tmp/lsock: %s", strerror(errno));
		move_to(socket(AF_UNIX, SOCK_STREAM, 0), 10);
		if (connect(10, (struct sockaddr *)&a, sizeof(a)))
			die("connect /tmp/lsock: %s", strerror(errno));
		move_to(accept(9, NULL, NULL), 11);
	}

	/* The rest of the container: its hostname and System V objects. */
	if (sethostname("stasis-mnt", 10))
		die("sethostname: %s", strerror(errno));
	{
		int id = shmget(KEY_SHM, 4096, IPC_CREAT | 0600), sem = semget(KEY_SEM, 1, IPC_CREAT | 0600);
		int q = msgget(KEY_MSG, IPC_CREAT | 0600);
		struct { long type; char text[8]; } msg = { 7, "queued" };

		if (id < 0 || (shm = shmat(id, NULL, 0)) == (void *)-1 || sem < 0 || q < 0)
			die("System V objects: %s", strerror(errno));
		strcpy(shm, "shared memory");
		if (semctl(sem, 0, SETVAL, 42) || msgsnd(q, &msg, sizeof(msg.text), 0))
			die("semaphore and message: %s", strerror(errno));
	}

	child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		execl("/bin/busybox", "busybox", "sleep", "100000", (char *)NULL);
		die("exec busybox: %s", strerror(errno));
	}
	if (child != 2)
		die("child is pid %d, want 2", child);
	if (!strcmp(mode, "nestmnt")) {
		xmkdir("/tmp/nest");
		nested = fork();
		if (nested < 0)
			die("fork: %s", strerror(errno));
		if (nested == 0)
			nest();
		if (nested != 3)
			die("nested is pid %d, want 3", nested);
	}
	if (!strcmp(mode, "net")) {
		/* A TCP echo server on port 7000 of its network namespace. */
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(7000) };
		int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;

		setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4))
			die("listen on 7000: %s", strerror(errno));
		server = fork();
		if (server == 0) {
			char buf[4096];
			ssize_t n;
			int c = accept(l, NULL, NULL);

			while (c >= 0 && (n = read(c, buf, sizeof(buf))) > 0)
				if (write(c, buf, n) != n)
					break;
			_exit(0);
		}
		close(l);
		if (server != 3)
			die("server is pid %d, want 3", server);
	}
	victim_ready("/ext/ready");
}

static void check_fd(int fd, off_t off, const char *want)
{
	char buf[64] = { 0 };
	off_t now = lseek(fd, 0, SEEK_CUR);

	if (now != off)
		fail("fd %d at offset %lld, want %lld", fd, (long long)now, (long long)off);
	if (pread(fd, buf, sizeof(buf) - 1, 0) != (ssize_t)strlen(want) || strcmp(buf, want))
		fail("fd %d holds \"%s\", want \"%s\"", fd, buf, want);
}

static void check_file(const char *p, const char *want)
{
	char buf[64] = { 0 };
	int fd = open(p, O_RDONLY);

	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) < 0 || strcmp(buf, want))
		fail("%s holds \"%s\" (%s), want \"%s\"", p, buf, fd < 0 ? strerror(errno) : "", want);
	if (fd >= 0)
		close(fd);
}

/* mountline returns the optional fields and options of the mount at mp. */
static int mountline(const char *mp, char *opts, size_t n)
{
	static char buf[1 << 16];
	int fd = open("/proc/self/mountinfo", O_RDONLY);
	ssize_t len = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	char *line, *save;

	if (fd >= 0)
		close(fd);
	if (len <= 0)
		return 0;
	buf[len] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char m[512];
		int used = 0;

		if (sscanf(line, "%*d %*d %*s %*s %511s %n", m, &used) == 1 && !strcmp(m, mp)) {
			snprintf(opts, n, "%s", line + used);
			return 1;
		}
	}
	return 0;
}

static int group(const char *opts, const char *kind)
{
	const char *p = strstr(opts, kind);

	return p ? atoi(p + strlen(kind)) : 0;
}

static void check(void)
{
	char cwd[256], a[512], b[512], s[512], u[512], ro[512], l[64] = { 0 };
	struct stat st;
	int status;

	if (getpid() != 1 || getsid(0) != 1)
		fail("pid %d session %d, want 1 and 1", getpid(), getsid(0));
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/tmp/d"))
		fail("cwd %s, want /tmp/d", cwd);
	check_fd(3, 5, "hello tmpfs\n");
	check_fd(4, 2, "host file\n");
	check_fd(5, 0, "sub file\n");
	check_fd(6, 10, "ghost data");
	if (fstat(6, &st) || st.st_nlink != 0)
		fail("the ghost has %d links, want 0", (int)st.st_nlink);
	if (fstat(3, &st) || stat("/tmp/f1", &f1st) || st.st_ino != f1st.st_ino || (f1st.st_mode & 0777) != 0640)
		fail("fd 3 is not /tmp/f1 or its mode %o is not 640", f1st.st_mode & 0777);
	check_file("/tmp/f1", "hello tmpfs\n");
	check_file("/tmp/d/e/file", "deep\n");
	check_file("/tmp/b/sub/x", "sub file\n");
	check_file("/tmp/s/sub/x", "sub file\n");
	check_file("/rob/r", "read-only\n");
	if (readlink("/tmp/link", l, sizeof(l) - 1) != 2 || strcmp(l, "f1"))
		fail("/tmp/link points to \"%s\"", l);
	if (stat("/tmp/hl", &st) || st.st_ino != f1st.st_ino)
		fail("/tmp/hl is not a hard link of /tmp/f1");
	if (stat("/tmp/fifo", &st) || !S_ISFIFO(st.st_mode))
		fail("/tmp/fifo is not a FIFO");
	if (open("/rob/w", O_WRONLY | O_CREAT, 0600) >= 0 || errno != EROFS)
		fail("/rob is writable (%s)", strerror(errno));
	if (!mountline("/tmp/a", a, sizeof(a)) || !mountline("/tmp/b", b, sizeof(b)) || !mountline("/tmp/s", s, sizeof(s)) ||
	    !mountline("/tmp/u", u, sizeof(u)) || !mountline("/rob", ro, sizeof(ro)))
		fail("a mount of the tree is missing");
	else {
		int g = group(a, "shared:");

		if (!g || group(b, "shared:") != g || group(s, "master:") != g)
			fail("peer groups: /tmp/a \"%s\", /tmp/b \"%s\", /tmp/s \"%s\"", a, b, s);
		if (!strstr(u, "unbindable"))
			fail("/tmp/u is not unbindable: \"%s\"", u);
		if (strncmp(ro, "ro,nosuid", 9))
			fail("/rob: \"%s\", want ro,nosuid", ro);
	}
	if (!mountline("/proc/timer_list", a, sizeof(a)) || !mountline("/tmp/b/sub", b, sizeof(b)) || !mountline("/tmp/s/sub", s, sizeof(s)))
		fail("the masked /proc/timer_list or a propagated mount is missing");
	{
		char pts[64] = "", buf[16] = "";

		if (ptsname_r(7, pts, sizeof(pts)) || strcmp(pts, "/dev/pts/0"))
			fail("pty master is %s, want /dev/pts/0", pts);
		if (fstat(8, &st) || stat("/dev/pts/0", &f1st) || st.st_dev != f1st.st_dev || st.st_rdev != f1st.st_rdev)
			fail("pty 0 is not the one of the container's devpts");
		if (write(7, "ping\n", 5) != 5 || read(8, buf, sizeof(buf) - 1) != 5 || strcmp(buf, "ping\n"))
			fail("pty: read \"%s\" through the pair, want ping", buf);
	}
	{
		struct sockaddr_un a = { 0 }, b = { .sun_family = AF_UNIX, .sun_path = "/tmp/lsock" };
		socklen_t len = sizeof(a);
		char buf[16] = "";
		int c;

		if (getsockname(9, (struct sockaddr *)&a, &len) || strcmp(a.sun_path, "/tmp/lsock"))
			fail("listener bound to \"%s\", want /tmp/lsock", a.sun_path);
		if (write(10, "sock", 4) != 4 || read(11, buf, sizeof(buf) - 1) != 4 || strcmp(buf, "sock"))
			fail("connection to /tmp/lsock: read \"%s\", want sock", buf);
		c = socket(AF_UNIX, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&b, sizeof(b)))
			fail("a new connection to /tmp/lsock: %s", strerror(errno));
		close(c);
	}
	{
		char host[64] = "";
		struct { long type; char text[8]; } msg = { 0 };
		int sem = semget(KEY_SEM, 1, 0), q = msgget(KEY_MSG, 0);

		if (gethostname(host, sizeof(host)) || strcmp(host, "stasis-mnt"))
			fail("hostname \"%s\", want stasis-mnt", host);
		if (strcmp(shm, "shared memory"))
			fail("shm holds \"%.16s\"", shm);
		if (sem < 0 || semctl(sem, 0, GETVAL) != 42)
			fail("semaphore %d: value %d, want 42", sem, sem < 0 ? -1 : semctl(sem, 0, GETVAL));
		if (q < 0 || msgrcv(q, &msg, sizeof(msg.text), 0, IPC_NOWAIT) != sizeof(msg.text) || msg.type != 7 || strcmp(msg.text, "queued"))
			fail("message queue %d: got type %ld \"%s\", want 7 \"queued\"", q, msg.type, msg.text);
	}
	if (server > 0) {
		kill(server, SIGTERM);
		/* It has init's SIGTERM handler: its read is cut short, it exits 0. */
		if (waitpid(server, &status, 0) != 3 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail("server 3 ended with %#x", status);
	}
	if (nested > 0) {
		char opts[512];

		if (mountline("/tmp/nest", opts, sizeof(opts)))
			fail("/tmp/nest of the nested namespace is mounted in the container's");
		kill(nested, SIGTERM);
		if (waitpid(nested, &status, 0) != 3 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail("nested 3 ended with %#x", status);
	}
	kill(child, SIGTERM);
	if (waitpid(child, &status, 0) != 2 || !WIFSIGNALED(status) || WTERMSIG(status) != SIGTERM)
		fail("child 2 ended with %#x", status);
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "stage1"))
		stage1(argv[2], argv[3], argv[4]);
	if (argc != 3 || strcmp(argv[1], "stage2"))
		die("usage: mntinit stage1 ROOTFS EXTDIR MODE");
	stage2(argv[2]);
	victim_wait();
	check();
	victim_finish();
}
