package proxy

import "context"

// serveSubmission runs the pre-auth SMTP submission front and, after AUTH,
// the relay.
func serveSubmission(ctx context.Context, s *session) {
	_, _ = s.conn.Write([]byte("554 5.3.2 Submission is not served yet.\r\n"))
}
