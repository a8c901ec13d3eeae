package tty

import (
	"path/filepath"
	"testing"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// The restore reads tty-info.img and tty-data.img when it opens the first
// terminal. These targets run that reader on the real dumps of
// test/images with one of them replaced by the fuzzer's bytes.

func fuzzTty(t *testing.T, path string) error {
	d, err := images.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	r := files.NewRestorer(files.RestoreOptions{}, d, nil, nil)
	defer func() {
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	s, err := restoreState(r)
	if err != nil {
		return err
	}
	for _, info := range s.infos {
		_ = ttyName(info)
	}
	return nil
}

func FuzzTtyInfo(f *testing.F) { testutil.FuzzSeedImages(f, "tty-info.img", fuzzTty) }
func FuzzTtyData(f *testing.F) { testutil.FuzzSeedImages(f, "tty-data.img", fuzzTty) }
