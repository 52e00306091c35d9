package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the fake time every test starts at.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// signer is a private key with the kid and alg it signs tokens as.
type signer struct {
	kid string
	alg jwt.SigningMethod
	key crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaKeys [2]*rsa.PrivateKey
)

// rsaKey returns one of two RSA keys generated once per test binary:
// generating them is slow under the race detector.
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for j := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[j] = k
		}
	})
	return rsaKeys[i]
}

func newSigners(t testing.TB) (rs, ps, es, ed, rs2 signer) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{"rsa-1", jwt.SigningMethodRS256, rsaKey(t, 0)},
		signer{"rsa-1", jwt.SigningMethodPS256, rsaKey(t, 0)},
		signer{"ec-1", jwt.SigningMethodES256, ec},
		signer{"ed-1", jwt.SigningMethodEdDSA, edKey},
		signer{"rsa-2", jwt.SigningMethodRS256, rsaKey(t, 1)}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwkOf renders the public half of s as a JWK.
func jwkOf(s signer) map[string]any {
	switch pub := s.key.Public().(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "kid": s.kid, "use": "sig", "n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
	case *ecdsa.PublicKey:
		raw, err := pub.Bytes()
		if err != nil {
			panic(err)
		}
		size := (len(raw) - 1) / 2
		return map[string]any{"kty": "EC", "kid": s.kid, "crv": "P-256", "alg": "ES256", "x": b64(raw[1 : 1+size]), "y": b64(raw[1+size:])}
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "kid": s.kid, "crv": "Ed25519", "x": b64(pub)}
	}
	panic("unknown key type")
}

func jwksOf(signers ...signer) []byte {
	keys := make([]map[string]any, 0, len(signers))
	seen := map[string]bool{}
	for _, s := range signers {
		if seen[s.kid] {
			continue
		}
		seen[s.kid] = true
		keys = append(keys, jwkOf(s))
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return b
}

// sign makes a token with standard valid claims at now, changed by edit.
func sign(t testing.TB, s signer, now time.Time, edit func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{
		"iss": "https://issuer.test",
		"aud": "sluice",
		"sub": "team-jwt",
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(claims)
	}
	tok := jwt.NewWithClaims(s.alg, claims)
	tok.Header["kid"] = s.kid
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jwksServer serves a JWKS that tests can replace, and counts fetches.
type jwksServer struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	status  atomic.Int32
	fetches atomic.Int32
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	s := &jwksServer{}
	s.set(body)
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if code := int(s.status.Load()); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(body []byte) { s.body.Store(&body) }

// testClient does not keep connections, so no transport goroutine outlives
// a test.
func testClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
}

func newAuth(t testing.TB, cfg *config.Auth, clock clockwork.Clock) *Authenticator {
	t.Helper()
	a, err := New(context.Background(), cfg, Options{Clock: clock, HTTPClient: testClient()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

func request(authz string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	return r
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestAPIKeys(t *testing.T) {
	const keyA, keyB = "sk-team-a-0123456789abcdef", "sk-team-b-secret"
	a := newAuth(t, &config.Auth{Keys: []config.APIKey{
		{Name: "team-a", KeySHA256: sha256Hex(keyA), Models: []string{"llama-*"}, Limits: config.TenantLimits{RPM: 600}},
		{Name: "team-b", Key: keyB},
		{Name: "team-a", KeySHA256: strings.ToUpper(sha256Hex("sk-team-a-rotated"))},
	}}, clockwork.NewFakeClockAt(t0))

	tests := []struct {
		name   string
		authz  string
		tenant string
	}{
		{name: "key by hash", authz: "Bearer " + keyA, tenant: "team-a"},
		{name: "plain key", authz: "Bearer " + keyB, tenant: "team-b"},
		{name: "second key of a tenant, upper-case hash", authz: "Bearer sk-team-a-rotated", tenant: "team-a"},
		{name: "scheme is case-insensitive", authz: "bearer " + keyA, tenant: "team-a"},
		{name: "extra spaces", authz: "BEARER   " + keyA + "  ", tenant: "team-a"},
		{name: "wrong key", authz: "Bearer sk-team-a-0123456789abcdeX"},
		{name: "key prefix", authz: "Bearer " + keyA[:len(keyA)-1]},
		{name: "missing header"},
		{name: "basic scheme", authz: "Basic " + keyA},
		{name: "no credential", authz: "Bearer"},
		{name: "blank credential", authz: "Bearer    "},
		{name: "no space", authz: "Bearer" + keyA},
		{name: "two credentials", authz: "Bearer " + keyA + " " + keyB},
		{name: "control character", authz: "Bearer " + keyA + "\x00"},
		{name: "jwt shaped, jwt not configured", authz: "Bearer a.b.c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant, err := a.Authenticate(request(tt.authz))
			if tt.tenant != "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if tenant.Name != tt.tenant {
					t.Fatalf("tenant = %q, want %q", tenant.Name, tt.tenant)
				}
				return
			}
			if err == nil {
				t.Fatalf("Authenticate accepted %q as %q", tt.authz, tenant.Name)
			}
			if err.Status != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401", err.Status)
			}
			for _, secret := range []string{keyA, keyB, keyA[:len(keyA)-1]} {
				if strings.Contains(err.Message, secret) {
					t.Fatalf("error message %q contains a key", err.Message)
				}
			}
		})
	}

	tenant, _ := a.Authenticate(request("Bearer " + keyA))
	if tenant.Limits.RPM != 600 {
		t.Errorf("limits = %+v, want rpm 600", tenant.Limits)
	}
	if !tenant.MayUse("llama-3-8b") || tenant.MayUse("gpt-4") {
		t.Errorf("team-a model globs not applied")
	}
}

func TestNewRejectsBadKeys(t *testing.T) {
	tests := []struct {
		name string
		cfg  config.Auth
		want string
	}{
		{"no name", config.Auth{Keys: []config.APIKey{{Key: "k"}}}, "name is required"},
		{"no key", config.Auth{Keys: []config.APIKey{{Name: "a"}}}, "key or key_sha256 is required"},
		{"both", config.Auth{Keys: []config.APIKey{{Name: "a", Key: "k", KeySHA256: sha256Hex("k")}}}, "not both"},
		{"short hash", config.Auth{Keys: []config.APIKey{{Name: "a", KeySHA256: "abcd"}}}, "64 hex digits"},
		{"not hex", config.Auth{Keys: []config.APIKey{{Name: "a", KeySHA256: strings.Repeat("zz", 32)}}}, "not hex"},
		{"duplicate", config.Auth{Keys: []config.APIKey{{Name: "a", Key: "k"}, {Name: "b", KeySHA256: sha256Hex("k")}}}, "same key as tenant a"},
		{"empty glob", config.Auth{Keys: []config.APIKey{{Name: "a", Key: "k", Models: []string{""}}}}, "empty model glob"},
		{"no jwks", config.Auth{JWT: &config.JWT{}}, "exactly one of jwks_url and jwks_file"},
		{"two jwks", config.Auth{JWT: &config.JWT{JWKSURL: "http://127.0.0.1:1/", JWKSFile: "x"}}, "exactly one"},
		{"missing jwks file", config.Auth{JWT: &config.JWT{JWKSFile: filepath.Join(t.TempDir(), "none.json")}}, "read JWKS file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(context.Background(), &tt.cfg, Options{})
			if err == nil {
				a.Close()
				t.Fatalf("New accepted %+v", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %q, want it to contain %q", err, tt.want)
			}
			if tt.cfg.Keys != nil && tt.cfg.Keys[0].Key != "" && strings.Contains(err.Error(), `"k"`) {
				t.Fatalf("error %q shows the key", err)
			}
		})
	}
}

func jwtConfig(url string) *config.Auth {
	return &config.Auth{JWT: &config.JWT{
		JWKSURL:  url,
		Issuer:   "https://issuer.test",
		Audience: "sluice",
		Models:   []string{"sim-*"},
		Limits:   config.TenantLimits{RPM: 60},
	}}
}

func TestJWT(t *testing.T) {
	rs, ps, es, ed, other := newSigners(t)
	srv := newJWKSServer(t, jwksOf(rs, es, ed))
	clock := clockwork.NewFakeClockAt(t0)
	a := newAuth(t, jwtConfig(srv.URL), clock)

	pubPEM := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(rs.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	hmacWith := func(secret []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": "https://issuer.test", "aud": "sluice", "sub": "attacker",
			"iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix(),
		})
		tok.Header["kid"] = rs.kid
		s, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	noneToken := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
			"iss": "https://issuer.test", "aud": "sluice", "sub": "attacker",
			"iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix(),
		})
		tok.Header["kid"] = rs.kid
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	tampered := func() string {
		tok := sign(t, rs, t0, nil)
		parts := strings.Split(tok, ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		payload = []byte(strings.Replace(string(payload), "team-jwt", "team-xyz", 1))
		parts[1] = base64.RawURLEncoding.EncodeToString(payload)
		return strings.Join(parts, ".")
	}()
	withoutKid := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": "https://issuer.test", "aud": "sluice", "sub": "no-kid",
			"iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix(),
		})
		s, err := tok.SignedString(es.key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	// other's key under rs's kid: the right kid, the wrong key.
	impostor := signer{kid: rs.kid, alg: jwt.SigningMethodRS256, key: other.key}

	tests := []struct {
		name   string
		token  string
		tenant string // "" = must be refused
		reason string
	}{
		{name: "RS256", token: sign(t, rs, t0, nil), tenant: "team-jwt"},
		{name: "PS256 with the same RSA key", token: sign(t, ps, t0, nil), tenant: "team-jwt"},
		{name: "ES256", token: sign(t, es, t0, nil), tenant: "team-jwt"},
		{name: "EdDSA", token: sign(t, ed, t0, nil), tenant: "team-jwt"},
		{name: "no kid", token: withoutKid, tenant: "no-kid"},
		{name: "audience list", token: sign(t, rs, t0, func(c jwt.MapClaims) { c["aud"] = []string{"other", "sluice"} }), tenant: "team-jwt"},
		{name: "expired within leeway", token: sign(t, rs, t0, func(c jwt.MapClaims) { c["exp"] = t0.Add(-20 * time.Second).Unix() }), tenant: "team-jwt"},
		{name: "expired", token: sign(t, rs, t0, func(c jwt.MapClaims) { c["exp"] = t0.Add(-31 * time.Second).Unix() }), reason: "token expired"},
		{name: "no exp", token: sign(t, rs, t0, func(c jwt.MapClaims) { delete(c, "exp") }), reason: "missing a required claim"},
		{name: "not yet valid", token: sign(t, es, t0, func(c jwt.MapClaims) { c["nbf"] = t0.Add(time.Minute).Unix() }), reason: "not valid yet"},
		{name: "issued in the future", token: sign(t, es, t0, func(c jwt.MapClaims) { c["iat"] = t0.Add(time.Minute).Unix() }), reason: "not valid yet"},
		{name: "wrong issuer", token: sign(t, rs, t0, func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }), reason: "wrong issuer"},
		{name: "no issuer", token: sign(t, rs, t0, func(c jwt.MapClaims) { delete(c, "iss") }), reason: "missing a required claim"},
		{name: "wrong audience", token: sign(t, rs, t0, func(c jwt.MapClaims) { c["aud"] = "other" }), reason: "wrong audience"},
		{name: "alg none", token: noneToken, reason: "signature not valid"},
		{name: "HS256 with the RSA public key PEM as secret", token: hmacWith(pubPEM), reason: "signature not valid"},
		{name: "HS256 with the RSA modulus as secret", token: hmacWith(rs.key.Public().(*rsa.PublicKey).N.Bytes()), reason: "signature not valid"},
		{name: "tampered payload", token: tampered, reason: "signature not valid"},
		{name: "right kid, wrong key", token: sign(t, impostor, t0, nil), reason: "signature not valid"},
		{name: "RSA alg with an EC kid", token: sign(t, signer{kid: es.kid, alg: jwt.SigningMethodRS256, key: rs.key}, t0, nil), reason: "signature not valid"},
		{name: "unknown kid", token: sign(t, other, t0, nil), reason: "unknown key"},
		{name: "no tenant claim", token: sign(t, rs, t0, func(c jwt.MapClaims) { delete(c, "sub") }), reason: `no usable "sub" claim`},
		{name: "tenant claim not a string", token: sign(t, rs, t0, func(c jwt.MapClaims) { c["sub"] = 42 }), reason: `no usable "sub" claim`},
		{name: "tenant claim with a newline", token: sign(t, rs, t0, func(c jwt.MapClaims) { c["sub"] = "a\nb" }), reason: `no usable "sub" claim`},
		{name: "garbage", token: "aaa.bbb.ccc", reason: "malformed token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant, err := a.Authenticate(request("Bearer " + tt.token))
			if tt.tenant != "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if want := JWTTenantPrefix + tt.tenant; tenant.Name != want {
					t.Fatalf("tenant = %q, want %q", tenant.Name, want)
				}
				if tenant.Limits.RPM != 60 || !tenant.MayUse("sim-llm") || tenant.MayUse("gpt-4") {
					t.Fatalf("tenant %+v does not carry the jwt limits and models", tenant)
				}
				return
			}
			if err == nil {
				t.Fatalf("Authenticate accepted the token as %q", tenant.Name)
			}
			if err.Status != http.StatusUnauthorized || !strings.Contains(err.Message, tt.reason) {
				t.Fatalf("error = %d %q, want 401 mentioning %q", err.Status, err.Message, tt.reason)
			}
			if strings.Contains(err.Message, tt.token) || strings.Contains(err.Message, strings.Split(tt.token, ".")[0]) {
				t.Fatalf("error message %q contains the token", err.Message)
			}
		})
	}
}

// TestVerifiedTokens checks that remembering verified tokens changes no
// decision: a remembered token still expires, and a key set change makes
// every token be checked again.
func TestVerifiedTokens(t *testing.T) {
	rs, _, es, _, _ := newSigners(t)
	srv := newJWKSServer(t, jwksOf(rs, es))
	clock := clockwork.NewFakeClockAt(t0)
	a := newAuth(t, jwtConfig(srv.URL), clock)
	short := "Bearer " + sign(t, rs, t0, func(c jwt.MapClaims) { c["exp"] = t0.Add(2 * time.Minute).Unix() })
	long := "Bearer " + sign(t, es, t0, nil)

	for range 2 {
		if _, err := a.Authenticate(request(short)); err != nil {
			t.Fatal(err)
		}
	}
	if a.jwt.verified.EstimatedSize() != 1 {
		t.Fatalf("%d tokens remembered, want 1", a.jwt.verified.EstimatedSize())
	}
	clock.Advance(2*time.Minute + leeway)
	if _, err := a.Authenticate(request(short)); err == nil || !strings.Contains(err.Message, "expired") {
		t.Fatalf("remembered token past exp: %v, want expired", err)
	}

	if _, err := a.Authenticate(request(long)); err != nil {
		t.Fatal(err)
	}
	// The key is withdrawn; a refresh publishes a set without it.
	srv.set(jwksOf(rs))
	if err := clock.BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	before := a.jwt.keys.current.Load()
	clock.Advance(urlRefreshInterval)
	waitFor(t, "the refresh", func() bool { return a.jwt.keys.current.Load() != before })
	if _, err := a.Authenticate(request(long)); err == nil {
		t.Fatal("remembered token of a withdrawn key accepted")
	}
}

func TestJWTTenantClaim(t *testing.T) {
	rs, _, _, _, _ := newSigners(t)
	srv := newJWKSServer(t, jwksOf(rs))
	cfg := jwtConfig(srv.URL)
	cfg.JWT.TenantClaim = "org"
	a := newAuth(t, cfg, clockwork.NewFakeClockAt(t0))

	tenant, err := a.Authenticate(request("Bearer " + sign(t, rs, t0, func(c jwt.MapClaims) { c["org"] = "acme" })))
	if err != nil || tenant.Name != "jwt:acme" {
		t.Fatalf("Authenticate = %v, %v; want tenant jwt:acme", tenant, err)
	}
	if _, err := a.Authenticate(request("Bearer " + sign(t, rs, t0, nil))); err == nil {
		t.Fatal("token without the org claim was accepted")
	}
}

func TestKeysAndJWTTogether(t *testing.T) {
	rs, _, _, _, _ := newSigners(t)
	srv := newJWKSServer(t, jwksOf(rs))
	cfg := jwtConfig(srv.URL)
	// A key that looks like a JWT is still a key.
	cfg.Keys = []config.APIKey{{Name: "dotted", Key: "sk.with.dots"}}
	a := newAuth(t, cfg, clockwork.NewFakeClockAt(t0))
	for authz, want := range map[string]string{
		"Bearer sk.with.dots":            "dotted",
		"Bearer " + sign(t, rs, t0, nil): "jwt:team-jwt",
	} {
		tenant, err := a.Authenticate(request(authz))
		if err != nil || tenant.Name != want {
			t.Errorf("Authenticate = %v, %v; want %s", tenant, err, want)
		}
	}
}

// waitFor polls cond until it holds or a generous deadline passes; it is for
// state changed by a background refresh that the test has already caused.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestJWKSRotation(t *testing.T) {
	old, _, _, _, next := newSigners(t)
	srv := newJWKSServer(t, jwksOf(old))
	clock := clockwork.NewFakeClockAt(t0)
	a := newAuth(t, jwtConfig(srv.URL), clock)
	accepted := func(s signer) bool {
		_, err := a.Authenticate(request("Bearer " + sign(t, s, clock.Now(), nil)))
		return err == nil
	}

	if !accepted(old) {
		t.Fatal("token of the initial key refused")
	}
	// The new key is not published yet: the unknown kid triggers a fetch
	// that does not help.
	if accepted(next) {
		t.Fatal("token of an unpublished key accepted")
	}
	fetches := srv.fetches.Load()

	// Published, but the last on-demand refresh was just now: no new
	// fetch until minDemandGap has passed.
	srv.set(jwksOf(old, next))
	if accepted(next) {
		t.Fatal("refresh was not rate limited")
	}
	if got := srv.fetches.Load(); got != fetches {
		t.Fatalf("JWKS fetched %d more times within the demand gap", got-fetches)
	}
	clock.Advance(minDemandGap)
	if !accepted(next) {
		t.Fatal("token of the newly published key refused after the refresh")
	}
	if !accepted(old) {
		t.Fatal("token of the old key refused while it is still published")
	}

	// The old key is withdrawn; the periodic refresh drops it.
	srv.set(jwksOf(next))
	before := srv.fetches.Load()
	if err := clock.BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(urlRefreshInterval)
	waitFor(t, "the periodic refresh", func() bool { return srv.fetches.Load() > before })
	waitFor(t, "the withdrawn key to be refused", func() bool { return !accepted(old) })
	if !accepted(next) {
		t.Fatal("token of the current key refused")
	}
}

func TestJWKSUnavailableAtStart(t *testing.T) {
	rs, _, _, _, _ := newSigners(t)
	srv := newJWKSServer(t, jwksOf(rs))
	srv.status.Store(http.StatusServiceUnavailable)
	clock := clockwork.NewFakeClockAt(t0)
	a := newAuth(t, jwtConfig(srv.URL), clock)
	token := "Bearer " + sign(t, rs, t0, nil)

	if _, err := a.Authenticate(request(token)); err == nil {
		t.Fatal("token accepted with no JWKS loaded")
	}
	srv.status.Store(http.StatusOK)
	clock.Advance(minDemandGap)
	if _, err := a.Authenticate(request(token)); err != nil {
		t.Fatalf("token refused after the JWKS came back: %v", err)
	}
}

func TestJWKSFile(t *testing.T) {
	old, _, es, _, _ := newSigners(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksOf(old), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(t0)
	cfg := jwtConfig("")
	cfg.JWT.JWKSFile = path
	a := newAuth(t, cfg, clock)
	accepted := func(s signer) bool {
		_, err := a.Authenticate(request("Bearer " + sign(t, s, t0, nil)))
		return err == nil
	}
	if !accepted(old) || accepted(es) {
		t.Fatal("initial file not applied")
	}
	if err := os.WriteFile(path, jwksOf(es), 0o600); err != nil {
		t.Fatal(err)
	}
	// Make the change visible even on a file system with coarse times.
	if err := os.Chtimes(path, t0, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(minDemandGap)
	if !accepted(es) {
		t.Fatal("key added to the file refused")
	}
	if accepted(old) {
		t.Fatal("key removed from the file accepted")
	}
}

func TestParseJWKS(t *testing.T) {
	rs, _, es, ed, _ := newSigners(t)
	good := jwkOf(rs)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak := jwkOf(signer{kid: "weak", key: small})
	enc := jwkOf(es)
	enc["use"] = "enc"
	hmacKey := map[string]any{"kty": "oct", "kid": "h", "k": b64([]byte("secret"))}
	wrongAlg := jwkOf(ed)
	wrongAlg["alg"] = "RS256"
	badPoint := jwkOf(es)
	badPoint["y"] = b64(make([]byte, 32))

	doc, _ := json.Marshal(map[string]any{"keys": []any{good, weak, enc, hmacKey, wrongAlg, badPoint}})
	set, skipped, err := parseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.keys) != 1 || set.keys[0].kid != rs.kid {
		t.Fatalf("kept %d keys, want only %s", len(set.keys), rs.kid)
	}
	if len(skipped) != 5 {
		t.Fatalf("skipped %d keys (%v), want 5", len(skipped), skipped)
	}
	if _, _, err := parseJWKS([]byte(`{"keys":[]}`)); err == nil {
		t.Fatal("empty JWKS accepted")
	}
	if _, _, err := parseJWKS([]byte(`not json`)); err == nil {
		t.Fatal("non-JSON JWKS accepted")
	}
}

func TestMayUse(t *testing.T) {
	tests := []struct {
		globs []string
		model string
		want  bool
	}{
		{nil, "anything/at-all", true},
		{[]string{"*"}, "meta-llama/Llama-3-8B", true},
		{[]string{"sim-llm"}, "sim-llm", true},
		{[]string{"sim-llm"}, "sim-llm-2", false},
		{[]string{"llama-*"}, "llama-3-70b", true},
		{[]string{"llama-*"}, "codellama-7b", false},
		{[]string{"meta-llama/*"}, "meta-llama/Llama-3-8B", true},
		{[]string{"*-instruct"}, "qwen/qwen2-7b-instruct", true},
		{[]string{"*-instruct"}, "qwen2-7b-instruct-awq", false},
		{[]string{"gpt-?"}, "gpt-4", true},
		{[]string{"gpt-?"}, "gpt-4o", false},
		{[]string{"m?del"}, "mödel", true},
		{[]string{"a*b*c"}, "aXbYbZc", true},
		{[]string{"a*b*c"}, "aXbYbZ", false},
		{[]string{"a", "b*"}, "bee", true},
		{[]string{"a", "b*"}, "", false},
		{[]string{"**"}, "", true},
	}
	for _, tt := range tests {
		models, err := compileGlobs(tt.globs)
		if err != nil {
			t.Fatal(err)
		}
		tenant := &Tenant{Name: "t", models: models}
		if got := tenant.MayUse(tt.model); got != tt.want {
			t.Errorf("globs %q MayUse(%q) = %v, want %v", tt.globs, tt.model, got, tt.want)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer sk-abc", "bearer   x.y.z  ", "Basic abc", "Bearer", "Bearer a b", "BEARER \x7f", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		cred, ok := parseBearer(h)
		if !ok {
			return
		}
		if cred == "" || strings.ContainsAny(cred, " \t\r\n") || !strings.Contains(h, cred) {
			t.Fatalf("parseBearer(%q) = %q", h, cred)
		}
		if again, ok := parseBearer("Bearer " + cred); !ok || again != cred {
			t.Fatalf("credential %q does not round-trip", cred)
		}
	})
}

// FuzzAuthenticate feeds arbitrary Authorization headers, and mutations of
// real tokens, to an Authenticator with both keys and JWT configured: it must
// never panic, and must accept nothing but the configured key and the
// genuinely signed tokens.
func FuzzAuthenticate(f *testing.F) {
	rs, _, es, ed, other := newSigners(f)
	path := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksOf(rs, es, ed), 0o600); err != nil {
		f.Fatal(err)
	}
	const key = "sk-fuzz-key"
	a := newAuth(f, &config.Auth{
		Keys: []config.APIKey{{Name: "keyed", Key: key}},
		JWT:  &config.JWT{JWKSFile: path, Issuer: "https://issuer.test", Audience: "sluice"},
	}, clockwork.NewFakeClockAt(t0))

	valid := map[string]bool{key: true}
	for _, s := range []signer{rs, es, ed} {
		tok := sign(f, s, t0, nil)
		valid[tok] = true
		f.Add("Bearer " + tok)
	}
	f.Add("Bearer " + sign(f, other, t0, nil))
	f.Add("Bearer " + key)
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("Bearer eyJhbGciOiJIUzI1NiIsImtpZCI6InJzYS0xIn0.e30.AAAA")
	f.Fuzz(func(t *testing.T, h string) {
		r := request("")
		r.Header.Set("Authorization", h)
		tenant, err := a.Authenticate(r)
		if err != nil {
			if err.Status != http.StatusUnauthorized {
				t.Fatalf("status %d", err.Status)
			}
			return
		}
		cred, _ := parseBearer(h)
		if !valid[cred] {
			t.Fatalf("accepted %q as tenant %q", h, tenant.Name)
		}
	})
}

func BenchmarkAuthenticateAPIKey(b *testing.B) {
	keys := make([]config.APIKey, 0, 1000)
	for i := range 1000 {
		keys = append(keys, config.APIKey{Name: "tenant-" + strconv.Itoa(i), Key: "sk-bench-" + strconv.Itoa(i)})
	}
	a := newAuth(b, &config.Auth{Keys: keys}, nil)
	r := request("Bearer sk-bench-512")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateJWT(b *testing.B) {
	rs, _, es, _, _ := newSigners(b)
	path := filepath.Join(b.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksOf(rs, es), 0o600); err != nil {
		b.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(t0)
	a := newAuth(b, &config.Auth{JWT: &config.JWT{JWKSFile: path, Issuer: "https://issuer.test", Audience: "sluice"}}, clock)
	for _, s := range []signer{rs, es} {
		r := request("Bearer " + sign(b, s, t0, nil))
		b.Run(s.alg.Alg()+"/verify", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.jwt.verified.InvalidateAll()
				if _, err := a.Authenticate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(s.alg.Alg()+"/remembered", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authenticate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
