package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/proxy/relay"
)

// session is what every protocol front knows about its connection.
type session struct {
	// ctx ends when the server shuts down; handle then interrupts any
	// pre-auth read (see preAuthDeadline).
	ctx  context.Context
	srv  *Server
	rt   *Generation
	spec config.Listener
	// dialect is the protocol's reply table.
	dialect *dialect
	conn    net.Conn
	// clientIP is the real client's address, the one every policy uses
	// (trusted_networks, lockout, logs, last use): the connection's peer,
	// or the source of its PROXY header, or the x-originating-ip of an
	// IMAP ID from id_trusted_networks.
	clientIP netip.Addr
	log      *slog.Logger
	// clientPort is the client's port from the same source as clientIP,
	// 0 when unknown; forwarded to the backend with it.
	clientPort uint16
	// connIP is the host that sent the connection's commands: the peer,
	// or the PROXY header's source. IMAP ID fields are trusted by it.
	connIP netip.Addr
	// localAddr is where the client connected (the PROXY header's
	// destination when there was one), forwarded as x-connected-ip.
	localAddr netip.AddrPort
	// id is the session id of the log lines, forwarded to the backend
	// where it takes one.
	id string
	// baseLog is log without its "client" attribute (see setClient).
	baseLog *slog.Logger
	// tls is true once the client connection is encrypted.
	tls bool
	// failures counts bad and failed pre-auth commands.
	failures int
	// started is when the connection was accepted: the pre-auth
	// lifetime runs from it.
	started time.Time
	// deadline is the pre-auth deadline in force, Unix nanoseconds; the
	// stress watch reads it (siege.go).
	deadline atomic.Int64
	// stressWatch disarms the stress watch; stressFired says it ran.
	stressWatch func() bool
	stressFired atomic.Bool
	// clientID is the name/version the client gave in IMAP ID, for logs,
	// the session registry and the passcode's last use.
	clientID string
	// clientName and clientVersion are the client's IMAP ID "name" and
	// "version", or its EHLO name on submission (a domain or address
	// literal only), sanitised: the password-client records name it.
	clientName, clientVersion string
	// helo is the client's EHLO or HELO name on submission, told to the
	// backend (backend.ClientInfo.Helo).
	helo string
	// admitted is the decision of the successful login (set by
	// authenticate), which the session registry checks on every reload.
	admitted *auth.Decision
	// hold is what the connection holds of the caps (limits.go); handle
	// releases it when the connection ends.
	hold *capHold
	// interrupt ends a pre-auth read when the server shuts down; relay
	// disarms it (shutdown.go).
	interrupt *readInterrupt
	// detached is set by relay: the relay runs on after handle returns,
	// and closes the connection and gives back hold itself.
	detached bool
}

// maxPreAuthFailures is how many bad or failed commands a client gets
// before the connection is closed (the habit of Dovecot and mox; RFC 9051
// leaves it to the server).
const maxPreAuthFailures = 3

// fail counts a bad or failed command and reports whether the client has
// used up its allowance.
func (s *session) fail() bool {
	s.failures++
	return s.failures >= maxPreAuthFailures
}

// authAllowed reports whether credentials may be sent on this connection:
// after TLS, or on a listener explicitly configured as plaintext.
func (s *session) authAllowed() bool {
	return s.tls || s.spec.TLS == config.TLSNone
}

// goodbyeTimeout bounds the last line written after a read failed on its
// deadline (idle client, shutdown): the connection needs a fresh one.
const goodbyeTimeout = 2 * time.Second

// preAuthDeadline arms the pre-auth idle timeout for the next exchange,
// cut short by the pre-auth lifetime (siege.go).
// After shutdown began it arms an expired read deadline instead: handle
// interrupts reads when ctx ends, and this keeps a deadline set just after
// that from undoing it.
func (s *session) preAuthDeadline() {
	d := s.preAuthEnd(time.Now())
	s.deadline.Store(d.UnixNano())
	_ = s.conn.SetDeadline(d)
	s.watchStress()
	if s.shuttingDown() {
		_ = s.conn.SetReadDeadline(time.Now())
	}
}

// shuttingDown reports whether the server is shutting down.
func (s *session) shuttingDown() bool { return s.ctx != nil && contextDone(s.ctx) }

// goodbyeDeadline gives the connection time to write a last line after a
// read deadline expired (a deadline set by SetDeadline covers writes too).
func (s *session) goodbyeDeadline() {
	_ = s.conn.SetWriteDeadline(time.Now().Add(goodbyeTimeout))
}

// relay hands the session over to the byte relay and returns at once:
// the relay runs on without this goroutine (see park.go), and when it
// ends it logs the end and gives back the connection's caps, in place of
// handle (s.detached). Nothing of the pre-auth front stays reachable:
// its reader and buffers become garbage once the caller returns, and
// what the front had read past the login is in client.Pending. While it
// relays, the session is listed in the server's session registry, which
// closes it when a reload revokes its credential.
func (s *session) relay(ctx context.Context, log *slog.Logger, client, backend relay.Endpoint) {
	start := time.Now()
	srv, protocol, hold := s.srv, s.spec.Protocol, s.hold
	srv.limits.endPreAuth(hold)
	s.stopStressWatch()
	s.interrupt.disarm()
	opts := relay.Options{Idle: s.rt.Config.IdleTimeout.Duration, Buffers: srv.buffers, Poller: &srv.parking}
	var ls *liveSession
	if s.admitted != nil {
		// A logged-in session outlives the end of ctx (shutdown): the
		// drain lets it go on, and CloseSessions ends it.
		ctx, ls = srv.register(context.WithoutCancel(ctx), s, log, client, backend)
		opts.Counters = &ls.tap.bytes
		if ls.tap.gated {
			opts.Gate = ls.tap
		}
	}
	s.detached = true
	srv.wg.Add(1) // handle's own count is still held here
	relay.Start(ctx, client, backend, opts, func(stats relay.Stats, err error) {
		defer srv.wg.Done()
		attrs := []any{"duration", time.Since(start).Round(time.Millisecond), "bytes_in", stats.ClientToBackend, "bytes_out", stats.BackendToClient}
		if err != nil && !errors.Is(err, relay.ErrIdle) {
			srv.metrics.BackendError(protocol, backendErrRelay)
		}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		switch {
		case ls != nil && ls.closedByShutdown.Load():
			attrs = append(attrs, "shutdown", true)
		case ls != nil && ls.doomed.Load():
			attrs = append(attrs, "revoked", true)
		}
		log.Info("session ended", attrs...)
		if ls != nil {
			srv.unregister(ls)
		}
		srv.limits.release(hold)
	})
}

// upgradeTLS runs the server side of the TLS handshake after a front
// accepted STARTTLS or STLS (named by verb, for the log). Bytes buffered
// in br were pipelined in clear text before the handshake and are
// discarded, never executed inside TLS (CVE-2011-0411). It returns the TLS
// connection, or nil when the handshake failed.
func (s *session) upgradeTLS(br *bufio.Reader, verb string) net.Conn {
	if n := br.Buffered(); n > 0 {
		s.log.Warn("discarded bytes pipelined after "+verb, "bytes", n)
	}
	tc := tls.Server(s.conn, s.rt.TLS)
	if err := tc.Handshake(); err != nil {
		s.log.Debug(verb+" handshake failed", "err", err)
		return nil
	}
	s.tls = true
	return tc
}

// clientEndpoint is the client's side of the relay after a login: the
// connection without its pre-auth deadline, and the bytes the client
// pipelined behind its login, still buffered in br.
func (s *session) clientEndpoint(br *bufio.Reader) relay.Endpoint {
	_ = s.conn.SetDeadline(time.Time{})
	client := relay.Endpoint{Conn: s.conn}
	if n := br.Buffered(); n > 0 {
		buf, _ := br.Peek(n)
		client.Pending = append([]byte(nil), buf...)
	}
	return client
}

// converse is a front's pre-auth conversation: greet, then read a command
// with next and hand it to dispatch, under the pre-auth deadline, until
// dispatch or a read error (ended says) is the end, or the server shuts
// down, which the client is told with the dialect's goodbye through say.
func converse[C any](ctx context.Context, s *session, greet func() error, next func() (C, error), ended func(error) bool, dispatch func(context.Context, C) bool, say func(string) error) {
	s.preAuthDeadline()
	if greet() != nil {
		return
	}
	for !contextDone(ctx) {
		s.preAuthDeadline()
		cmd, err := next()
		if err != nil {
			if ended(err) {
				return
			}
			continue
		}
		if dispatch(ctx, cmd) {
			return
		}
	}
	_ = say(s.dialect.shuttingDown)
}
