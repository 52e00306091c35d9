package auth

import (
	"fmt"

	"github.com/sluice-ai/sluice/internal/config"
)

// modelGlobs is a tenant's list of allowed model globs. Nil allows every
// model.
type modelGlobs []string

// compileGlobs checks globs. An empty list means every model, which is the
// documented default of auth.keys[].models and auth.jwt.models. Globs have
// the syntax of model routing (config.MatchModel): '*' matches any run of
// characters, slashes included.
func compileGlobs(globs []string) (modelGlobs, error) {
	if len(globs) == 0 {
		return nil, nil
	}
	out := make(modelGlobs, 0, len(globs))
	for _, g := range globs {
		if g == "" {
			return nil, fmt.Errorf("empty model glob")
		}
		if g == "*" {
			return nil, nil
		}
		out = append(out, g)
	}
	return out, nil
}

func (m modelGlobs) match(model string) bool {
	if m == nil {
		return true
	}
	for _, g := range m {
		if config.MatchModel(g, model) {
			return true
		}
	}
	return false
}
