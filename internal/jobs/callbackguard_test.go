package jobs

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestNonPublic(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want string
	}{
		{"8.8.8.8", ""},
		{"2606:4700::1111", ""},
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"0.1.2.3", "reserved"},
		{"10.1.2.3", "private"},
		{"172.31.0.1", "private"},
		{"192.168.0.1", "private"},
		{"fd12::1", "private"},
		{"169.254.169.254", "link-local"},
		{"fe80::1", "link-local"},
		{"100.64.0.1", "shared (CGNAT)"},
		{"100.127.255.255", "shared (CGNAT)"},
		{"100.128.0.1", ""},
		{"224.0.0.251", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "reserved"},
		{"198.18.0.1", "reserved"},
		{"192.0.0.170", "reserved"},
		{"192.0.2.1", "reserved"},
		{"fec0::1", "reserved"},
		{"64:ff9b::a00:1", "private"},            // NAT64 of 10.0.0.1
		{"64:ff9b::808:808", ""},                 // NAT64 of 8.8.8.8
		{"2002:a9fe:a9fe::1", "link-local"},      // 6to4 of 169.254.169.254
		{"2001:0:1:2:3:4:80ff:fffe", "loopback"}, // Teredo of 127.0.0.1
		{"::127.0.0.1", "loopback"},
		{"2001:db8::1", "reserved"},
	} {
		if got := nonPublic(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("nonPublic(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestGuardDialChecksResolvedAddress dials a name through real resolution:
// the policy sees the address the name resolved to, not the name.
func TestGuardDialChecksResolvedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx := context.Background()

	deny, _ := newCallbackGuard(ctx, nil, nil)
	if _, err := deny.dialContext(ctx, "tcp4", "localhost:"+port); !errors.Is(err, ErrCallbackRefused) {
		t.Fatalf("dial localhost: %v, want ErrCallbackRefused", err)
	}
	byAddr, _ := newCallbackGuard(ctx, []string{"127.0.0.1:" + port}, nil)
	c, err := byAddr.dialContext(ctx, "tcp4", "localhost:"+port)
	if err != nil {
		t.Fatalf("dial an allowed address: %v", err)
	}
	c.Close()
	if _, err := byAddr.dialContext(ctx, "tcp4", "127.0.0.1:1"); !errors.Is(err, ErrCallbackRefused) {
		t.Fatalf("dial another port of an address allowed with a port: %v", err)
	}
	byName, _ := newCallbackGuard(ctx, []string{"localhost"}, []string{"127.0.0.1:" + port})
	if _, err := byName.dialContext(ctx, "tcp4", "localhost:"+port); !errors.Is(err, ErrCallbackRefused) {
		t.Fatalf("dial the own address through an allowed name: %v", err)
	}
}

func FuzzCallbackURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8081/api/reload", "https://hooks.example.com/x", "http://[::1]/", "http://0x7f.1/", "http://a@b/"} {
		f.Add(s)
	}
	s := &Service{}
	f.Fuzz(func(t *testing.T, raw string) {
		if err := s.validCallbackURL(raw); err != nil {
			if err.Status != 400 || err.Message == "" {
				t.Fatalf("%q: %+v", raw, err)
			}
		}
	})
}
