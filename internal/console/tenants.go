package console

import "github.com/sluice-ai/sluice/internal/config"

// TenantsFromConfig lists the limits of cfg's API-key tenants (names and
// numbers only). JWT tenants are not known until they call; they share
// auth.jwt.limits, which the page does not show.
func TenantsFromConfig(cfg *config.Config) []TenantLimits {
	if cfg == nil || cfg.Auth == nil {
		return nil
	}
	out := make([]TenantLimits, 0, len(cfg.Auth.Keys))
	for _, k := range cfg.Auth.Keys {
		out = append(out, TenantLimits{Name: k.Name, RPM: k.Limits.RPM, TPM: k.Limits.TPM, Concurrency: k.Limits.Concurrency})
	}
	return out
}
