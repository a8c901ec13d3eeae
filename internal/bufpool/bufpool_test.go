package bufpool

import "testing"

func TestPoolKeepsUpToMax(t *testing.T) {
	p := New(4096, 1)
	a, putA := p.Get(100)
	if len(a) != 100 || cap(a) != 4096 {
		t.Fatalf("Get(100): len %d cap %d", len(a), cap(a))
	}
	b, putB := p.Get(4096)
	putA()
	putB() // beyond max: dropped
	c, _ := p.Get(10)
	if &c[:1][0] != &a[:1][0] {
		t.Fatal("the kept buffer was not handed out again")
	}
	if &c[:1][0] == &b[:1][0] {
		t.Fatal("a buffer beyond max was kept")
	}
	if big, _ := p.Get(8192); len(big) != 8192 {
		t.Fatalf("Get(8192): len %d", len(big))
	}
}
