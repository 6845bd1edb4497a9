package host

import (
	"io"
	"syscall"
)

// readBufs recycles the chunks the reader hands to the loop. The shim
// copies what OnData is given into Go memory of its own at once (as it does
// from Envoy's buffer), so a chunk goes back to the pool as soon as it is
// delivered.
var readBufs bufPool

// reader returns the endpoint's read function: each call waits for bytes
// and returns them in a pooled chunk of exactly their length.
//
// An idle connection should cost next to nothing (Envoy holds no read
// buffer for one either), so on a plain socket the reader waits for
// readability through the runtime poller without holding a buffer, and
// only then reads, non-blocking, into a pooled scratch buffer it gives back
// at once. Other connections (TLS) read through net.Conn into a buffer of
// their own.
func (e *endpoint) reader() func() ([]byte, error) {
	size := e.h.opts.ReadSize
	sc, ok := e.nc.(syscall.Conn)
	if !ok {
		return e.bufferedReader(size)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return e.bufferedReader(size)
	}
	// One closure for the connection's life, not one per read: RawConn.Read
	// takes it as an interface-held func, which would escape each time.
	var (
		data  []byte
		n     int
		rerr  error
		again bool
	)
	readFD := func(fd uintptr) bool {
		scratch := readBufs.get(size)
		for {
			n, rerr = syscall.Read(int(fd), scratch)
			if rerr != syscall.EINTR {
				break
			}
		}
		again = rerr == syscall.EAGAIN
		if n > 0 {
			data = readBufs.get(n)
			copy(data, scratch[:n])
		}
		readBufs.put(scratch)
		// false: nothing to read yet, wait in the poller (holding no buffer).
		return !again
	}
	return func() ([]byte, error) {
		data, n, rerr = nil, 0, nil
		err := rc.Read(readFD)
		switch {
		case err != nil:
			return nil, err
		case rerr != nil:
			return nil, rerr
		case n == 0:
			return nil, io.EOF
		}
		return data, nil
	}
}

func (e *endpoint) bufferedReader(size int) func() ([]byte, error) {
	buf := make([]byte, size)
	return func() ([]byte, error) {
		n, err := e.nc.Read(buf)
		for n == 0 && err == nil {
			// io.Reader allows it; net.Conn's readers do not do it in practice.
			n, err = e.nc.Read(buf)
		}
		if n == 0 {
			return nil, err
		}
		data := readBufs.get(n)
		copy(data, buf[:n])
		return data, err
	}
}
