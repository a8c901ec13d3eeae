/*
 * lease: holds file leases (fcntl F_SETLEASE) on files of DIR.
 *
 *   lease READY DIR active|breaking [UID]
 *
 * - fd 50: DIR/rd (O_RDONLY), a read lease;
 * - fd 51: DIR/wr (O_RDWR), a write lease, F_SETSIG SIGRTMIN+2 (its break
 *   signal carries si_fd 51).
 * SIGIO and SIGRTMIN+2 stay blocked; the victim takes them with
 * sigtimedwait. With UID it gives both files to UID and becomes UID (all
 * uids and gids, no groups, dumpable again) before taking the leases, as
 * an unprivileged owner may.
 *
 * active: it handles a lease break at once: on SIGRTMIN+2 it records the
 * signal's si_fd and the lease's type (F_GETLEASE, the break's target),
 * gives the write lease up (F_UNLCK) and says "break: ...".
 * breaking: it does not handle breaks until SIGUSR1 (the test breaks the
 * lease before the dump, so the break signal is pending at the dump); on
 * SIGUSR1 it records F_GETLEASE of fd 51 first (the lease must still be
 * being broken), then handles the pending signal as above.
 *
 * On SIGTERM it checks: the read lease of fd 50 (F_GETLEASE F_RDLCK), the
 * signal of fd 51 (F_GETSIG; at the break, as giving a lease up resets
 * it), no SIGIO ever, no signal left pending, and
 * for fd 51 either no break (active, never broken: the write lease is
 * still held) or exactly one break signal, with si_fd 51, while the lease
 * was being broken to F_UNLCK, and no lease since (breaking mode requires
 * that one break).
 */
#include "victim.h"
#include <grp.h>
#include <sys/prctl.h>

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static int getlease(int fd)
{
	return fcntl(fd, F_GETLEASE);
}

int main(int argc, char **argv)
{
	int breaking, sig_wr, breaks = 0, sigios = 0, break_fd = -1, lease_at_break = -1, lease_at_go = -1, sig_at_break = -1;
	long uid = -1;
	sigset_t set;
	struct sigaction sa;

	if (argc < 4 || (strcmp(argv[3], "active") && strcmp(argv[3], "breaking")))
		die("usage: lease READY DIR active|breaking [UID]");
	breaking = !strcmp(argv[3], "breaking");
	if (argc > 4)
		uid = atol(argv[4]);
	victim_init();
	sig_wr = SIGRTMIN + 2;
	sigemptyset(&set);
	sigaddset(&set, SIGIO);
	sigaddset(&set, sig_wr);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		die("sigprocmask: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction(SIGUSR1): %s", strerror(errno));

	open_at(argv[2], "rd", O_RDONLY, 50);
	open_at(argv[2], "wr", O_RDWR, 51);
	if (uid >= 0) {
		if (fchown(50, uid, uid) || fchown(51, uid, uid))
			die("fchown to %ld: %s", uid, strerror(errno));
		if (setgroups(0, NULL) || setresgid(uid, uid, uid) || setresuid(uid, uid, uid))
			die("become uid %ld: %s", uid, strerror(errno));
		if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0))
			die("PR_SET_DUMPABLE: %s", strerror(errno));
	}
	if (fcntl(51, F_SETSIG, sig_wr))
		die("F_SETSIG: %s", strerror(errno));
	if (fcntl(50, F_SETLEASE, F_RDLCK))
		die("read lease on fd 50: %s", strerror(errno));
	if (fcntl(51, F_SETLEASE, F_WRLCK))
		die("write lease on fd 51: %s", strerror(errno));
	victim_ready(argv[1]);

	if (!breaking)
		go = 1;
	while (!got_term) {
		struct timespec ts = { 0, 10 * 1000000L };
		siginfo_t si;
		int s;

		if (!go) {
			sleep_ms(10);
			continue;
		}
		if (lease_at_go == -1)
			lease_at_go = getlease(51);
		s = sigtimedwait(&set, &si, &ts);
		if (s == SIGIO) {
			sigios++;
		} else if (s == sig_wr) {
			breaks++;
			break_fd = si.si_fd;
			lease_at_break = getlease(51);
			sig_at_break = fcntl(51, F_GETSIG);
			if (fcntl(51, F_SETLEASE, F_UNLCK))
				fail("give the lease of fd 51 up: %s", strerror(errno));
			say("break: signal %d si_fd %d lease %d", s, si.si_fd, lease_at_break);
		}
	}

	if (getpid() != victim_pid)
		fail("pid %d, want %d", getpid(), victim_pid);
	if (uid >= 0 && (getuid() != (uid_t)uid || geteuid() != (uid_t)uid))
		fail("uid %d euid %d, want %ld", getuid(), geteuid(), uid);
	if (getlease(50) != F_RDLCK)
		fail("fd 50: F_GETLEASE %d, want F_RDLCK (%d)", getlease(50), F_RDLCK);
	if (sigios)
		fail("%d SIGIO", sigios);
	{
		struct timespec zero = { 0, 0 };
		int s = sigtimedwait(&set, NULL, &zero);

		if (s > 0)
			fail("signal %d still pending", s);
	}
	if (breaking && lease_at_go != F_UNLCK)
		fail("fd 51: F_GETLEASE %d when told to go, want the lease being broken to F_UNLCK (%d)", lease_at_go, F_UNLCK);
	if (breaks == 0) {
		if (breaking)
			fail("fd 51: no lease break signal");
		else if (getlease(51) != F_WRLCK)
			fail("fd 51: F_GETLEASE %d, want F_WRLCK (%d)", getlease(51), F_WRLCK);
		if (fcntl(51, F_GETSIG) != sig_wr)
			fail("fd 51: F_GETSIG %d, want %d", fcntl(51, F_GETSIG), sig_wr);
	} else {
		if (breaks != 1)
			fail("fd 51: %d lease break signals, want 1", breaks);
		if (break_fd != 51)
			fail("break signal with si_fd %d, want 51", break_fd);
		/* Giving a lease up resets the signal (lease_modify): read before. */
		if (sig_at_break != sig_wr)
			fail("fd 51: F_GETSIG %d at the break, want %d", sig_at_break, sig_wr);
		if (lease_at_break != F_UNLCK)
			fail("fd 51: F_GETLEASE %d at the break, want F_UNLCK (%d)", lease_at_break, F_UNLCK);
		if (getlease(51) != F_UNLCK)
			fail("fd 51: F_GETLEASE %d after giving it up", getlease(51));
	}
	if (victim_failures)
		return 1;
	say("PASS");
	return 0;
}
