package images

import "google.golang.org/protobuf/proto"

// Single is one single-entry image to write (WriteParallel).
type Single struct {
	Name string
	Msg  proto.Message
}

// WriteParallel writes many single-entry images (a core image per
// thread: ten thousand for a big process) on a few goroutines: each is a
// create, a write and a rename, bound by file system latency.
func (d *Dir) WriteParallel(imgs []Single) error {
	const workers = 4
	jobs := make(chan Single)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			var first error
			for im := range jobs {
				if first == nil {
					first = d.Write(im.Name, im.Msg)
				}
			}
			errs <- first
		}()
	}
	for _, im := range imgs {
		jobs <- im
	}
	close(jobs)
	var first error
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
