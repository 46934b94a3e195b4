package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/kanmon-mail/kanmon/internal/lineio"
)

// lineFront is what the two line-based fronts, POP3 and submission, share:
// the session, a bounded line reader over the client connection, one
// reply line at a time, and AUTH run over lines.
type lineFront struct {
	*session
	lr *lineio.Reader
	// proto names the protocol in write errors.
	proto string
}

// setConn (re)binds the reader to conn, after accept or STARTTLS/STLS.
func (lf *lineFront) setConn(conn net.Conn) {
	lf.conn = conn
	lf.lr = lineio.NewReader(bufio.NewReaderSize(conn, 4096))
}

// reply sends one reply (several lines for a multi-line one) and CRLF.
func (lf *lineFront) reply(text string) error {
	if _, err := io.WriteString(lf.conn, text+"\r\n"); err != nil {
		return fmt.Errorf("%s write: %w", lf.proto, err)
	}
	return nil
}

// reader holds what the client pipelined past its login (front).
func (lf *lineFront) reader() *bufio.Reader { return lf.lr.Buffered() }

// startTLSWith answers STARTTLS or STLS with ok, runs the handshake and
// reads from the TLS connection from then on; what the client pipelined
// behind the command is dropped (upgradeTLS). It reports whether the
// front is done.
func (lf *lineFront) startTLSWith(ok, command string) bool {
	if lf.reply(ok) != nil {
		return true
	}
	tc := lf.upgradeTLS(lf.lr.Buffered(), command)
	if tc == nil {
		return true
	}
	lf.setConn(tc)
	return false
}

// endRead says goodbye after a read error where one is due: tooLong
// after a line over its limit, the dialect's goodbye to an idle client or
// at shutdown. Any other error (the client went away) gets no word.
func (lf *lineFront) endRead(err error, tooLong string) {
	var ne net.Error
	switch {
	case errors.Is(err, lineio.ErrTooLong):
		_ = lf.reply(tooLong)
	case errors.As(err, &ne) && ne.Timeout():
		lf.goodbyeDeadline()
		if lf.shuttingDown() {
			_ = lf.reply(lf.dialect.shuttingDown)
		} else {
			_ = lf.reply(lf.dialect.idle)
		}
	}
}

// sasl runs "AUTH mechanism [initial-response]" (arg is what follows
// AUTH) for f: the exchange, each challenge sent as cont and the
// challenge, each response read up to maxLine octets under the pre-auth
// deadline, then the login. The exchange's own refusals are answered
// through f. It returns an error only when the exchange ended otherwise
// (I/O, a line over maxLine), for the front to end the session on.
func (lf *lineFront) sasl(ctx context.Context, f front, cont string, maxLine int, arg string) (done bool, err error) {
	mech, ir, hasIR := strings.Cut(arg, " ")
	var initial *string
	if hasIR {
		initial = &ir
	}
	user, secret, err := saslCredentials(mech, initial, func(challenge string) (string, error) {
		if err := f.reply(cont + challenge); err != nil {
			return "", err
		}
		lf.preAuthDeadline()
		return lf.lr.ReadLine(maxLine)
	})
	if err == nil {
		return lf.login(ctx, f, user, secret), nil
	}
	if line, ok := lf.saslRefusal(err, user); ok {
		return f.refuse(line), nil
	}
	return true, err
}
