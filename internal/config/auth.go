package config

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// ReservedTenantPrefix starts the tenant name of every JWT-authenticated
// caller ("jwt:" and the token's tenant claim); an API key's name may not
// start with it, so key tenants and token tenants never share a name (and
// with it jobs, rate limits and cache entries).
const ReservedTenantPrefix = "jwt:"

// Hash returns the lower-case hex SHA-256 of the key: KeySHA256 as
// written, or the digest of Key. It is "" when neither is set. Compare a
// presented key by hashing it the same way, so the plain key need not be
// kept.
func (k *APIKey) Hash() string {
	if k.KeySHA256 != "" {
		return strings.ToLower(k.KeySHA256)
	}
	if k.Key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(k.Key))
	return hex.EncodeToString(sum[:])
}
