/*
 * Shared protocol code for the e2e victims (see README.md).
 *
 * A victim is started as `victim READY_FILE [args...]`, sets its state up,
 * creates READY_FILE, then works or waits. On SIGTERM it verifies its whole
 * state: every lost item is reported as a "FAIL: ..." line on stderr and the
 * exit status is 1; otherwise it prints "PASS" and exits 0.
 *
 * Everything here uses write(2)-level output only: no stdio buffers that could
 * be half-flushed at dump time, and no malloc after setup (the maps test
 * compares the layout before and after a restore).
 */
#ifndef VICTIM_H
#define VICTIM_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Not every victim uses every helper. */
#define VFN static __attribute__((unused))

static volatile sig_atomic_t got_term;
static pid_t victim_pid;
static int victim_failures;

VFN void on_term(int sig)
{
	(void)sig;
	got_term = 1;
}

/* fail records one lost item; the victim keeps checking the rest. */
VFN __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "FAIL: ");

	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(2, buf, n) < 0) { /* nothing better to do */ }
	victim_failures++;
}

/* die is for setup errors: the victim cannot even start its scenario. */
VFN __attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "SETUP: ");

	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(2, buf, n) < 0) { /* nothing better to do */ }
	exit(2);
}

VFN __attribute__((format(printf, 1, 2))) void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(1, buf, n) < 0) { /* nothing better to do */ }
}

/*
 * victim_init remembers the pid (checked again at the end) and installs the
 * SIGTERM handler without SA_RESTART, so that sleeps return at once.
 */
VFN void victim_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL))
		die("sigaction(SIGTERM): %s", strerror(errno));
	victim_pid = getpid();
}

VFN void victim_ready(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0)
		die("create ready file %s: %s", path, strerror(errno));
	close(fd);
}

VFN void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL); /* EINTR is fine: callers loop */
}

/* victim_wait sleeps until SIGTERM. */
VFN void victim_wait(void)
{
	while (!got_term)
		sleep_ms(10);
}

/* victim_finish does the checks common to every victim and exits. */
VFN __attribute__((noreturn)) void victim_finish(void)
{
	if (getpid() != victim_pid)
		fail("getpid() = %d, was %d at start", getpid(), victim_pid);
	if (victim_failures) {
		say("%d check(s) failed", victim_failures);
		exit(1);
	}
	say("PASS");
	exit(0);
}

/*
 * move_to puts fd, just made by a call that returns -1 on failure, at
 * number target (closing fd).
 */
VFN void move_to(int fd, int target)
{
	if (fd < 0)
		die("create fd %d: %s", target, strerror(errno));
	if (fd == target)
		return;
	if (dup2(fd, target) != target)
		die("dup2 to %d: %s", target, strerror(errno));
	close(fd);
}

/* open_at opens DIR/NAME (creating it) with flags at fd number target. */
VFN void open_at(const char *dir, const char *name, int flags, int target)
{
	char p[4096];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	move_to(open(p, flags | O_CREAT, 0644), target);
}

/* pattern is the value of word i of a region seeded with seed. */
VFN inline uint64_t pattern(uint64_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ (seed << 56 | seed);

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ULL;
	return x ^ (x >> 32);
}

VFN void fill(uint64_t *p, size_t words, uint64_t seed)
{
	for (size_t i = 0; i < words; i++)
		p[i] = pattern(seed, i);
}

/* check_fill reports the first word that differs from the pattern. */
VFN int check_fill(const char *what, const uint64_t *p, size_t words, uint64_t seed)
{
	for (size_t i = 0; i < words; i++) {
		if (p[i] != pattern(seed, i)) {
			fail("%s: word %zu (byte offset %#zx, address %p) is %#llx, want %#llx",
			     what, i, i * 8, (void *)&p[i], (unsigned long long)p[i],
			     (unsigned long long)pattern(seed, i));
			return -1;
		}
	}
	return 0;
}

#endif
