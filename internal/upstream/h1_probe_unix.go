//go:build unix

package upstream

import (
	"net"
	"syscall"
)

// probe tells whether an idle connection is still open, without waiting
// and without taking a byte: a backend that closed it (an idle timeout,
// a restart) has sent FIN, which a peek reads as the end of the stream.
type probe struct {
	rc    syscall.RawConn
	check func(fd uintptr) bool // made once per connection
	buf   [1]byte
	ok    bool
}

func newProbe(nc net.Conn) *probe {
	sc, isSys := nc.(syscall.Conn)
	if !isSys {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &probe{rc: rc}
	p.check = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read is an open connection; the end of the stream,
		// an error, or bytes nobody asked for are not one to use.
		p.ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	}
	return p
}

// open reports whether the connection may carry a request.
func (p *probe) open() bool {
	if p == nil {
		return true
	}
	if err := p.rc.Read(p.check); err != nil {
		return false
	}
	return p.ok
}
