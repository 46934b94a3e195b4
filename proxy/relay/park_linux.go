package relay

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Parking: an idle session holds no goroutine.
//
// A relay direction waits for its source on a goroutine for at most
// DefaultParkAfter. When nothing came, the goroutine ends and the direction
// parks: the server's poller watches the source socket in its own epoll
// instance (EPOLLIN | EPOLLRDHUP, one-shot), and when the socket has bytes
// or has ended, it starts a goroutine again that resumes the direction.
// With both directions parked, an idle IMAP IDLE session is only its
// connections, its relay and its registry entry on the heap; the session's
// own goroutine ended when the relay began (session.relay).
//
// The poller never uses a descriptor by its number alone: every epoll_ctl
// on a socket runs inside the socket's syscall.RawConn.Control, which
// holds the descriptor open, or fails once it is closed (and a closed
// descriptor has left the epoll set by itself). So a socket closed while
// parked (a revocation, a shutdown, the idle timeout) can never make the
// poller touch another connection that got the same number. The relay
// takes its parked directions back from the poller before it closes its
// connections (relay.closeBoth), and resumes them, so that they end as
// running ones do.
//
// The poller's epoll instance is itself waited on through the Go runtime's
// network poller (an os.File), so the poller's goroutine holds no thread;
// instance and goroutine exist only while something is parked.

// pollerBatch is how many readiness events the poller takes at once.
const pollerBatch = 64

// parkEvents is what the poller waits for on a parked socket: bytes, the
// peer's end (EPOLLERR and EPOLLHUP come anyway), once.
const parkEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// waker is a parked relay direction, as the poller sees it.
type waker interface {
	// wake resumes what was parked under id, on a goroutine of its own;
	// it must not block.
	wake(id uint64)
}

// parkEntry is one parked socket.
type parkEntry struct {
	raw syscall.RawConn
	w   waker
}

// Poller watches the sockets of a server's parked relay directions;
// share one across a server. The zero value is ready. It opens its epoll
// instance when the first socket parks and closes it when the last one
// leaves.
type Poller struct {
	mu sync.Mutex
	// ep is the epoll instance, nil while nothing is parked; epfd is its
	// descriptor, valid while ep is open (both under mu).
	ep     *os.File
	epfd   int
	parked map[uint64]parkEntry
	// lastID numbers the parkings; an id is never used twice, so a
	// late event for an earlier parking matches nothing.
	lastID uint64
}

// add parks raw's socket: w.wake(id) is called once the socket is
// readable or has ended, unless remove(id) comes first.
func (p *Poller) add(raw syscall.RawConn, w waker) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ep == nil {
		if err := p.open(); err != nil {
			return 0, err
		}
	}
	p.lastID++
	id := p.lastID
	ev := unix.EpollEvent{Events: parkEvents, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var ctlErr error
	err := raw.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil && ctlErr != nil {
		err = fmt.Errorf("park: epoll_ctl add: %w", ctlErr)
	}
	if err != nil {
		p.closeIfEmpty()
		return 0, err
	}
	p.parked[id] = parkEntry{raw: raw, w: w}
	return id, nil
}

// remove takes the socket parked under id back, and reports whether it
// was still parked (false: its wake has been or is being called).
func (p *Poller) remove(id uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.parked[id]
	if !ok {
		return false
	}
	p.drop(id, e)
	p.closeIfEmpty()
	return true
}

// drop deletes the entry of id and its epoll registration; a socket
// already closed left the epoll set by itself. Called with mu held.
func (p *Poller) drop(id uint64, e parkEntry) {
	delete(p.parked, id)
	_ = e.raw.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// open creates the epoll instance and starts the goroutine that waits on
// it. Called with mu held.
func (p *Poller) open() error {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("park: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("park: epoll nonblocking: %w", err)
	}
	// A non-blocking descriptor joins the runtime's network poller.
	f := os.NewFile(uintptr(fd), "kanmon-park-epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("park: %w", err)
	}
	p.ep, p.epfd = f, fd
	if p.parked == nil {
		p.parked = map[uint64]parkEntry{}
	}
	go p.run(f, raw)
	return nil
}

// closeIfEmpty closes the epoll instance once nothing is parked; its
// goroutine then ends. Called with mu held.
func (p *Poller) closeIfEmpty() {
	if p.ep == nil || len(p.parked) > 0 {
		return
	}
	_ = p.ep.Close()
	p.ep, p.epfd = nil, -1
}

// run waits for readiness on the epoll instance ep (raw, its descriptor)
// and wakes the parked directions it reports, until the instance is
// closed.
func (p *Poller) run(ep *os.File, raw syscall.RawConn) {
	var events [pollerBatch]unix.EpollEvent
	var woken []parkEntry
	var ids []uint64
	for {
		var n int
		err := raw.Read(func(fd uintptr) bool {
			var werr error
			for {
				n, werr = unix.EpollWait(int(fd), events[:], 0)
				if werr != unix.EINTR {
					break
				}
			}
			// Nothing ready: wait for the instance to become readable.
			return n > 0 || werr != nil
		})
		if err != nil {
			// Closed (nothing parked any more), or unusable.
			p.fail(ep)
			return
		}
		woken, ids = woken[:0], ids[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			e, ok := p.parked[id]
			if !ok {
				continue
			}
			p.drop(id, e)
			woken, ids = append(woken, e), append(ids, id)
		}
		p.closeIfEmpty()
		p.mu.Unlock()
		for i, e := range woken {
			e.w.wake(ids[i])
		}
		clear(woken)
	}
}

// fail handles the end of the wait on the epoll instance ep. When ep was
// closed because nothing is parked, there is nothing to do. When ep is
// still in use, it cannot be waited on: every parked direction is woken,
// resumes on a goroutine of its own, and parks again on a new instance.
func (p *Poller) fail(ep *os.File) {
	p.mu.Lock()
	if p.ep != ep {
		p.mu.Unlock()
		return
	}
	var woken []parkEntry
	var ids []uint64
	for id, e := range p.parked {
		p.drop(id, e)
		woken, ids = append(woken, e), append(ids, id)
	}
	_ = p.ep.Close()
	p.ep, p.epfd = nil, -1
	p.mu.Unlock()
	for i, e := range woken {
		e.w.wake(ids[i])
	}
}

// Parked reports how many directions are parked, and whether the epoll
// instance is open (it is exactly while something is parked).
func (p *Poller) Parked() (n int, open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked), p.ep != nil
}
