package kube

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/sluice-ai/sluice/internal/upstream"
)

// target is one replica as a Service's EndpointSlices describe it.
type target struct {
	url   string
	state upstream.State // healthy (ready), starting (not ready) or draining (terminating)
	// family ranks the address type when a pod is listed once per IP
	// family (dual-stack): lower wins.
	family int
}

// view is what a set of EndpointSlices says the pool's backends should be.
type view struct {
	targets map[string]target // by URL
	// Ready, NotReady and Terminating count targets by condition.
	ready, notReady, terminating int
	// problems explain endpoints that yielded no backend (no matching port).
	problems []string
}

// endpointsView resolves slices into backend URLs with port, a port name,
// a port number or "" (the first TCP port of each slice).
//
// A pod listed in several slices (one per IP family on a dual-stack
// Service, or briefly two while the EndpointSlice controller moves it)
// becomes one backend: IPv4 is preferred over IPv6 over FQDN, and a ready
// listing over a not-ready one over a terminating one. Otherwise it would
// get twice its share of traffic.
func endpointsView(slices []*discoveryv1.EndpointSlice, port string) view {
	v := view{targets: make(map[string]target)}
	byPod := make(map[string]string) // pod (namespace/name) -> URL chosen for it
	for _, s := range sortedSlices(slices) {
		if len(s.Endpoints) == 0 {
			continue // an empty Service keeps a placeholder slice without ports
		}
		family, ok := familyRank(s.AddressType)
		if !ok {
			continue
		}
		p, ok := slicePort(s, port)
		if !ok {
			v.problems = append(v.problems, portProblem(s, port))
			continue
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 || !validAddress(s.AddressType, ep.Addresses[0]) {
				continue
			}
			// Every address of an endpoint is the same replica; clients
			// are told to use the first.
			t := target{
				url:    "http://" + net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(p))),
				state:  endpointState(ep.Conditions),
				family: family,
			}
			pod := podKey(ep.TargetRef)
			if pod != "" {
				if prev, ok := byPod[pod]; ok {
					if !better(t, v.targets[prev]) {
						continue
					}
					delete(v.targets, prev)
				}
				byPod[pod] = t.url
			}
			if prev, ok := v.targets[t.url]; ok && !better(t, prev) {
				continue
			}
			v.targets[t.url] = t
		}
	}
	for _, t := range v.targets {
		switch t.state {
		case upstream.StateHealthy:
			v.ready++
		case upstream.StateStarting:
			v.notReady++
		default:
			v.terminating++
		}
	}
	return v
}

// sortedSlices orders slices by name so that ties in better resolve the
// same way whatever order the informer's store returns them in.
func sortedSlices(in []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// endpointState maps an endpoint's conditions to a backend state.
//
// Serving, when set, is the pod's own readiness; Ready is forced true on
// Services with publishNotReadyAddresses (typical for the headless Service
// of a StatefulSet) and false once the pod terminates, so Serving is the
// better readiness signal. A terminating endpoint drains whether or not it
// still serves: a new request there could be cut by the shutdown, while the
// pool's queue holds it until another replica is ready.
func endpointState(c discoveryv1.EndpointConditions) upstream.State {
	if c.Terminating != nil && *c.Terminating {
		return upstream.StateDraining
	}
	ready := c.Ready == nil || *c.Ready // unknown means ready
	if c.Serving != nil {
		ready = *c.Serving
	}
	if ready {
		return upstream.StateHealthy
	}
	return upstream.StateStarting
}

// stateRank orders states for better: ready, then not ready, then
// terminating.
func stateRank(s upstream.State) int {
	switch s {
	case upstream.StateHealthy:
		return 0
	case upstream.StateStarting:
		return 1
	default:
		return 2
	}
}

// better reports whether a should replace b as the listing of one replica.
func better(a, b target) bool {
	if ra, rb := stateRank(a.state), stateRank(b.state); ra != rb {
		return ra < rb
	}
	return a.family < b.family
}

func familyRank(t discoveryv1.AddressType) (int, bool) {
	switch t {
	case discoveryv1.AddressTypeIPv4:
		return 0, true
	case discoveryv1.AddressTypeIPv6:
		return 1, true
	case discoveryv1.AddressTypeFQDN:
		return 2, true
	}
	return 0, false
}

// validAddress reports whether addr is an address of type t. The API
// server validates addresses already; checking again keeps a malformed one
// (say, with an '@') from turning into a URL that points elsewhere.
func validAddress(t discoveryv1.AddressType, addr string) bool {
	switch t {
	case discoveryv1.AddressTypeIPv4:
		a, err := netip.ParseAddr(addr)
		return err == nil && a.Is4()
	case discoveryv1.AddressTypeIPv6:
		a, err := netip.ParseAddr(addr)
		return err == nil && a.Is6() && a.Zone() == ""
	case discoveryv1.AddressTypeFQDN:
		return fqdnRE.MatchString(addr) && len(addr) <= 253
	}
	return false
}

// fqdnRE is a DNS subdomain (RFC 1123), as the API server requires of FQDN
// endpoints.
var fqdnRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func podKey(ref *corev1.ObjectReference) string {
	if ref == nil || ref.Name == "" {
		return ""
	}
	return ref.Kind + "/" + ref.Namespace + "/" + ref.Name
}

// slicePort resolves the configured port against one slice's ports. Port
// numbers in a slice are the pods' (target) ports, and names are the
// Service's port names. A slice without ports (a headless Service that
// declares none) accepts any port number.
func slicePort(s *discoveryv1.EndpointSlice, want string) (int32, bool) {
	n, err := strconv.Atoi(want)
	numeric := err == nil
	if numeric && len(s.Ports) == 0 && n >= 1 && n <= 65535 {
		return int32(n), true
	}
	for _, p := range s.Ports {
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		switch {
		case want == "":
			return *p.Port, true
		case numeric:
			if int(*p.Port) == n {
				return *p.Port, true
			}
		case p.Name != nil && *p.Name == want:
			return *p.Port, true
		}
	}
	return 0, false
}

func portProblem(s *discoveryv1.EndpointSlice, want string) string {
	var have []string
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		name := ""
		if p.Name != nil && *p.Name != "" {
			name = *p.Name + "="
		}
		proto := ""
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			proto = "/" + string(*p.Protocol)
		}
		have = append(have, fmt.Sprintf("%s%d%s", name, *p.Port, proto))
	}
	if want == "" {
		want = "(first TCP port)"
	}
	if len(have) == 0 {
		return fmt.Sprintf("EndpointSlice %s lists no ports; set kubernetes.port to the pods' port number", s.Name)
	}
	return fmt.Sprintf("EndpointSlice %s has no port %s; it lists %s (numbers are the pods' ports, names the Service's)", s.Name, want, strings.Join(have, ", "))
}
