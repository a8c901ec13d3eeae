package cgroup

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	cgpb "github.com/checkpoint-restore/go-criu/v8/crit/images/cgroup"
	"google.golang.org/protobuf/proto"
)

func TestParseMembers(t *testing.T) {
	in := "9:name=systemd:/\n8:pids:/a\n1:cpu,cpuacct:/\n0::/x/y\n"
	ms, err := parseMembers([]byte(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []member{{name: "", path: "/x/y"}, {name: "cpu,cpuacct", path: "/"}, {name: "name=systemd", path: "/"}, {name: "pids", path: "/a"}}
	if !reflect.DeepEqual(ms, want) {
		t.Errorf("got %v, want %v (sorted by name as criu)", ms, want)
	}
	if _, err := parseMembers([]byte("garbage\n"), nil); err == nil {
		t.Error("a line without ID:CONTROLLERS:PATH was taken")
	}
	ms, _ = parseMembers([]byte(in), func(n string) bool { return n != "pids" })
	if len(ms) != 1 || ms[0].name != "pids" {
		t.Errorf("skip: %v", ms)
	}
}

func TestContainsAndYard(t *testing.T) {
	for _, c := range []struct {
		cnames []string
		name   string
		want   bool
	}{
		{[]string{""}, "", true}, {[]string{""}, "memory", false}, {[]string{"memory"}, "", false},
		{[]string{"cpu", "cpuacct"}, "cpu,cpuacct", true}, {[]string{"cpu"}, "cpuacct", false},
		{[]string{"name=systemd"}, "name=systemd", true},
	} {
		if got := contains(c.cnames, c.name); got != c.want {
			t.Errorf("contains(%q, %q) = %v", c.cnames, c.name, got)
		}
	}
	if y := yardName([]string{"cpu", "cpuacct"}); y != "cpu,cpuacct" {
		t.Error(y)
	}
	if y := yardName([]string{"name=systemd"}); y != "systemd" {
		t.Error(y)
	}
	if y := yardName([]string{""}); y != "unified" {
		t.Error(y)
	}
}

func TestParseModeRoot(t *testing.T) {
	for s, want := range map[string]Mode{"": ModeSoft, "soft": ModeSoft, "none": ModeNone, "props": ModeProps, "full": ModeFull, "strict": ModeStrict, "ignore": ModeIgnore} {
		if m, err := ParseMode(s); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("bogus"); !errors.Is(err, ErrBadOption) {
		t.Errorf("bogus mode: %v", err)
	}
	for s, want := range map[string]Root{"/a": {Global: true, Path: "/a"}, "memory:/b": {Controller: "memory", Path: "/b"}, ":/c": {Path: "/c"}} {
		if r, err := ParseRoot(s); err != nil || r != want {
			t.Errorf("ParseRoot(%q) = %+v, %v", s, r, err)
		}
	}
	if _, err := ParseRoot("memory:rel"); !errors.Is(err, ErrBadOption) {
		t.Errorf("relative root: %v", err)
	}
}

func TestProps(t *testing.T) {
	pt, err := newPropTable(`"memory":
 - "strategy": "merge"
 - "properties": [ "memory.high",
   "memory.limit_in_bytes" ]
"pids":
 - "strategy": "replace"
 - "properties": [ ]
`, "")
	if err != nil {
		t.Fatal(err)
	}
	if m := pt["memory"]; m[len(m)-1] != "memory.high" || len(m) != len(defaultProps["memory"])+1 {
		t.Errorf("merge: %v", m)
	}
	if len(pt["pids"]) != 0 {
		t.Errorf("replace: %v", pt["pids"])
	}
	for _, bad := range []string{`"cpu":` + "\n - \"strategy\": \"mix\"", `"cpu":` + "\n - \"properties\": [ \"a\" ]", ` - "strategy": "merge"`, `"cpu":` + "\n - \"bogus\": 1"} {
		if _, err := newPropTable(bad, ""); !errors.Is(err, ErrBadOption) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := newPropTable("", "/nonexistent/props"); err == nil {
		t.Error("a missing --cgroup-props-file was taken")
	}
}

func TestReadProp(t *testing.T) {
	dir := t.TempDir()
	w := func(n, v string) string {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ name, content, want string }{
		{"memory.limit_in_bytes", "9223372036854775807\n", "-1"},
		{"memory.oom_control", "oom_kill_disable 1\nunder_oom 0\n", "1"},
		{"cgroup.procs", "12\n13\n", ""},
		{"pids.max", "max\n", "max"},
		{"devices.list", "a *:* rwm\n", "a *:* rwm"},
	} {
		pe, err := readProp(w(c.name, c.content), c.name)
		if err != nil || pe.GetValue() != c.want || pe.GetPerms().GetMode()&0o777 != 0o644 {
			t.Errorf("%s: %v %v", c.name, pe, err)
		}
	}
	if pe, err := readProp(filepath.Join(dir, "missing"), "missing"); pe != nil || err != nil {
		t.Errorf("missing: %v %v", pe, err)
	}
}

func TestFindDir(t *testing.T) {
	a := &dirNode{path: "/a"}
	ab := &dirNode{path: "/a/b"}
	a.children = []*dirNode{ab}
	heads := []*dirNode{a}
	if f, _, ex := findDir(heads, "/a/b"); !ex || f != ab {
		t.Error("exact")
	}
	if _, p, ex := findDir(heads, "/a/b/c"); ex || p != ab {
		t.Error("parent")
	}
	if _, p, ex := findDir(heads, "/ab"); ex || p != nil {
		t.Error("/ab is not under /a")
	}
	root := &dirNode{path: "/"}
	if _, p, _ := findDir([]*dirNode{root}, "/x"); p != root {
		t.Error("under /")
	}
}

func TestRewriteRoots(t *testing.T) {
	s := func(v string) *string { return proto.String(v) }
	e := &cgpb.CgroupEntry{
		Sets: []*cgpb.CgSetEntry{{Id: proto.Uint32(2), Ctls: []*cgpb.CgMemberEntry{
			{Name: s("memory"), Path: s("/old/main")},
			{Name: s("pids"), Path: s("/p")},
			{Name: s(""), Path: s("/ns/in"), CgnsPrefix: proto.Uint32(3)},
		}}},
		Controllers: []*cgpb.CgControllerEntry{
			{Cnames: []string{"memory"}, Dirs: []*cgpb.CgroupDirEntry{{DirName: s("old/main")}}},
			{Cnames: []string{"pids"}, Dirs: []*cgpb.CgroupDirEntry{{DirName: s("p")}}},
			{Cnames: []string{""}, Dirs: []*cgpb.CgroupDirEntry{{DirName: s("ns")}}},
		},
	}
	r := &Restorer{img: e, opts: RestoreOptions{Roots: []Root{{Controller: "memory", Path: "/new"}, {Path: "/v2"}}}, log: nil}
	r.log = discard()
	if err := r.rewriteRoots(); err != nil {
		t.Fatal(err)
	}
	ctls := e.Sets[0].Ctls
	if ctls[0].GetPath() != "/new" || e.Controllers[0].Dirs[0].GetDirName() != "new" {
		t.Errorf("memory: %s, dir %s", ctls[0].GetPath(), e.Controllers[0].Dirs[0].GetDirName())
	}
	if ctls[1].GetPath() != "/p" {
		t.Errorf("pids moved: %s", ctls[1].GetPath())
	}
	if ctls[2].GetPath() != "/v2/in" || ctls[2].GetCgnsPrefix() != 3 {
		t.Errorf("v2 with a cgns prefix: %s prefix %d", ctls[2].GetPath(), ctls[2].GetCgnsPrefix())
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
