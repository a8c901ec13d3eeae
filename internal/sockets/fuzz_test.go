package files

// FuzzSkQueues: the queued messages of unix sockets, with the files they
// carry (SCM_RIGHTS), against the sockets of files.img.
func FuzzSkQueues(f *testing.F) {
	fuzzKind(f, "sk-queues.img", func(t *testing.T, r *Restorer, path string) error {
		b := &unixBuild{r: r, byIno: map[uint32]*usk{}, byID: map[uint32]*usk{}}
		if err := b.collect(); err != nil {
			t.Fatalf("seed files.img: %v", err)
		}
		return readUnixQueues(r.Dir, b.byID, func(id uint32) bool { return r.Files[id] != nil })
	})
}

// FuzzUnixFiles: the unix socket entries of files.img as the restore
// indexes and checks them before it makes any socket.
func FuzzUnixFiles(f *testing.F) {
	fuzzKind(f, "files.img", func(t *testing.T, r *Restorer, path string) error {
		b := &unixBuild{r: r, byIno: map[uint32]*usk{}, byID: map[uint32]*usk{}}
		if err := b.collect(); err != nil {
			return err
		}
		for _, s := range b.all {
			_ = s.String()
			_ = s.addr()
			_ = b.peer(s)
		}
		return nil
	})
}

func FuzzTCPStream(f *testing.F) {
	fuzzKind(f, "tcp-stream-*.img", func(t *testing.T, r *Restorer, path string) error {
		var ino uint32
		if _, err := fmt.Sscanf(filepath.Base(path), "tcp-stream-%d.img", &ino); err != nil {
			t.Fatal(err)
		}
		e, inq, outq, err := readTCPStreamImage(r.Dir, ino)
		if err == nil && (uint64(len(inq)) != uint64(e.GetInqLen()) || uint64(len(outq)) != uint64(e.GetOutqLen())) {
			t.Fatalf("queues of %d and %d bytes for lengths %d and %d", len(inq), len(outq), e.GetInqLen(), e.GetOutqLen())
		}
		return err
	})
}
