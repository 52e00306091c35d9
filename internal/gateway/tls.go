package gateway

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// certReloader serves the listener's certificate and picks up new files
// (renewed by cert-manager, certbot, ...) without a restart: at most once a
// second it compares the files' modification times and reloads on change. A
// bad new pair keeps the old certificate.
type certReloader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	lastCheck time.Time
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certReloader) load() error {
	cs, err := os.Stat(c.certFile)
	if err != nil {
		return fmt.Errorf("tls cert_file: %w", err)
	}
	ks, err := os.Stat(c.keyFile)
	if err != nil {
		return fmt.Errorf("tls key_file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s and %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert, c.certMod, c.keyMod = &cert, cs.ModTime(), ks.ModTime()
	return nil
}

// GetCertificate is the tls.Config hook.
func (c *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.lastCheck) >= time.Second {
		c.lastCheck = now
		cs, err1 := os.Stat(c.certFile)
		ks, err2 := os.Stat(c.keyFile)
		if err1 == nil && err2 == nil && (!cs.ModTime().Equal(c.certMod) || !ks.ModTime().Equal(c.keyMod)) {
			_ = c.load() // keep serving the old pair if the new one is incomplete or broken
		}
	}
	return c.cert, nil
}
