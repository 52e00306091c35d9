package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluice-ai/sluice/internal/auth"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/openai"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// Model discovery: a pool configured with models: ["llama-3-*"] serves
// whatever its replicas load under that pattern, and a client listing
// models wants those ids, not the pattern. So GET /v1/models asks each
// healthy backend its own GET /v1/models (with the pool's upstream headers,
// never the client's credentials), keeps the answer for catalogTTL, and
// lists the ids that route to that pool; a backend added since is asked at
// the next listing. When no backend of a pool can say, the pool's
// configured names are listed as they are.
const (
	// catalogTTL is how long one backend's answer is kept.
	catalogTTL = 30 * time.Second
	// catalogTimeout bounds one backend's answer, so a hung replica delays
	// a listing by at most this long, once per catalogTTL.
	catalogTimeout = 2 * time.Second
	// maxCatalogBody bounds the bytes read of one backend's answer.
	maxCatalogBody = 1 << 20
	// maxCatalogIDs bounds the ids kept of one backend.
	maxCatalogIDs = 4096
)

// modelCatalog keeps what each backend said it serves, by backend key, for
// one routing table (a reload starts afresh, as upstream headers may have
// changed). The server's refreshModels keeps it warm; a listing that finds
// an entry stale asks its backend itself, concurrently with the others, and
// waits for it. The zero value is ready.
type modelCatalog struct {
	mu      sync.Mutex
	entries map[string]*catalogEntry
}

// catalogEntry is one backend's answer. ids, ok and at are written once,
// before done is closed.
type catalogEntry struct {
	done chan struct{}
	ids  []string
	ok   bool // the backend answered a model list
	at   time.Time
}

// modelsOf returns the ids the healthy backends of p serve, in the order
// they list them, and whether any backend could say.
func (s *Server) modelsOf(ctx context.Context, t *table, p *upstream.Pool) ([]string, bool) {
	var backends []*upstream.Backend
	for _, b := range p.Backends() {
		if b.State() == upstream.StateHealthy {
			backends = append(backends, b)
		}
	}
	entries := make([]*catalogEntry, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Go(func() { entries[i] = t.catalog.get(ctx, s, p, b) })
	}
	wg.Wait()
	var ids []string
	known := false
	seen := make(map[string]bool)
	for _, e := range entries {
		if e == nil || !e.ok {
			continue
		}
		known = true
		for _, id := range e.ids {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	return ids, known
}

// get returns b's entry, asking b when there is none or it is stale; nil
// when ctx ends first.
func (c *modelCatalog) get(ctx context.Context, s *Server, p *upstream.Pool, b *upstream.Backend) *catalogEntry {
	now := s.opts.Clock.Now()
	c.mu.Lock()
	if c.entries == nil {
		c.entries = make(map[string]*catalogEntry)
	}
	e := c.entries[b.Key()]
	fresh := e != nil
	if fresh {
		select {
		case <-e.done:
			fresh = now.Sub(e.at) < catalogTTL
		default: // being asked now
		}
	}
	if !fresh {
		e = &catalogEntry{done: make(chan struct{})}
		c.entries[b.Key()] = e
	}
	c.mu.Unlock()
	if !fresh {
		// The answer is shared by every listing, so a client that leaves
		// does not cut it short.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), catalogTimeout)
		e.ids, e.ok = fetchModels(fctx, p, b)
		cancel()
		e.at = s.opts.Clock.Now()
		close(e.done)
	}
	select {
	case <-e.done:
		return e
	case <-ctx.Done():
		return nil
	}
}

// prune forgets backends that are in no pool of t any more.
func (c *modelCatalog) prune(t *table) {
	live := make(map[string]bool)
	for _, p := range t.order {
		for _, b := range p.Backends() {
			live[b.Key()] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if !live[k] {
			delete(c.entries, k)
		}
	}
}

// fetchModels asks b for GET /v1/models; ok is false when b did not answer
// an OpenAI model list.
func fetchModels(ctx context.Context, p *upstream.Pool, b *upstream.Backend) (ids []string, ok bool) {
	u := *b.Target()
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/models"
	u.RawPath, u.RawQuery = "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, false
	}
	for k, v := range p.Headers(b) {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.Transport(b).RoundTrip(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCatalogBody+1))
	if err != nil || len(body) > maxCatalogBody || json.Unmarshal(body, &list) != nil || list.Data == nil {
		return nil, false
	}
	for _, m := range list.Data {
		if m.ID != "" && len(ids) < maxCatalogIDs {
			ids = append(ids, m.ID)
		}
	}
	return ids, true
}

// modelIDs lists the model ids tenant may use, in config order: a pool's
// exact names as configured; for a pattern, the ids its backends serve
// that route to that pool, or the pattern itself when no backend can say.
// fallback are the pools none of whose backends could say.
func (s *Server) modelIDs(ctx context.Context, t *table, tenant *auth.Tenant) (ids []string, fallback map[*upstream.Pool]bool) {
	type served struct {
		ids   []string
		known bool
	}
	discovered := make([]served, len(t.order))
	var wg sync.WaitGroup
	for i, p := range t.order {
		if !hasPattern(p.Config().Models) {
			continue
		}
		wg.Go(func() {
			ids, known := s.modelsOf(ctx, t, p)
			discovered[i] = served{ids, known}
		})
	}
	wg.Wait()
	t.catalog.prune(t)
	seen := make(map[string]bool)
	add := func(id string) {
		if !seen[id] && (tenant == nil || tenant.MayUse(id)) {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	fallback = make(map[*upstream.Pool]bool)
	for i, p := range t.order {
		for _, m := range p.Config().Models {
			if !isPattern(m) {
				add(m)
				continue
			}
			if !discovered[i].known {
				fallback[p] = true
				add(m)
				continue
			}
			for _, id := range discovered[i].ids {
				if t.poolForModel(id) == p && config.MatchModel(m, id) {
					add(id)
				}
			}
		}
	}
	return ids, fallback
}

func isPattern(m string) bool { return strings.ContainsAny(m, `*?[\`) }

func hasPattern(models []string) bool {
	for _, m := range models {
		if isPattern(m) {
			return true
		}
	}
	return false
}

// modelObject is OpenAI's model object.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// listModels answers GET /v1/models in OpenAI's list format. It returns
// the bytes written.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request, t *table, tenant *auth.Tenant) int64 {
	ids, _ := s.modelIDs(r.Context(), t, tenant)
	out := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list", Data: make([]modelObject, 0, len(ids))}
	for _, id := range ids {
		out.Data = append(out.Data, s.modelObject(id))
	}
	return writeModels(w, out)
}

// retrieveModel answers GET /v1/models/{id}: the model object when id is
// one the tenant may use — listed, or routed by a pattern of a pool whose
// backends cannot list theirs — else 404. It returns the bytes written.
func (s *Server) retrieveModel(w http.ResponseWriter, r *http.Request, t *table, tenant *auth.Tenant, id string) (int64, *openai.Error) {
	ids, fallback := s.modelIDs(r.Context(), t, tenant)
	found := false
	for _, m := range ids {
		if m == id {
			found = true
			break
		}
	}
	if !found {
		if p := t.poolForModel(id); p != nil && fallback[p] && (tenant == nil || tenant.MayUse(id)) {
			found = true
		}
	}
	if !found {
		return 0, openai.NotFound("model_not_found", "The model '"+id+"' does not exist or you do not have access to it; GET /v1/models lists the models")
	}
	return writeModels(w, s.modelObject(id)), nil
}

func (s *Server) modelObject(id string) modelObject {
	return modelObject{ID: id, Object: "model", Created: s.started.Unix(), OwnedBy: "sluice"}
}

func writeModels(w http.ResponseWriter, v any) int64 {
	b, _ := json.Marshal(v)
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	n, _ := w.Write(b)
	return int64(n)
}

// refreshModels keeps the catalog of the table in force warm until ctx
// ends: every half catalogTTL it asks the backends of pools named by a
// pattern whose answers are stale, so that a listing rarely waits on a
// backend, and a reload's new table is filled within one round.
func (s *Server) refreshModels(ctx context.Context) {
	t := s.opts.Clock.NewTicker(catalogTTL / 2)
	defer t.Stop()
	for {
		tab := s.table.Load()
		tab.catalog.prune(tab)
		for i, p := range tab.order {
			if hasPattern(tab.cfg.Pools[i].Models) {
				s.modelsOf(ctx, tab, p)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}
