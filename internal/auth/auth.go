// Package auth decides who is calling: it turns the Authorization header of
// a data-plane request into a Tenant, from an API key (compared against
// stored SHA-256 hashes) or a JWT bearer token (verified against a JWKS
// fetched from a URL or read from a file), and tells which models the tenant
// may use.
//
// Credentials never leave this package: no key or token is logged, counted
// or echoed in an error.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/openai"
)

// Tenant is an authenticated caller: it names the caller for metrics, logs,
// rate limits and job ownership, and carries what the caller may do.
// Tenants are shared between requests and must not be modified.
type Tenant struct {
	// Name is the key's name, or JWTTenantPrefix and the JWT's tenant
	// claim ("jwt:acme"); the two never collide.
	Name string
	// Limits are the tenant's rate limits; zero fields are unlimited.
	Limits config.TenantLimits

	models modelGlobs
}

// MayUse reports whether the tenant may call model, by the tenant's model
// globs in the syntax of model routing (config.MatchModel): '*' matches any
// run of characters, slashes included, so "*" allows "org/model".
func (t *Tenant) MayUse(model string) bool { return t.models.match(model) }

// Options are the optional collaborators of an Authenticator.
type Options struct {
	// Logger receives JWKS refresh events. Nil discards them.
	Logger *slog.Logger
	// Clock is the time source for token validity and JWKS refresh.
	// Nil uses the real clock.
	Clock clockwork.Clock
	// HTTPClient fetches jwks_url. Nil uses a client with a 10s timeout.
	HTTPClient *http.Client
}

// Authenticator authenticates data-plane requests. It is safe for
// concurrent use. Close it to stop its JWKS refresh.
type Authenticator struct {
	// keys indexes the configured API keys by the first 8 bytes of their
	// SHA-256; the full hash is compared in constant time.
	keys map[uint64][]keyEntry
	jwt  *jwtVerifier

	closeOnce sync.Once
}

// New builds an Authenticator from cfg. With cfg.JWT set it loads the JWKS
// before returning: a jwks_file that cannot be read or parsed is an error;
// a jwks_url that cannot be fetched is logged and retried in the background
// (so an identity provider's outage does not stop the gateway from starting
// or reloading; tokens are refused until keys arrive). ctx bounds that first
// load only.
func New(ctx context.Context, cfg *config.Auth, opts Options) (*Authenticator, error) {
	if cfg == nil {
		return nil, fmt.Errorf("auth: no auth config")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	a := &Authenticator{keys: make(map[uint64][]keyEntry, len(cfg.Keys))}
	for i, k := range cfg.Keys {
		if k.Name == "" {
			return nil, fmt.Errorf("auth.keys[%d]: name is required", i)
		}
		if strings.HasPrefix(k.Name, JWTTenantPrefix) {
			return nil, fmt.Errorf("auth.keys[%d] (%s): names starting with %q are reserved for JWT tenants", i, k.Name, JWTTenantPrefix)
		}
		sum, err := keyHash(k)
		if err != nil {
			return nil, fmt.Errorf("auth.keys[%d] (%s): %w", i, k.Name, err)
		}
		if prev := a.lookupKey(sum); prev != nil {
			return nil, fmt.Errorf("auth.keys[%d] (%s): same key as tenant %s", i, k.Name, prev.Name)
		}
		models, err := compileGlobs(k.Models)
		if err != nil {
			return nil, fmt.Errorf("auth.keys[%d] (%s): %w", i, k.Name, err)
		}
		idx := keyIndex(sum)
		a.keys[idx] = append(a.keys[idx], keyEntry{sum: sum, tenant: &Tenant{Name: k.Name, Limits: k.Limits, models: models}})
	}
	if cfg.JWT != nil {
		v, err := newJWTVerifier(ctx, cfg.JWT, opts)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt: %w", err)
		}
		a.jwt = v
	}
	return a, nil
}

// keyHash returns the SHA-256 an API key entry stands for.
func keyHash(k config.APIKey) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	switch {
	case k.KeySHA256 != "" && k.Key != "":
		return sum, fmt.Errorf("set key or key_sha256, not both")
	case k.KeySHA256 != "":
		if len(k.KeySHA256) != hex.EncodedLen(sha256.Size) {
			return sum, fmt.Errorf("key_sha256 must be %d hex digits", hex.EncodedLen(sha256.Size))
		}
		if _, err := hex.Decode(sum[:], []byte(k.KeySHA256)); err != nil {
			return sum, fmt.Errorf("key_sha256 is not hex")
		}
		return sum, nil
	case k.Key != "":
		return sha256.Sum256([]byte(k.Key)), nil
	default:
		return sum, fmt.Errorf("key or key_sha256 is required")
	}
}

type keyEntry struct {
	sum    [sha256.Size]byte
	tenant *Tenant
}

func keyIndex(sum [sha256.Size]byte) uint64 { return binary.LittleEndian.Uint64(sum[:8]) }

// lookupKey returns the tenant of the key whose SHA-256 is sum, or nil.
func (a *Authenticator) lookupKey(sum [sha256.Size]byte) *Tenant {
	var found *Tenant
	for _, e := range a.keys[keyIndex(sum)] {
		if subtle.ConstantTimeCompare(e.sum[:], sum[:]) == 1 {
			found = e.tenant
		}
	}
	return found
}

// Authenticate returns the tenant that r's credentials name, or the 401 to
// answer with. The credential is "Authorization: Bearer <key or token>".
//
// An API key is hashed with SHA-256 once; the hash picks candidates from a
// map by its first 8 bytes and is compared with each candidate's stored hash
// in constant time. The map lookup's timing can depend only on the hash of
// what the caller sent, and learning how the hash of a guess relates to a
// stored hash does not help find a key that hashes to it, so nothing about a
// stored key leaks. A credential that is not a key and has the shape of
// a JWT (three dot-separated parts) is verified as one when JWT auth is
// configured.
//
// The message of a 401 never contains the credential.
func (a *Authenticator) Authenticate(r *http.Request) (*Tenant, *openai.Error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, openai.Unauthorized("missing credentials: send Authorization: Bearer <API key or token>")
	}
	cred, ok := parseBearer(h)
	if !ok {
		return nil, openai.Unauthorized("malformed Authorization header: want Bearer <API key or token>")
	}
	if t := a.lookupKey(sha256.Sum256([]byte(cred))); t != nil {
		return t, nil
	}
	if a.jwt != nil && strings.Count(cred, ".") == 2 {
		return a.jwt.verify(r.Context(), cred)
	}
	return nil, openai.Unauthorized("invalid API key or token")
}

// maxCredential bounds what is accepted as a credential; real keys and JWTs
// are far shorter, and the bound keeps hashing and parsing cheap.
const maxCredential = 16 << 10

// parseBearer extracts the credential from an Authorization header value of
// the form "Bearer <credential>" (the scheme is case-insensitive, RFC 9110
// section 11.1). The credential is a single token of visible ASCII.
func parseBearer(h string) (string, bool) {
	const scheme = "bearer"
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) || h[len(scheme)] != ' ' {
		return "", false
	}
	cred := strings.TrimLeft(h[len(scheme):], " ")
	cred = strings.TrimRight(cred, " ")
	if cred == "" || len(cred) > maxCredential {
		return "", false
	}
	for i := 0; i < len(cred); i++ {
		if c := cred[i]; c <= ' ' || c >= 0x7f {
			return "", false
		}
	}
	return cred, true
}

// Close stops the JWKS refresh and waits for it. It is safe to call more
// than once.
func (a *Authenticator) Close() {
	a.closeOnce.Do(func() {
		if a.jwt != nil {
			a.jwt.keys.close()
		}
	})
}
