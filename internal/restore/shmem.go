package restore

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/stasis-cr/stasis/internal/mem"
)

// shmemObjects are the shared anonymous memory objects of the restore.
// Each is created once, in stasis, and filled from its pagemap-shmem
// image; every VMA of it, in every task, maps that object's file - not a
// fresh MAP_ANONYMOUS region - so that processes which shared it share it
// again whatever the way they came to (fork, then the parent unmapped it;
// mremap; a sibling's copy), and pages written by processes gone before
// the dump are there (criu's restore_shmem).
type shmemObjects struct {
	mu    sync.Mutex
	files map[uint64]*os.File
}

// open returns the object shmid, creating it the first time.
func (s *shmemObjects) open(imgs *imageSet, shmid uint64) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[shmid]; f != nil {
		return f, nil
	}
	size := imgs.shmemSize[shmid]
	f, err := mem.NewShmem(size)
	if err != nil {
		return nil, fmt.Errorf("shared memory %d: %w", shmid, err)
	}
	if err := mem.FillShmem(imgs.dir, shmid, size, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("shared memory %d: %w", shmid, err)
	}
	if s.files == nil {
		s.files = map[uint64]*os.File{}
	}
	s.files[shmid] = f
	return f, nil
}

// Close drops stasis' references: the objects live on in the tasks'
// mappings.
func (s *shmemObjects) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	s.files = nil
	return errors.Join(errs...)
}
