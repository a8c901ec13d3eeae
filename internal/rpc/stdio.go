package rpc

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// stdioExternal returns the root's stdio pipes (fds 0-2) that a process
// outside the tree also holds, as --external values (pipe:[INO]).
//
// A runtime runs a container with pipes it holds the other end of as its
// stdio, records them in descriptors.json at checkpoint, and at restore
// gives pipes of its own in their place with inherit_fd keyed pipe:[INO].
// criu dumps such a pipe without a word; stasis refuses a pipe shared
// with the outside unless --external names it (a restore without the
// other end would leave the program writing to nobody), so over RPC the
// root's stdio pipes are named for the runtime, as it expects.
func stdioExternal(root int) ([]string, error) {
	var keys []string
	for fd := 0; fd <= 2; fd++ {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", root, fd))
		if err != nil || !strings.HasPrefix(l, "pipe:[") || slices.Contains(keys, l) {
			continue
		}
		keys = append(keys, l)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	tree := treePids(root)
	held := map[string]bool{}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("rpc: stdio pipes of pid %d: %w", root, err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || tree[pid] || pid == os.Getpid() {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // gone, or a kernel thread
		}
		for _, f := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, f.Name()))
			if err == nil && slices.Contains(keys, l) {
				held[l] = true
			}
		}
	}
	var out []string
	for _, k := range keys {
		if held[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// treePids is root and its descendants (through every thread's
// children), as the dump will find them; a task that comes or goes
// meanwhile only changes which pipes are named.
func treePids(root int) map[int]bool {
	tree := map[int]bool{}
	todo := []int{root}
	for len(todo) > 0 {
		pid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if tree[pid] {
			continue
		}
		tree[pid] = true
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, t := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
			for _, c := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(c); err == nil {
					todo = append(todo, n)
				}
			}
		}
	}
	return tree
}
