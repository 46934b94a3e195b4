package proxy

import "context"

// servePOP3 runs the pre-auth POP3 front and, after a login, the relay.
func servePOP3(ctx context.Context, s *session) {
	_, _ = s.conn.Write([]byte("-ERR [SYS/PERM] POP3 is not served yet.\r\n"))
}
