package kube

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/sluice-ai/sluice/internal/upstream"
)

// ep is an endpoint of a test slice: its address, its pod, and its
// conditions as "ready", "not-ready", "terminating" (not serving),
// "terminating-serving", "published-not-ready" (ready forced true, not
// serving) or "unknown" (no conditions).
type ep struct{ addr, pod, cond string }

func conditions(c string) discoveryv1.EndpointConditions {
	switch c {
	case "ready":
		return discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}
	case "not-ready":
		return discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
	case "terminating":
		return discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(true)}
	case "terminating-serving":
		return discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	case "published-not-ready":
		return discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(false), Terminating: ptr.To(false)}
	case "unknown":
		return discoveryv1.EndpointConditions{}
	}
	panic("unknown condition " + c)
}

// port is a slice port: "name=number", "number" or "name=number/UDP".
func slicePorts(specs ...string) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, s := range specs {
		var p discoveryv1.EndpointPort
		if name, rest, ok := strings.Cut(s, "="); ok {
			p.Name, s = ptr.To(name), rest
		} else {
			p.Name = ptr.To("")
		}
		proto := corev1.ProtocolTCP
		if num, pr, ok := strings.Cut(s, "/"); ok {
			s, proto = num, corev1.Protocol(pr)
		}
		n := int32(0)
		for _, c := range s {
			n = n*10 + int32(c-'0')
		}
		p.Port, p.Protocol = ptr.To(n), ptr.To(proto)
		out = append(out, p)
	}
	return out
}

func testSlice(name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{ServiceNameLabel: "svc"}},
		AddressType: family,
		Ports:       ports,
	}
	for _, e := range eps {
		de := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: conditions(e.cond)}
		if e.pod != "" {
			de.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: e.pod}
		}
		s.Endpoints = append(s.Endpoints, de)
	}
	return s
}

func TestEndpointsView(t *testing.T) {
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	H, S, D := upstream.StateHealthy, upstream.StateStarting, upstream.StateDraining
	tests := []struct {
		name     string
		port     string
		slices   []*discoveryv1.EndpointSlice
		want     map[string]upstream.State
		problems []string // substrings, one per problem
	}{
		{
			name: "conditions map to states",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, slicePorts("http=8000"),
				ep{"10.0.0.1", "p1", "ready"},
				ep{"10.0.0.2", "p2", "not-ready"},
				ep{"10.0.0.3", "p3", "terminating"},
				ep{"10.0.0.4", "p4", "terminating-serving"},
				ep{"10.0.0.5", "p5", "unknown"},
				ep{"10.0.0.6", "p6", "published-not-ready"},
			)},
			want: map[string]upstream.State{
				"http://10.0.0.1:8000": H, "http://10.0.0.2:8000": S, "http://10.0.0.3:8000": D,
				"http://10.0.0.4:8000": D, "http://10.0.0.5:8000": H, "http://10.0.0.6:8000": S,
			},
		},
		{
			name: "port by name picks that port",
			port: "metrics",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, slicePorts("http=8000", "metrics=9090"),
				ep{"10.0.0.1", "p1", "ready"})},
			want: map[string]upstream.State{"http://10.0.0.1:9090": H},
		},
		{
			name: "port by number is the pod's port",
			port: "9090",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, slicePorts("http=8000", "metrics=9090"),
				ep{"10.0.0.1", "p1", "ready"})},
			want: map[string]upstream.State{"http://10.0.0.1:9090": H},
		},
		{
			name: "no port configured takes the first TCP port",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, slicePorts("dns=53/UDP", "http=8000", "grpc=9000"),
				ep{"10.0.0.1", "p1", "ready"})},
			want: map[string]upstream.State{"http://10.0.0.1:8000": H},
		},
		{
			name: "a port the slice lacks is a problem, not a backend",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, slicePorts("grpc=9000", "dns=53/UDP"),
				ep{"10.0.0.1", "p1", "ready"})},
			want:     map[string]upstream.State{},
			problems: []string{"EndpointSlice a has no port http; it lists grpc=9000, dns=53/UDP"},
		},
		{
			name: "a UDP port of that name is not used",
			port: "dns",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, slicePorts("dns=53/UDP"),
				ep{"10.0.0.1", "p1", "ready"})},
			want:     map[string]upstream.State{},
			problems: []string{"has no port dns"},
		},
		{
			name: "a headless Service without ports takes a number",
			port: "8000",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, nil,
				ep{"10.0.0.1", "p1", "ready"})},
			want: map[string]upstream.State{"http://10.0.0.1:8000": H},
		},
		{
			name: "a headless Service without ports cannot resolve a name",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v4, nil,
				ep{"10.0.0.1", "p1", "ready"})},
			want:     map[string]upstream.State{},
			problems: []string{"EndpointSlice a lists no ports; set kubernetes.port to the pods' port number"},
		},
		{
			name: "an empty placeholder slice is no problem",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{
				testSlice("empty", v4, nil),
				testSlice("a", v4, slicePorts("http=8000"), ep{"10.0.0.1", "p1", "ready"}),
			},
			want: map[string]upstream.State{"http://10.0.0.1:8000": H},
		},
		{
			name: "IPv6 addresses are bracketed",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", v6, slicePorts("http=8000"),
				ep{"fd00::1", "p1", "ready"}, ep{"::1", "p2", "not-ready"})},
			want: map[string]upstream.State{"http://[fd00::1]:8000": H, "http://[::1]:8000": S},
		},
		{
			name: "endpoints spread over several slices all count",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{
				testSlice("a", v4, slicePorts("http=8000"), ep{"10.0.0.1", "p1", "ready"}),
				testSlice("b", v4, slicePorts("http=8000"), ep{"10.0.0.2", "p2", "ready"}),
			},
			want: map[string]upstream.State{"http://10.0.0.1:8000": H, "http://10.0.0.2:8000": H},
		},
		{
			name: "a dual-stack pod is one backend, on IPv4",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{
				testSlice("a-v6", v6, slicePorts("http=8000"), ep{"fd00::1", "p1", "ready"}, ep{"fd00::2", "p2", "ready"}),
				testSlice("b-v4", v4, slicePorts("http=8000"), ep{"10.0.0.1", "p1", "ready"}),
			},
			want: map[string]upstream.State{"http://10.0.0.1:8000": H, "http://[fd00::2]:8000": H},
		},
		{
			name: "a pod listed twice while moving between slices keeps its best state",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{
				testSlice("a", v4, slicePorts("http=8000"), ep{"10.0.0.1", "p1", "not-ready"}),
				testSlice("b", v4, slicePorts("http=8000"), ep{"10.0.0.1", "p1", "ready"}),
				testSlice("c", v4, slicePorts("http=8000"), ep{"10.0.0.1", "p1", "terminating"}),
			},
			want: map[string]upstream.State{"http://10.0.0.1:8000": H},
		},
		{
			name: "an address without a pod is deduplicated by URL",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{
				testSlice("a", v4, slicePorts("http=8000"), ep{"10.0.0.9", "", "terminating"}),
				testSlice("b", v4, slicePorts("http=8000"), ep{"10.0.0.9", "", "not-ready"}),
			},
			want: map[string]upstream.State{"http://10.0.0.9:8000": S},
		},
		{
			name: "FQDN endpoints",
			port: "http",
			slices: []*discoveryv1.EndpointSlice{testSlice("a", discoveryv1.AddressTypeFQDN, slicePorts("http=8000"),
				ep{"model-0.model.ns.svc", "", "ready"})},
			want: map[string]upstream.State{"http://model-0.model.ns.svc:8000": H},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := endpointsView(tt.slices, tt.port)
			got := make(map[string]upstream.State)
			for url, tg := range v.targets {
				got[url] = tg.state
				if _, err := upstream.ParseURL(url); err != nil {
					t.Errorf("backend URL %q does not parse: %v", url, err)
				}
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("targets = %v, want %v", got, tt.want)
			}
			if len(v.problems) != len(tt.problems) {
				t.Fatalf("problems = %q, want %d matching %q", v.problems, len(tt.problems), tt.problems)
			}
			for i, p := range tt.problems {
				if !strings.Contains(v.problems[i], p) {
					t.Errorf("problem %d = %q, want it to contain %q", i, v.problems[i], p)
				}
			}
			var ready, notReady, terminating int
			for _, s := range got {
				switch s {
				case H:
					ready++
				case S:
					notReady++
				case D:
					terminating++
				}
			}
			if v.ready != ready || v.notReady != notReady || v.terminating != terminating {
				t.Errorf("counts ready/not-ready/terminating = %d/%d/%d, want %d/%d/%d", v.ready, v.notReady, v.terminating, ready, notReady, terminating)
			}
		})
	}
}

// The view must not depend on the order the informer lists slices in.
func TestEndpointsViewOrderIndependent(t *testing.T) {
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	in := []*discoveryv1.EndpointSlice{
		testSlice("a", v6, slicePorts("http=8000"), ep{"fd00::1", "p1", "ready"}),
		testSlice("b", v4, slicePorts("http=8000"), ep{"10.0.0.1", "p1", "ready"}, ep{"10.0.0.2", "p2", "not-ready"}),
		testSlice("c", v4, slicePorts("http=8000"), ep{"10.0.0.2", "p2", "ready"}),
	}
	want := endpointsView(in, "http")
	for _, order := range [][]int{{0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
		shuffled := make([]*discoveryv1.EndpointSlice, len(in))
		for i, j := range order {
			shuffled[i] = in[j]
		}
		if got := endpointsView(shuffled, "http"); !maps.Equal(got.targets, want.targets) {
			t.Errorf("order %v changed the view: %v, want %v", order, got.targets, want.targets)
		}
	}
}

// FuzzEndpointsView feeds arbitrary addresses and ports through the view:
// every backend URL must parse and point at exactly the listed address and
// port, whatever the slice holds.
func FuzzEndpointsView(f *testing.F) {
	f.Add("10.0.0.1", "http", "http", int32(8000), uint8(0))
	f.Add("fd00::1", "", "grpc", int32(9000), uint8(1))
	f.Add("model-0.model.ns.svc", "8000", "", int32(8000), uint8(2))
	f.Add("10.0.0.1:80@evil.example", "http", "http", int32(8000), uint8(2))
	f.Add("fe80::1%eth0", "http", "http", int32(8000), uint8(1))
	f.Add("10.0.0.1", "", "", int32(-1), uint8(0))
	f.Add("10.0.0.1", "0", "", int32(0), uint8(0))
	f.Fuzz(func(t *testing.T, addr, want, name string, port int32, family uint8) {
		types := []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN}
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "a"},
			AddressType: types[int(family)%len(types)],
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(name), Port: ptr.To(port)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}}},
		}
		v := endpointsView([]*discoveryv1.EndpointSlice{s}, want)
		for url := range v.targets {
			u, err := upstream.ParseURL(url)
			if err != nil {
				t.Fatalf("backend %q does not parse: %v", url, err)
			}
			if u.Hostname() != addr || u.Port() != strconv.Itoa(int(port)) || u.User != nil || u.Path != "" {
				t.Fatalf("backend %q from address %q port %d points elsewhere", url, addr, port)
			}
		}
	})
}

// BenchmarkEndpointsView measures one full recomputation for a Service of
// 1000 pods in 10 slices: the work each EndpointSlice event costs.
func BenchmarkEndpointsView(b *testing.B) {
	var in []*discoveryv1.EndpointSlice
	for s := range 10 {
		eps := make([]ep, 100)
		for i := range eps {
			eps[i] = ep{fmt.Sprintf("10.%d.%d.%d", s, i/250, i%250+1), fmt.Sprintf("p-%d-%d", s, i), "ready"}
		}
		in = append(in, testSlice(fmt.Sprintf("s%d", s), discoveryv1.AddressTypeIPv4, slicePorts("http=8000"), eps...))
	}
	b.ReportAllocs()
	for b.Loop() {
		if v := endpointsView(in, "http"); v.ready != 1000 {
			b.Fatal(v.ready)
		}
	}
}
