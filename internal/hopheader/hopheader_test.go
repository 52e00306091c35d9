package hopheader

import (
	"net/http"
	"testing"
)

func TestRemove(t *testing.T) {
	h := http.Header{"Connection": {"close"}, "Te": {"trailers"}, "Content-Type": {"x"}, "Upgrade": {"h2c"}}
	Remove(h)
	if len(h) != 1 || h.Get("Content-Type") != "x" {
		t.Fatalf("after Remove: %v", h)
	}
	if !Is("Transfer-Encoding") || Is("Content-Length") {
		t.Fatal("Is disagrees with RFC 9110")
	}
}
