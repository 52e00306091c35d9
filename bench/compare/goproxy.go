package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// goProxyCommand is the first argument that makes this executable run the
// overhead scenario's reference Go proxy instead of the suite.
const goProxyCommand = "goproxy"

// goProxyTarget names the reference proxy's row in the overhead results.
const goProxyTarget = "Go httputil.ReverseProxy"

// runGoProxy serves Go's standard reverse proxy on -addr in front of
// -backend until SIGTERM or SIGINT. It does no routing, balancing,
// accounting or logging: what any net/http proxy costs at the least, the
// reference for how much of a Go proxy's cost is its own.
func runGoProxy(args []string) error {
	fs := flag.NewFlagSet(goProxyCommand, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	backend := fs.String("backend", "", "upstream URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*backend)
	if err != nil || target.Host == "" {
		return fmt.Errorf("-backend %q: need an http://host:port URL", *backend)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		// The same upstream keep-alive the other proxies get.
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return serveUntilSignal(*addr, rp)
}

// serveUntilSignal serves h on addr until SIGTERM or SIGINT, then shuts
// down gracefully.
func serveUntilSignal(addr string, h http.Handler) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
