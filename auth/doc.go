// Package auth decides what kanmon does with a login attempt.
//
// It owns four things:
//
//   - App passcodes: 16 random letters A–Z, shown once, stored only as a
//     salted HMAC-SHA256 keyed with a per-installation pepper
//     (passcode.go, pepper.go).
//   - The accounts file: a TOML list of the accounts that have two-factor
//     authentication on, with their passcode hashes; loaded strictly with
//     "file:line: message" errors and rewritten atomically under a lock
//     (accounts.go, store.go).
//   - The portal's second factor: an authenticator (TOTP) secret sealed
//     with AES-256-GCM under state_dir/totp.key, and one-time codes stored
//     like passcodes and removed when used (totp.go, onetime.go).
//   - The policy: given a user, a secret and a client address, refuse, log
//     in at the backend with the master credential, or pass the client's own
//     credential through (decide.go).
//
// Every refusal carries two texts: FailureText, the same for every failed
// login and safe to send to the client, and Decision.Reason, the internal
// cause for the log. Neither ever contains the secret.
package auth
