// Package proxy is kanmon's network core: the listeners, the pre-auth
// front of each protocol, the login decision and its bookkeeping, the
// caps, the session registry and shutdown. What follows a login lives in
// its own packages below it: proxy/backend logs into the mail server,
// proxy/relay moves the bytes.
//
// # Data flow
//
// One path, the same for IMAP, POP3 and submission:
//
//	listener.go     accept; PROXY v1/v2 from trusted balancers (internal/proxyproto);
//	                the connection caps (limits.go); implicit TLS
//	  imap.go       the pre-auth front of the listener's protocol (its dialect's
//	  pop3.go       serve): CAPABILITY/CAPA/EHLO, STARTTLS/STLS, ID, NOOP,
//	  smtp.go       LOGOUT/QUIT, LOGIN, USER/PASS, AUTHENTICATE/AUTH (sasl.go)
//	    authenticate.go   lockout check → auth.Policy.Decide → backend.Login →
//	                      counting, tarpit, one log line; then the front's OK
//	      session.go      relay.Start, with the session in the registry
//	        registry.go   live sessions; a reload revokes those whose credential
//	        gate.go       no longer stands; the IMAP gate (a relay.Gate) lets a
//	                      revocation say BYE between two responses
//
// # Files
//
//	server.go       Server, Generation (one config and what it loaded), Swap
//	listener.go     Listen, Serve, the per-connection handle
//	session.go      what a front knows of its connection; TLS upgrade; hand-over to the
//	                relay; converse, the pre-auth read-dispatch loop of every front
//	dialect.go      one reply table per protocol
//	imap.go pop3.go smtp.go   the three pre-auth fronts
//	linefront.go    what POP3 and submission share: line reader, replies, AUTH over lines
//	sasl.go         PLAIN and LOGIN exchanges, and their refusals
//	authenticate.go one login attempt, and the login steps the fronts share
//	clientip.go     the client address from IMAP ID x-originating-ip
//	limits.go       max_connections, max_preauth_per_ip, max_sessions_per_user_ip
//	registry.go gate.go   live sessions, revocation, the IMAP gate
//	shutdown.go     interrupting pre-auth reads at shutdown
//	lockout.go metrics.go   glue to package lockout and package metrics
//
// # Invariants
//
//   - Each connection reads the Generation once, when it is accepted. A
//     reload stores the new Generation before it sweeps the registry
//     (Server.Swap), and a session registering after that checks itself
//     against the new one (register), so no revocation is missed.
//   - Every write to a logged-in IMAP client goes through the gate
//     (relayTap): the relay's backend→client writes and splices, and the
//     registry's BYE. A BYE is written only where the response tracker
//     says the stream stands between two responses.
//   - A parked relay direction leaves the poller before its socket is
//     closed (relay.closeBoth), so the poller never touches a reused
//     descriptor.
//   - Only a dialect's text, a front's own command replies, or a
//     backend's sanitised refusal (backend.LoginError.ClientLine) ever
//     reaches a client. Internal causes (auth.Reason, backend details) go
//     to the log, and every failed login gets the same reply.
//   - Credentials are refused before TLS unless the listener is
//     explicitly plaintext (session.authAllowed); bytes pipelined before a
//     STARTTLS are discarded, never executed inside TLS.
package proxy
