package auth

// Unrestricted reports whether the tenant may use every model.
func (t *Tenant) Unrestricted() bool { return t.models == nil }
