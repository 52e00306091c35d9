package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestGRPCThroughH2C calls a real gRPC server through sluice: h2c from the
// client to the gateway and from the gateway to an h2c:// backend.
func TestGRPCThroughH2C(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("model", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	cfg := header() + "  - name: grpc\n    models: [grpc-model]\n    health_check: {path: \"\"}\n    backends: [{url: \"h2c://" + ln.Addr().String() + "\"}]\n" +
		"routes:\n  - {path_prefix: /grpc.health.v1.Health, pool: grpc}\n"
	g := startGateway(t, cfg)

	conn, err := grpc.NewClient(g.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "model"})
	if err != nil {
		t.Fatalf("gRPC call through sluice: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status %v", resp.Status)
	}
	// An error status travels in trailers; it must arrive intact.
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
	if err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("gRPC error status lost: %v", err)
	}
}

// TestTLSWithHTTP2AndCertReload serves TLS with HTTP/2 and picks up a
// replaced certificate without a restart.
func TestTLSWithHTTP2AndCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writeCert(t, certFile, keyFile, "first")
	be := newBackend(t, "a")
	cfg := "listen: 127.0.0.1:0\nadmin: {listen: \"\"}\nlog: {level: error}\ntls: {cert_file: " + certFile + ", key_file: " + keyFile + "}\npools:\n" +
		poolYAML("chat", "round_robin", []string{"m1"}, be)
	g := startGateway(t, cfg)

	get := func() (*http.Response, string) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Post("https://"+g.srv.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp, resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	resp, cn := get()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || cn != "first" {
		t.Fatalf("status %d proto %s cn %q", resp.StatusCode, resp.Proto, cn)
	}
	writeCert(t, certFile, keyFile, "second")
	eventually(t, "the new certificate", func() bool { _, cn := get(); return cn == "second" })
}

func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	// Write both to temp names and rename, as a cert manager would, and
	// bump the mtime so a same-second rewrite is still seen as a change.
	write := func(path string, block *pem.Block) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		future := time.Now().Add(time.Duration(len(cn)) * time.Second)
		_ = os.Chtimes(tmp, future, future)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(keyFile, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	write(certFile, &pem.Block{Type: "CERTIFICATE", Bytes: der})
}
