package gateway

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// table is an immutable routing table built from one config; a reload swaps
// in a new one atomically, so a request routes entirely on one version.
type table struct {
	cfg     *config.Config
	pools   map[string]*upstream.Pool
	order   []*upstream.Pool // config order, for listings
	routes  []route
	exact   map[string]*upstream.Pool // model name -> pool
	globs   []globRoute               // in config order
	hash    map[string]config.HashOn  // pool name -> parsed hash_on (consistent_hash pools only)
	catalog *modelCatalog             // what the backends say they serve, for GET /v1/models
	auth    *auth.Authenticator       // nil: an open gateway
}

type route struct {
	host   string
	prefix string
	pool   *upstream.Pool
}

type globRoute struct {
	pattern string
	pool    *upstream.Pool
}

func buildTable(cfg *config.Config, pools map[string]*upstream.Pool) (*table, error) {
	t := &table{cfg: cfg, pools: pools, exact: make(map[string]*upstream.Pool), hash: make(map[string]config.HashOn), catalog: &modelCatalog{}}
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		p := pools[pc.Name]
		t.order = append(t.order, p)
		for _, m := range pc.Models {
			if isPattern(m) {
				t.globs = append(t.globs, globRoute{pattern: m, pool: p})
			} else {
				t.exact[m] = p
			}
		}
		if pc.Balancer == "consistent_hash" {
			h, err := config.ParseHashOn(pc.HashOn)
			if err != nil {
				return nil, fmt.Errorf("pool %s: %w", pc.Name, err)
			}
			t.hash[pc.Name] = h
		}
	}
	for _, rc := range cfg.Routes {
		prefix := rc.PathPrefix
		if prefix == "" {
			prefix = "/"
		}
		t.routes = append(t.routes, route{host: strings.ToLower(rc.Host), prefix: prefix, pool: pools[rc.Pool]})
	}
	// Longest prefix first, host-specific before any-host, so the most
	// specific route wins whatever the order in the file.
	slices.SortStableFunc(t.routes, func(a, b route) int {
		if (a.host != "") != (b.host != "") {
			if a.host != "" {
				return -1
			}
			return 1
		}
		return len(b.prefix) - len(a.prefix)
	})
	return t, nil
}

// routeFor returns the pool of the first route matching r, or nil.
func (t *table) routeFor(r *http.Request) *upstream.Pool {
	if len(t.routes) == 0 {
		return nil
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, rt := range t.routes {
		if rt.host != "" && !strings.EqualFold(rt.host, host) {
			continue
		}
		if pathHasPrefix(r.URL.Path, rt.prefix) {
			return rt.pool
		}
	}
	return nil
}

// pathHasPrefix matches whole path segments: /v1 matches /v1 and /v1/x, not /v10.
func pathHasPrefix(p, prefix string) bool {
	if prefix == "/" {
		return true
	}
	prefix = strings.TrimSuffix(prefix, "/")
	return p == prefix || strings.HasPrefix(p, prefix+"/")
}

// poolForModel returns the pool serving model, or nil.
func (t *table) poolForModel(model string) *upstream.Pool {
	if p, ok := t.exact[model]; ok {
		return p
	}
	for _, g := range t.globs {
		if config.MatchModel(g.pattern, model) {
			return g.pool
		}
	}
	return nil
}

// v2Model extracts {name} from an Open Inference Protocol v2 path
// /v2/models/{name}[/versions/{v}]/...; ok is false for other paths.
func v2Model(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/v2/models/")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, "/")
	return name, name != ""
}
