package auth

import (
	"context"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/ratelimit"
)

// TestJWTCannotBecomeKeyTenant is the attack of a token holder who picks
// (or is issued) a subject equal to an API key's name: the token must name
// a different tenant, so it owns none of the key tenant's jobs and shares
// none of its rate-limit state.
func TestJWTCannotBecomeKeyTenant(t *testing.T) {
	rs, _, _, _, _ := newSigners(t)
	srv := newJWKSServer(t, jwksOf(rs))
	cfg := jwtConfig(srv.URL)
	cfg.Keys = []config.APIKey{{Name: "team-a", Key: "sk-team-a", Limits: config.TenantLimits{Concurrency: 1}}}
	cfg.JWT.Limits = config.TenantLimits{Concurrency: 1}
	a := newAuth(t, cfg, clockwork.NewFakeClockAt(t0))

	keyTenant, oerr := a.Authenticate(request("Bearer sk-team-a"))
	if oerr != nil {
		t.Fatal(oerr)
	}
	token := sign(t, rs, t0, func(c jwt.MapClaims) { c["sub"] = "team-a" })
	jwtTenant, oerr := a.Authenticate(request("Bearer " + token))
	if oerr != nil {
		t.Fatal(oerr)
	}
	if keyTenant.Name != "team-a" {
		t.Fatalf("API key tenant renamed to %q; key tenant names must not change", keyTenant.Name)
	}
	if jwtTenant.Name == keyTenant.Name {
		t.Fatalf("a JWT with sub %q is the API key tenant %q", "team-a", keyTenant.Name)
	}
	if want := JWTTenantPrefix + "team-a"; jwtTenant.Name != want {
		t.Fatalf("JWT tenant = %q, want %q", jwtTenant.Name, want)
	}

	// Rate limits are keyed by Tenant.Name: the key tenant holding its one
	// concurrency slot must not make the token's tenant wait, nor the other
	// way round.
	lim, err := ratelimit.New(ratelimit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lim.Close()
	ctx := context.Background()
	held, oerr := lim.Admit(ctx, keyTenant.Name, keyTenant.Limits, 0)
	if oerr != nil {
		t.Fatal(oerr)
	}
	defer held.Done(0)
	other, oerr := lim.Admit(ctx, jwtTenant.Name, jwtTenant.Limits, 0)
	if oerr != nil {
		t.Fatalf("the JWT tenant shares the key tenant's concurrency slot: %v", oerr)
	}
	other.Done(0)
}

// TestKeyNameCannotTakeJWTNamespace checks the other direction: a key named
// like a namespaced JWT tenant is refused, so no key can own a token
// holder's jobs either.
func TestKeyNameCannotTakeJWTNamespace(t *testing.T) {
	_, err := New(context.Background(), &config.Auth{Keys: []config.APIKey{{Name: "jwt:team-a", Key: "k"}}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "jwt:") {
		t.Fatalf("New with a key named jwt:team-a: %v, want an error naming the reserved prefix", err)
	}
}
