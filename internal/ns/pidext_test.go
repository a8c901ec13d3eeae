package ns

import "testing"

func TestExternalPidKey(t *testing.T) {
	ext := []string{"net[4026531840]:netkey", "pid[4026532175]:ctpid", "pipe:[12]"}
	for _, c := range []struct {
		ino  uint64
		want string
	}{{4026532175, "ctpid"}, {4026531840, ""}, {1, ""}} {
		if got := externalPidKey(ext, c.ino); got != c.want {
			t.Errorf("externalPidKey(%d) = %q, want %q", c.ino, got, c.want)
		}
	}
}

func TestLoadPidMissingKey(t *testing.T) {
	r := &Restorer{pidExtKey: "ctpid"}
	if err := r.LoadPid(map[string]int{"other": 5}, false); err == nil {
		t.Fatal("LoadPid without the key's --inherit-fd: no error")
	}
	if err := r.LoadPid(map[string]int{"ctpid": 0}, true); err == nil {
		t.Fatal("LoadPid with --pidns: no error")
	}
	if err := (&Restorer{}).LoadPid(nil, false); err != nil {
		t.Fatalf("LoadPid of images without an external pid namespace: %v", err)
	}
}
