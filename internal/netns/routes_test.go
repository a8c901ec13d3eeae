package netns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func msg(typ uint16, payload []byte) []byte {
	m := make([]byte, 16+len(payload))
	binary.NativeEndian.PutUint32(m, uint32(len(m)))
	binary.NativeEndian.PutUint16(m[4:], typ)
	copy(m[16:], payload)
	return m
}

// TestSaveFile: iproute2's save format both ways, and every length
// checked.
func TestSaveFile(t *testing.T) {
	f := &saveFile{magic: routeMagic, msgs: [][]byte{msg(24, make([]byte, 12)), msg(24, make([]byte, 20))}}
	var b bytes.Buffer
	if err := f.write(&b); err != nil {
		t.Fatal(err)
	}
	got, err := readSaveFile(b.Bytes(), routeMagic, "route-1.img")
	if err != nil || len(got.msgs) != 2 || !bytes.Equal(got.msgs[1], f.msgs[1]) {
		t.Fatalf("read back %v (%v)", got, err)
	}
	raw := b.Bytes()
	for name, bad := range map[string][]byte{
		"no magic":         raw[:2],
		"wrong magic":      append([]byte{1, 2, 3, 4}, raw[4:]...),
		"cut header":       raw[:len(raw)-30],
		"cut message":      raw[:len(raw)-1],
		"length too big":   append(append([]byte{}, raw[:4]...), append([]byte{0xff, 0xff, 0, 0}, raw[8:]...)...),
		"length too small": append(append([]byte{}, raw[:4]...), append([]byte{4, 0, 0, 0}, raw[8:]...)...),
	} {
		if _, err := readSaveFile(bad, routeMagic, "route-1.img"); !errors.Is(err, ErrBadImage) {
			t.Errorf("%s: %v, want a bad image", name, err)
		}
	}
}

func FuzzReadSaveFile(f *testing.F) {
	f.Add([]byte{0x24, 0x12, 0x31, 0x45, 16, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := readSaveFile(b, routeMagic, "route-1.img")
		if err != nil {
			return
		}
		for _, m := range s.msgs {
			rtattrs(m, rtmsgLen, func(uint16, []byte) {})
			keepRoute(m)
			routePass(m)
			defaultRule(m)
		}
	})
}

func TestOptions(t *testing.T) {
	o := Options{External: []string{"veth[eth0]:out0@br0", "net[4026531840]:extRootNetNS"}, VethPairs: []string{"eth1=out1"}}
	v, err := o.veths()
	if err != nil || v["eth0"] != (vethOut{"out0", "br0"}) || v["eth1"] != (vethOut{"out1", ""}) {
		t.Errorf("veths %v (%v)", v, err)
	}
	if k := o.externalKey(4026531840); k != "extRootNetNS" {
		t.Errorf("external key %q", k)
	}
	if _, err := (Options{VethPairs: []string{"eth0"}}).veths(); err == nil {
		t.Error("--veth-pair eth0 accepted")
	}
	if _, err := (Options{VethPairs: []string{"eth0=a-name-far-too-long"}}).veths(); err == nil {
		t.Error("an outside name of 21 bytes accepted")
	}
	for j, want := range map[string]string{"123": "/proc/123/ns/net", "/run/netns/x": "/run/netns/x", "/run/netns/y,extra": "/run/netns/y"} {
		if got, err := (Options{Join: j}).joinPath(); err != nil || got != want {
			t.Errorf("--join-ns net:%s: %q (%v), want %q", j, got, err, want)
		}
	}
}
