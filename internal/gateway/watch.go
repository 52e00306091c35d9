package gateway

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchConfig reloads when the config file's content changes. It watches the
// directory, not the file, because editors and Kubernetes ConfigMaps replace
// files rather than write them in place; events are debounced so one save is
// one reload.
func (s *Server) watchConfig(ctx context.Context, path string) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.logger.Warn("config file watch unavailable; reload with SIGHUP or POST /api/reload", "err", err)
		return
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(path)); err != nil {
		s.logger.Warn("config file watch unavailable; reload with SIGHUP or POST /api/reload", "err", err)
		return
	}
	last, _ := os.ReadFile(path)
	const debounce = 250 * time.Millisecond
	var timer <-chan time.Time
	base := filepath.Base(path)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			// ConfigMap updates swap a ..data symlink; other names are noise.
			if n := filepath.Base(ev.Name); n == base || n == "..data" {
				timer = time.After(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.logger.Warn("config file watch", "err", err)
		case <-timer:
			timer = nil
			cur, err := os.ReadFile(path)
			if err != nil || bytes.Equal(cur, last) {
				continue
			}
			last = cur
			s.logger.Info("config file changed; reloading", "path", path)
			_ = s.Reload() // logged and counted by Reload
		}
	}
}
