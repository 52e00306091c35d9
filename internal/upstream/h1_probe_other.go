//go:build !unix

package upstream

import "net"

// probe is a no-op where a socket cannot be peeked at without blocking: a
// connection the backend closed fails its next request, which is sent again
// when that is safe.
type probe struct{}

func newProbe(net.Conn) *probe { return nil }

func (*probe) open() bool { return true }
