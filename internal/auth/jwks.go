package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

const (
	// urlRefreshInterval is how often a jwks_url is fetched again, so that
	// keys the issuer removes stop being accepted.
	urlRefreshInterval = 5 * time.Minute
	// fileRefreshInterval is how often a jwks_file is checked for changes
	// (a stat; the file is read only when its size or time changed).
	fileRefreshInterval = 10 * time.Second
	// minDemandGap spaces refreshes asked for by tokens with an unknown key
	// id, so a stream of forged kids cannot turn the gateway into a load
	// generator against the issuer.
	minDemandGap = 10 * time.Second
	// fetchTimeout bounds one JWKS fetch.
	fetchTimeout = 10 * time.Second
	// maxJWKSBytes bounds a JWKS document.
	maxJWKSBytes = 1 << 20
	// minRSABits is the smallest RSA modulus accepted.
	minRSABits = 2048
)

// verifyKey is one public key from a JWKS.
type verifyKey struct {
	kid string
	alg string // the JWK's "alg"; "" allows every algorithm of the key's type
	pub crypto.PublicKey
}

// allows reports whether a token signed with alg may be verified with k:
// the algorithm must belong to the key's type (and curve), and match the
// JWK's own "alg" when it names one. This is what rules out algorithm
// confusion; a key can never be handed to an HMAC or "none" method.
func (k *verifyKey) allows(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// jwkSet is one loaded JWKS. It is immutable once published.
type jwkSet struct {
	keys []*verifyKey
}

// find returns the keys that may verify a token with the given kid and alg.
// A token without a kid may be verified by any key that allows its alg.
// kidKnown reports whether any key has the kid, whatever its algorithm.
func (s *jwkSet) find(kid, alg string) (keys []*verifyKey, kidKnown bool) {
	for _, k := range s.keys {
		if kid != "" && k.kid != kid {
			continue
		}
		kidKnown = true
		if k.allows(alg) {
			keys = append(keys, k)
		}
	}
	return keys, kidKnown
}

// jwk is the JSON form of one key (RFC 7517, 7518 section 6, RFC 8037).
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Alg    string   `json:"alg"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// parseJWKS parses a JWKS document. Keys that are not for signature
// verification, or of a type or size this package does not accept, are left
// out and reported in skipped; a document with no usable key is an error.
func parseJWKS(data []byte) (set *jwkSet, skipped []error, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse JWKS: %w", err)
	}
	set = &jwkSet{}
	for i, raw := range doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		k, err := j.verifyKey()
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d (kid %q): %w", i, j.Kid, err))
			continue
		}
		set.keys = append(set.keys, k)
	}
	if len(set.keys) == 0 {
		return nil, skipped, fmt.Errorf("parse JWKS: no usable signature verification key among %d", len(doc.Keys))
	}
	return set, skipped, nil
}

var errNotForVerification = errors.New("not a signature verification key")

func (j *jwk) verifyKey() (*verifyKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, errNotForVerification
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return nil, errNotForVerification
	}
	k := &verifyKey{kid: j.Kid, alg: j.Alg}
	switch j.Kty {
	case "RSA":
		n, err := decodeBigInt(j.N)
		if err != nil {
			return nil, fmt.Errorf("n: %w", err)
		}
		e, err := decodeBigInt(j.E)
		if err != nil {
			return nil, fmt.Errorf("e: %w", err)
		}
		if n.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits is shorter than %d", n.BitLen(), minRSABits)
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return nil, fmt.Errorf("unusable RSA exponent")
		}
		k.pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err := base64.RawURLEncoding.DecodeString(j.X)
		if err != nil || len(x) != size {
			return nil, fmt.Errorf("x is not a %d-byte base64url value", size)
		}
		y, err := base64.RawURLEncoding.DecodeString(j.Y)
		if err != nil || len(y) != size {
			return nil, fmt.Errorf("y is not a %d-byte base64url value", size)
		}
		point := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
		if err != nil {
			return nil, fmt.Errorf("EC point: %w", err)
		}
		k.pub = pub
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		x, err := base64.RawURLEncoding.DecodeString(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("x is not a %d-byte base64url value", ed25519.PublicKeySize)
		}
		k.pub = ed25519.PublicKey(x)
	default:
		return nil, fmt.Errorf("unsupported key type %q", j.Kty)
	}
	if j.Alg != "" && !k.allows(j.Alg) {
		return nil, fmt.Errorf("alg %q does not fit a %s key", j.Alg, j.Kty)
	}
	return k, nil
}

func decodeBigInt(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64url: %w", err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("empty")
	}
	return new(big.Int).SetBytes(b), nil
}

// keySource keeps the current JWKS of a URL or file. A goroutine it owns
// refreshes it periodically and on demand; close stops it.
type keySource struct {
	url    string
	file   string
	client *http.Client
	clock  clockwork.Clock
	log    *slog.Logger

	current atomic.Pointer[jwkSet]

	mu         sync.Mutex
	lastDemand time.Time     // when a refresh was last asked for by a token
	pending    chan struct{} // closed when the next refresh has run
	closed     bool

	// File change detection; used only by the refresh goroutine.
	fileSize int64
	fileTime time.Time

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

func newKeySource(ctx context.Context, url, file string, opts Options) (*keySource, error) {
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	ks := &keySource{
		url:     url,
		file:    file,
		client:  client,
		clock:   opts.Clock,
		log:     opts.Logger,
		pending: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if err := ks.load(ctx); err != nil {
		if file != "" {
			return nil, err
		}
		ks.log.Warn("JWKS not loaded; JWTs are refused until it is", "url", url, "err", err)
	}
	interval := urlRefreshInterval
	if file != "" {
		interval = fileRefreshInterval
	}
	runCtx, cancel := context.WithCancel(context.Background())
	ks.cancel = cancel
	go ks.run(runCtx, interval)
	return ks, nil
}

// run refreshes the key set every interval and whenever kicked, until ctx
// ends.
func (ks *keySource) run(ctx context.Context, interval time.Duration) {
	defer close(ks.done)
	t := ks.clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			ks.mu.Lock()
			ks.closed = true
			close(ks.pending)
			ks.mu.Unlock()
			return
		case <-t.Chan():
		case <-ks.kick:
		}
		ks.mu.Lock()
		done := ks.pending
		ks.pending = make(chan struct{})
		ks.mu.Unlock()
		if err := ks.load(ctx); err != nil && ctx.Err() == nil {
			ks.log.Warn("JWKS refresh failed; keeping the keys we have", "source", ks.name(), "err", err)
		}
		close(done)
	}
}

func (ks *keySource) name() string {
	if ks.file != "" {
		return ks.file
	}
	return ks.url
}

// demand asks for a refresh because a token named a key id the set does not
// have, and waits for it (or for ctx). It returns at once, without a
// refresh, when the last demand was less than minDemandGap ago.
func (ks *keySource) demand(ctx context.Context) {
	ks.mu.Lock()
	if ks.closed || (!ks.lastDemand.IsZero() && ks.clock.Since(ks.lastDemand) < minDemandGap) {
		ks.mu.Unlock()
		return
	}
	ks.lastDemand = ks.clock.Now()
	done := ks.pending
	ks.mu.Unlock()
	select {
	case ks.kick <- struct{}{}:
	default:
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// load reads the key set once and publishes it.
func (ks *keySource) load(ctx context.Context) error {
	var data []byte
	var err error
	if ks.file != "" {
		data, err = ks.readFile()
	} else {
		data, err = ks.fetch(ctx)
	}
	if err != nil || data == nil {
		return err
	}
	set, skipped, err := parseJWKS(data)
	for _, s := range skipped {
		ks.log.Debug("JWKS key skipped", "source", ks.name(), "reason", s)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", ks.name(), err)
	}
	ks.current.Store(set)
	return nil
}

// readFile returns the file's contents, or nil when it has not changed
// since the last read.
func (ks *keySource) readFile() ([]byte, error) {
	fi, err := os.Stat(ks.file)
	if err != nil {
		return nil, fmt.Errorf("read JWKS file: %w", err)
	}
	if ks.current.Load() != nil && fi.Size() == ks.fileSize && fi.ModTime().Equal(ks.fileTime) {
		return nil, nil
	}
	if fi.Size() > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS file %s is larger than %d bytes", ks.file, maxJWKSBytes)
	}
	data, err := os.ReadFile(ks.file)
	if err != nil {
		return nil, fmt.Errorf("read JWKS file: %w", err)
	}
	ks.fileSize, ks.fileTime = fi.Size(), fi.ModTime()
	return data, nil
}

func (ks *keySource) fetch(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS %s: status %d", ks.url, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", ks.url, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("fetch JWKS %s: larger than %d bytes", ks.url, maxJWKSBytes)
	}
	return data, nil
}

// close stops the refresh goroutine and waits for it.
func (ks *keySource) close() {
	ks.cancel()
	<-ks.done
}
