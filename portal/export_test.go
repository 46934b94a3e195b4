package portal

// Constants the black-box tests need.
const (
	MaxConcurrentChecks    = maxConcurrentChecks
	MaxSessionsPerUser     = maxSessionsPerUser
	MaxSessions            = maxSessions
	DefaultMinFailureDelay = minFailureDelay
)
