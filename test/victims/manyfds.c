/*
 * manyfds: more open files, over a few processes, than the restoring
 * stasis may hold at once (its RLIMIT_NOFILE).
 *
 *   manyfds READY DIR LIMIT PROCS PER
 *
 * Sets its RLIMIT_NOFILE to LIMIT (soft and hard: the restore puts the
 * dumped limits back and cannot raise a hard one above its own). Before
 * forking, the root opens SHARED fds at 100.. (inherited by every
 * process: one description each, shared across the tree); then each of
 * the PROCS processes (the root and PROCS-1 children) opens PER fds of its
 * own at 100+SHARED.., each a separate description of DIR/pK-(i%8) at
 * offset i (O_RDWR, or O_RDONLY for odd i), and dups the first DUPS of
 * them at 100+SHARED+PER.. (one description, two fds). On SIGTERM each
 * process checks every fd: open at its number, the same file (inode),
 * the same offset and access mode, the dups still one description (a seek
 * on one moves the other) and, in a child, the inherited ones still the
 * root's (kcmp KCMP_FILE). The root ends the children and fails if one
 * failed.
 */
#include "victim.h"
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/kcmp.h>

#define SHARED 64
#define DUPS 64
#define BASE 100

static ino_t inodes[8];
static ino_t shared_ino;
static long per;

static void name(char *buf, size_t n, const char *dir, int proc, int k)
{
	snprintf(buf, n, "%s/p%d-%d", dir, proc, k);
}

static void setup(const char *dir, int proc)
{
	char path[4096];
	struct stat st;

	for (int k = 0; k < 8; k++) {
		name(path, sizeof(path), dir, proc, k);
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0 || ftruncate(fd, 1 << 20) || fstat(fd, &st))
			die("create %s: %s", path, strerror(errno));
		inodes[k] = st.st_ino;
		close(fd);
	}
	for (long i = 0; i < per; i++) {
		name(path, sizeof(path), dir, proc, i % 8);
		int fd = open(path, i % 2 ? O_RDONLY : O_RDWR);
		if (fd < 0)
			die("open %s: %s", path, strerror(errno));
		move_to(fd, BASE + SHARED + i);
		if (lseek(BASE + SHARED + i, i, SEEK_SET) != i)
			die("lseek: %s", strerror(errno));
	}
	for (int j = 0; j < DUPS; j++)
		if (dup2(BASE + SHARED + j, BASE + SHARED + per + j) < 0)
			die("dup2: %s", strerror(errno));
}

static void check(pid_t root)
{
	struct stat st;

	for (int j = 0; j < SHARED; j++) {
		int fd = BASE + j;
		if (fstat(fd, &st) || st.st_ino != shared_ino)
			fail("pid %d: inherited fd %d lost or another file", getpid(), fd);
		else if (root && syscall(SYS_kcmp, root, getpid(), KCMP_FILE, fd, fd) != 0)
			fail("pid %d: inherited fd %d is not the root's description any more", getpid(), fd);
	}
	for (long i = 0; i < per; i++) {
		int fd = BASE + SHARED + i;
		if (fstat(fd, &st)) {
			fail("pid %d: fd %d: %s", getpid(), fd, strerror(errno));
			continue;
		}
		if (st.st_ino != inodes[i % 8])
			fail("pid %d: fd %d is inode %lu, want %lu", getpid(), fd, (unsigned long)st.st_ino, (unsigned long)inodes[i % 8]);
		off_t off = lseek(fd, 0, SEEK_CUR);
		if (off != i)
			fail("pid %d: fd %d at offset %lld, want %ld", getpid(), fd, (long long)off, i);
		int fl = fcntl(fd, F_GETFL);
		if ((fl & O_ACCMODE) != (i % 2 ? O_RDONLY : O_RDWR))
			fail("pid %d: fd %d has flags %#o", getpid(), fd, fl);
	}
	for (int j = 0; j < DUPS; j++) {
		int a = BASE + SHARED + j, b = BASE + SHARED + per + j;
		if (lseek(b, 4096, SEEK_SET) != 4096 || lseek(a, 0, SEEK_CUR) != 4096)
			fail("pid %d: fd %d and its dup %d are not one description", getpid(), a, b);
	}
}

int main(int argc, char **argv)
{
	if (argc < 6)
		die("usage: manyfds READY DIR LIMIT PROCS PER");
	victim_init();
	const char *dir = argv[2];
	struct rlimit rl = { strtoul(argv[3], NULL, 0), strtoul(argv[3], NULL, 0) };
	int procs = atoi(argv[4]);
	per = atol(argv[5]);
	if (setrlimit(RLIMIT_NOFILE, &rl))
		die("setrlimit: %s", strerror(errno));
	if (BASE + SHARED + per + DUPS > (long)rl.rlim_cur)
		die("%ld fds do not fit under %lu", per, (unsigned long)rl.rlim_cur);

	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/shared", dir);
	int sfd = open(path, O_RDWR | O_CREAT, 0644);
	if (sfd < 0 || fstat(sfd, &st))
		die("create %s: %s", path, strerror(errno));
	shared_ino = st.st_ino;
	move_to(sfd, BASE);
	for (int j = 1; j < SHARED; j++) {
		int fd = open(path, O_RDONLY);
		move_to(fd, BASE + j);
	}

	int ready[2];
	if (pipe2(ready, O_CLOEXEC))
		die("pipe: %s", strerror(errno));
	pid_t kids[16];
	if (procs > 16)
		die("at most 16 processes");
	for (int k = 1; k < procs; k++) {
		kids[k] = fork();
		if (kids[k] < 0)
			die("fork: %s", strerror(errno));
		if (kids[k] == 0) {
			pid_t root = getppid();
			victim_pid = getpid();
			close(ready[0]);
			setup(dir, k);
			if (write(ready[1], "r", 1) != 1)
				_exit(2);
			close(ready[1]);
			victim_wait();
			check(root);
			_exit(victim_failures ? 1 : 0);
		}
	}
	close(ready[1]);
	setup(dir, 0);
	for (int k = 1; k < procs; k++) {
		char c;
		if (read(ready[0], &c, 1) != 1)
			die("child %d did not get ready", k);
	}
	close(ready[0]);
	victim_ready(argv[1]);
	victim_wait();
	check(0);
	for (int k = 1; k < procs; k++) {
		int ws;
		kill(kids[k], SIGTERM);
		if (waitpid(kids[k], &ws, 0) != kids[k] || !WIFEXITED(ws) || WEXITSTATUS(ws))
			fail("child %d ended with %#x", kids[k], ws);
	}
	victim_finish();
}
