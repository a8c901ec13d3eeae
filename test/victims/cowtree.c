/*
 * cowtree: N children share MIB MiB of copy-on-write memory with their parent.
 *
 *   cowtree READY [MIB [N]]        default 256 MiB, 8 children
 *
 * The root fills MIB MiB of private anonymous memory, then forks N children
 * ("cow-0".."cow-N-1") that only read it, so every page is shared by N+1
 * processes; each child also fills 64 KiB of its own. READY comes when every
 * child has named itself. The harness compares the memory the tree uses
 * (sum of Pss) before the dump and after the restore.
 *
 * On SIGTERM the root checks the region, sends SIGTERM to each child (only
 * if /proc shows it as its own live child) and reaps them; each child checks
 * its pid, its parent, the whole shared region (reading: no copy) and its own
 * 64 KiB, and exits 0 or 1. The root exits 0 only if all are 0.
 * A child whose parent changes, and a root orphaned to init in the pid
 * namespace it started in (the harness was killed), exit 1 at once.
 */
#include "victim.h"
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define MAXKIDS 64
#define OWN_WORDS (64 * 1024 / 8)

static uint64_t *region;
static size_t words;
static uint64_t own[OWN_WORDS];

static int child_named(int pid, int i)
{
	char path[64], buf[32] = "", want[16];
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	snprintf(want, sizeof(want), "cow-%d\n", i);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 && !strcmp(buf, want);
}

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
	return p && sscanf(p + 1, " %c %d", &state, &ppid) == 2 && ppid == getpid() && state != 'Z';
}

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

static void __attribute__((noreturn)) child(int i, pid_t parent)
{
	char name[16];

	victim_failures = 0;
	victim_init();
	fill(own, OWN_WORDS, 300 + i);
	snprintf(name, sizeof(name), "cow-%d", i);
	prctl(PR_SET_NAME, name);
	while (!got_term) {
		if (getppid() != parent) {
			fail("%s: its parent changed from %d to %d before the check: leaving", name, parent, getppid());
			exit(1);
		}
		sleep_ms(10);
	}
	if (getppid() != parent)
		fail("%s: getppid() is %d, want %d", name, getppid(), parent);
	check_fill("shared copy-on-write region", region, words, 21);
	check_fill("own 64 KiB", own, OWN_WORDS, 300 + i);
	if (getpid() != victim_pid)
		fail("%s: getpid() is %d, was %d", name, getpid(), victim_pid);
	exit(victim_failures ? 1 : 0);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: cowtree READY [MIB [N]]");
	long mib = argc > 2 ? atol(argv[2]) : 256;
	int n = argc > 3 ? atoi(argv[3]) : 8;
	if (mib < 1 || n < 1 || n > MAXKIDS)
		die("bad MIB or N");
	victim_init();
	remember_pidns();
	words = (size_t)mib << 20 >> 3;
	region = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap %ld MiB: %s", mib, strerror(errno));
	fill(region, words, 21);

	pid_t kids[MAXKIDS];
	for (int i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork: %s", strerror(errno));
		if (kids[i] == 0)
			child(i, victim_pid);
	}
	for (int i = 0; i < n; i++) {
		int k;
		for (k = 0; k < 1000 && !child_named(kids[i], i); k++)
			sleep_ms(10);
		if (k == 1000) {
			for (int j = 0; j < n; j++)
				kill(kids[j], SIGKILL);
			die("child %d (pid %d) did not start", i, kids[i]);
		}
	}
	say("cowtree: %ld MiB at %p shared by pid %d and %d children", mib, (void *)region, getpid(), n);
	for (int i = 0; i < n; i++)
		say("cowtree: child cow-%d is pid %d", i, kids[i]);
	victim_ready(argv[1]);

	while (!got_term) {
		if (harness_gone()) {
			fail("orphaned (parent is init): the harness is gone, leaving");
			exit(1);
		}
		sleep_ms(10);
	}
	check_fill("shared copy-on-write region (root)", region, words, 21);
	for (int i = 0; i < n; i++)
		if (own_child(kids[i]))
			kill(kids[i], SIGTERM);
	for (int i = 0; i < n; i++) {
		int st = 0, r = 0;
		for (int k = 0; k < 1200 && (r = waitpid(kids[i], &st, WNOHANG)) == 0; k++)
			sleep_ms(10);
		if (r != kids[i])
			fail("child cow-%d (pid %d): %s", i, kids[i], r == 0 ? "did not exit in 12 s" : strerror(errno));
		else if (!WIFEXITED(st) || WEXITSTATUS(st))
			fail("child cow-%d (pid %d) ended with status %#x", i, kids[i], st);
	}
	victim_finish();
}
