package batch

import (
	"fmt"
	"io"
	"os"
)

// spooled is a temporary file holding a copy of stored content; Close
// removes it.
type spooled struct{ *os.File }

func (s spooled) Close() error {
	err := s.File.Close()
	os.Remove(s.Name())
	return err
}

// spool copies rc (then closes it) into a temporary file and returns the
// file at its start. A JetStream object is read as a stream of pushed
// chunks that must be taken at the engine's pace; a consumer that stalls
// (a slow HTTP client, a batch submitting its lines over hours) must read
// a local copy instead.
func spool(rc io.ReadCloser) (spooled, error) {
	defer rc.Close()
	f, err := os.CreateTemp("", "sluice-batch-*")
	if err != nil {
		return spooled{}, fmt.Errorf("spool: %w", err)
	}
	s := spooled{f}
	if _, err := io.Copy(f, rc); err != nil {
		s.Close()
		return spooled{}, fmt.Errorf("spool: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		s.Close()
		return spooled{}, fmt.Errorf("spool: %w", err)
	}
	return s, nil
}
