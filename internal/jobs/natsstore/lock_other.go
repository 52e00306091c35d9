//go:build !unix

package natsstore

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir creates dir and opens its lock file; on this platform nothing
// stops a second process from using the directory.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("job store directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("job store lock: %w", err)
	}
	return f, nil
}
