package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jonboulle/clockwork"
	"github.com/maypok86/otter/v2"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/openai"
)

// leeway is the clock skew tolerated on exp, nbf and iat.
const leeway = 30 * time.Second

// maxTenantName bounds the tenant claim taken from a token; the tenant's
// name labels metrics.
const maxTenantName = 128

// JWTTenantPrefix starts the name of every tenant a JWT authenticates:
// a token whose tenant claim is "acme" is tenant "jwt:acme". API key
// tenants keep their configured names, which may not start with it
// (config.ReservedTenantPrefix), so no token can become a key's tenant
// (own its jobs, share its rate limits and cache entries) by carrying the
// key's name as its claim, and no key can become a token's tenant.
const JWTTenantPrefix = config.ReservedTenantPrefix

// asymmetricAlgs are the only signature algorithms accepted. HMAC and
// "none" are absent: with a public JWKS, an HMAC "signature" could be made
// by anyone who uses a public key's bytes as the secret.
var asymmetricAlgs = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

type jwtVerifier struct {
	parser *jwt.Parser
	keys   *keySource
	clock  clockwork.Clock
	claim  string
	limits config.TenantLimits
	models modelGlobs
	// verified remembers tokens that passed verification, by SHA-256, so a
	// client that sends the same token with every request pays for the
	// signature check once.
	verified *otter.Cache[[sha256.Size]byte, verifiedToken]
}

// verifiedToken is a token that passed verification.
type verifiedToken struct {
	tenant *Tenant
	set    *jwkSet   // the key set it was verified with
	until  time.Time // when it stops being trusted without a new check
}

const (
	// verifiedTokens bounds the tokens remembered.
	verifiedTokens = 10_000
	// maxVerifiedAge bounds how long a remembered token is trusted, so a
	// token whose validity changes in ways a key set refresh does not show
	// is checked again soon.
	maxVerifiedAge = 5 * time.Minute
)

func newJWTVerifier(ctx context.Context, cfg *config.JWT, opts Options) (*jwtVerifier, error) {
	if (cfg.JWKSURL == "") == (cfg.JWKSFile == "") {
		return nil, fmt.Errorf("set exactly one of jwks_url and jwks_file")
	}
	models, err := compileGlobs(cfg.Models)
	if err != nil {
		return nil, err
	}
	claim := cfg.TenantClaim
	if claim == "" {
		claim = "sub"
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(asymmetricAlgs),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(opts.Clock.Now),
		jwt.WithIssuedAt(),
		jwt.WithExpirationRequired(),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		popts = append(popts, jwt.WithAudience(cfg.Audience))
	}
	keys, err := newKeySource(ctx, cfg.JWKSURL, cfg.JWKSFile, opts)
	if err != nil {
		return nil, err
	}
	verified, err := otter.New(&otter.Options[[sha256.Size]byte, verifiedToken]{MaximumSize: verifiedTokens})
	if err != nil {
		keys.close()
		return nil, fmt.Errorf("verified token cache: %w", err)
	}
	return &jwtVerifier{
		parser:   jwt.NewParser(popts...),
		keys:     keys,
		clock:    opts.Clock,
		claim:    claim,
		limits:   cfg.Limits,
		models:   models,
		verified: verified,
	}, nil
}

// errUnknownKey is a token whose kid is not in the JWKS, even after a
// refresh.
var errUnknownKey = errors.New("signed by an unknown key")

// verify checks a JWT and returns its tenant. A token verified before is
// trusted again without a signature check while the key set is the one it
// was verified with, it has not expired, and it was verified less than
// maxVerifiedAge ago.
func (v *jwtVerifier) verify(ctx context.Context, token string) (*Tenant, *openai.Error) {
	sum := sha256.Sum256([]byte(token))
	now := v.clock.Now()
	if vt, ok := v.verified.GetIfPresent(sum); ok && vt.set == v.keys.current.Load() && now.Before(vt.until) {
		return vt.tenant, nil
	}
	set := v.keys.current.Load()
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		return v.keyFor(ctx, t)
	})
	if err != nil {
		return nil, openai.Unauthorized("invalid bearer token: " + reason(err))
	}
	name, ok := claims[v.claim].(string)
	if !ok || name == "" || len(name) > maxTenantName || !printable(name) {
		return nil, openai.Unauthorized(fmt.Sprintf("invalid bearer token: no usable %q claim", v.claim))
	}
	tenant := &Tenant{Name: JWTTenantPrefix + name, Limits: v.limits, models: v.models}
	until := now.Add(maxVerifiedAge)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		until = minTime(until, exp.Add(leeway))
	}
	if set != nil && set == v.keys.current.Load() {
		v.verified.Set(sum, verifiedToken{tenant: tenant, set: set, until: until})
	}
	return tenant, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// keyFor picks the verification key for t: by kid, or every key of the
// right type when the token has no kid. A kid the key set does not know
// triggers one refresh (rate limited) before the token is refused.
func (v *jwtVerifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	kid, _ := t.Header["kid"].(string)
	for attempt := 0; ; attempt++ {
		set := v.keys.current.Load()
		if set == nil {
			if attempt == 0 {
				v.keys.demand(ctx)
				continue
			}
			return nil, errUnknownKey
		}
		keys, known := set.find(kid, alg)
		switch {
		case len(keys) == 1:
			return keys[0].pub, nil
		case len(keys) > 1:
			ks := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(keys))}
			for i, k := range keys {
				ks.Keys[i] = k.pub
			}
			return ks, nil
		case !known && kid != "" && attempt == 0:
			v.keys.demand(ctx)
		case known:
			return nil, fmt.Errorf("key %q does not allow %s", kid, alg)
		default:
			return nil, errUnknownKey
		}
	}
}

// reason turns a verification error into a short message for the client.
// None of them contain the token or its claims.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, errUnknownKey):
		return "signed by an unknown key"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signature not valid"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing a required claim"
	default:
		return "not accepted"
	}
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
