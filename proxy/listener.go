package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/proxyproto"
)

// Accept-loop backoff after a temporary error (EMFILE, ECONNABORTED…), as
// net/http does: start small, double, cap.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Listen opens every listener in cfg. On error, those already open are
// closed.
func Listen(cfg *config.Config) ([]net.Listener, error) {
	var lns []net.Listener
	for _, l := range cfg.Listeners {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return nil, fmt.Errorf("listener %s %s: %w", l.Protocol, l.Address, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Serve accepts on ln until ctx ends, running a session per connection as
// spec describes. It closes ln when ctx ends and returns once the accept
// loop has stopped; sessions keep running until they end or ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener, spec config.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	log := s.log.With("listener", spec.Address, "proto", spec.Protocol, "tls", spec.TLS)
	log.Info("listening")
	backoff := time.Duration(0)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if contextDone(ctx) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				backoff = min(max(backoff*2, acceptBackoffMin), acceptBackoffMax)
				log.Warn("accept failed; backing off", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept on %s: %w", spec.Address, err)
		}
		backoff = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, conn, spec, log)
		}()
	}
}

// isTemporaryAccept reports accept errors worth retrying: running out of
// file descriptors or a connection reset before it was accepted.
func isTemporaryAccept(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}

// handle runs one client connection. A panic in a session is logged and
// ends only that session.
func (s *Server) handle(ctx context.Context, conn net.Conn, spec config.Listener, log *slog.Logger) {
	// A session that logged in returns here while its relay runs on
	// (session.relay): the relay then closes the connection and gives
	// back the caps when it ends.
	accepted := time.Now()
	var sess *session
	detached := func() bool { return sess != nil && sess.detached }
	defer func(c net.Conn) {
		if !detached() {
			c.Close()
		}
	}(conn)
	id := newSessionID()
	ip := remoteIP(conn)
	// The "client" attribute goes last: the fail2ban filter expects the
	// user right after it. setClient re-adds it when the client changes.
	base := log.With("session", id)
	log = base.With("client", ip.String())
	defer func() {
		if r := recover(); r != nil {
			log.Error("session panic", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	// Shutdown interrupts a read the pre-auth front is blocked in. A
	// logged-in session's relay does not end with ctx: the drain lets it
	// go on until CloseSessions.
	interrupt := interruptReads(ctx, conn)
	defer interrupt.release()
	rt := s.current.Load()
	client, local := proxyproto.AddrPort(conn.RemoteAddr()), proxyproto.AddrPort(conn.LocalAddr())
	if spec.ProxyProtocol {
		var h proxyproto.Header
		var err error
		client, local, h, err = proxyproto.Accept(ctx, conn, rt.Config.ProxyTrustedPrefixes, rt.Config.PreAuthTimeout.Duration)
		if err != nil {
			log.Warn("PROXY protocol: connection refused", "err", err)
			return
		}
		base = base.With("proxy", ip.String(), "proxy_version", int(h.Version))
		ip = client.Addr()
		log = base.With("client", ip.String())
	}
	d := dialectOf(spec.Protocol)
	if d == nil {
		log.Error("protocol not served", "protocol", spec.Protocol)
		return
	}
	// The caps count the real client address: after the PROXY header,
	// before the TLS handshake.
	hold, refused := s.admitConn(rt, ip)
	if refused != "" {
		s.refuseConn(ctx, conn, spec, rt, d, log, refused)
		return
	}
	defer func() {
		if !detached() {
			s.limits.release(hold)
		}
	}()
	if spec.TLS == config.TLSImplicit {
		tc := tls.Server(conn, rt.TLS)
		hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout(rt.Config))
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			log.Debug("TLS handshake failed", "err", err)
			return
		}
		conn = tc
	}
	sess = &session{
		ctx:        ctx,
		srv:        s,
		rt:         rt,
		spec:       spec,
		dialect:    d,
		conn:       conn,
		clientIP:   ip,
		log:        log,
		clientPort: client.Port(),
		connIP:     ip,
		localAddr:  local,
		id:         id,
		baseLog:    base,
		tls:        spec.TLS == config.TLSImplicit,
		hold:       hold,
		interrupt:  interrupt,
		started:    accepted,
	}
	d.serve(ctx, sess)
	sess.stopStressWatch()
	if sess.admitted == nil {
		// A client that never logged in: a health check, a scanner, a
		// client that gave up. Worth a debug line, not more.
		sess.log.Debug("connection closed before login")
	}
}

// remoteIP is the client's address, IPv4-mapped addresses unmapped.
func remoteIP(conn net.Conn) netip.Addr {
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
