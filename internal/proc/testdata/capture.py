#!/usr/bin/env python3
"""Regenerates the real-process fixtures in this directory (run as root from
internal/proc/testdata). The hand-made edge cases (handmade-*) are not
produced here; see README in this directory."""
import ctypes, os, select, signal, subprocess, sys, threading, time, mmap, fcntl, socket

out = os.path.dirname(os.path.abspath(__file__))

def cp(src, dst, binary=False):
    with open(src, "rb") as f:
        data = f.read()
    with open(os.path.join(out, dst), "wb") as f:
        f.write(data)

def grab(pid, prefix, files=("maps", "smaps", "stat", "status", "auxv", "mountinfo")):
    for name in files:
        cp("/proc/%d/%s" % (pid, name), "%s.%s" % (prefix, name))

# A sleeping `sleep`.
p = subprocess.Popen(["sleep", "1000"])
time.sleep(0.2)
grab(p.pid, "sleep")
p.kill(); p.wait()

# `cat /proc/self/...`: the reader's own view.
for name in ("maps", "stat", "status", "mountinfo"):
    with open(os.path.join(out, "self." + name), "wb") as f:
        f.write(subprocess.check_output(["cat", "/proc/self/" + name]))

# This python3 process, dressed up with the edge cases a real process can show.
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
tmpdir = "/tmp/stasis proc fixture"
os.makedirs(tmpdir, exist_ok=True)
spaced = os.path.join(tmpdir, "file with spaces (1).bin")
with open(spaced, "wb") as f:
    f.write(b"x" * 8192)
f1 = open(spaced, "rb")
m1 = mmap.mmap(f1.fileno(), 8192, prot=mmap.PROT_READ)
gone = os.path.join(tmpdir, "gone soon")
with open(gone, "wb") as f:
    f.write(b"y" * 4096)
f2 = open(gone, "r+b")
m2 = mmap.mmap(f2.fileno(), 4096)
os.unlink(gone)
memfd = os.memfd_create("stasis memfd", 0)
os.ftruncate(memfd, 4096)
m3 = mmap.mmap(memfd, 4096)
m3[0] = 1
shm = mmap.mmap(-1, 8192, flags=mmap.MAP_SHARED)
shm[0] = 1

# fds of many kinds for fdinfo fixtures
r, w = os.pipe()
efd = os.eventfd(7, os.EFD_NONBLOCK)
ep = select.epoll()
ep.register(r, select.EPOLLIN)
ep.register(efd, select.EPOLLIN | select.EPOLLET)
IN_ALL = 0xfff
ifd = libc.inotify_init1(0)
libc.inotify_add_watch(ifd, b"/tmp", IN_ALL)
libc.inotify_add_watch(ifd, tmpdir.encode(), 0x2)
tfd = libc.timerfd_create(1, 0)
class ts(ctypes.Structure):
    _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
class its(ctypes.Structure):
    _fields_ = [("interval", ts), ("value", ts)]
libc.timerfd_settime(tfd, 0, ctypes.byref(its(ts(5, 0), ts(100, 0))), None)
mask = ctypes.c_uint64((1 << (signal.SIGUSR1 - 1)) | (1 << (signal.SIGUSR2 - 1)))
sfd = libc.signalfd(-1, ctypes.byref(mask), 0)
lockf = open(spaced, "r+b")
lockf.seek(123)
fcntl.flock(lockf, fcntl.LOCK_EX)
pidfd = os.pidfd_open(os.getpid())
sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
fds = {"pipe": w, "eventfd": efd, "epoll": ep.fileno(), "inotify": ifd, "timerfd": tfd,
       "signalfd": sfd, "flock": lockf.fileno(), "pidfd": pidfd, "socket": sk.fileno(), "reg": f1.fileno()}

# A thread, and a comm with spaces and parentheses set through prctl.
ev = threading.Event()
t = threading.Thread(target=ev.wait); t.start()
libc.prctl(PR_SET_NAME, b"a) b (c) d", 0, 0, 0)
pid = os.getpid()
grab(pid, "python3")
for kind, fd in fds.items():
    assert fd >= 0, kind
    cp("/proc/%d/fdinfo/%d" % (pid, fd), "fdinfo-%s" % kind)
# comm with a newline and a trailing ')': stat prints comm raw, status escapes it.
libc.prctl(PR_SET_NAME, b"x)\ny) ", 0, 0, 0)
cp("/proc/%d/stat" % pid, "python3-newline-comm.stat")
cp("/proc/%d/status" % pid, "python3-newline-comm.status")
libc.prctl(PR_SET_NAME, b"python3", 0, 0, 0)
with open(os.path.join(out, "python3.tasks"), "w") as f:
    f.write(" ".join(sorted(os.listdir("/proc/%d/task" % pid), key=int)) + "\n")
ev.set(); t.join()
os.unlink(spaced); os.rmdir(tmpdir)
