package proxy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// errFuzzAskClosed stands for the connection ending in the middle of an
// exchange: ask returns it when the fuzzer's responses run out.
var errFuzzAskClosed = errors.New("fuzz: no more responses")

// FuzzSASL runs the SASL decoding every front shares (saslCredentials,
// decodeSASLResponse, plainCredentials) on arbitrary input: a mechanism,
// an optional initial response and the client's response lines, one per
// "\n" of responses. It checks that nothing panics and that
//
//   - the error is one of the errSASL* values, or ask's own error;
//   - no more challenges are sent than the mechanism has (PLAIN one, or
//     none with an initial response; LOGIN two, one with an initial
//     response) and each is the mechanism's prompt;
//   - credentials come back only from valid base64, never hold a NUL
//     (which would shift the fields of the backend's PLAIN login), and
//     for PLAIN are exactly the fields of the decoded response, whose
//     authzid is empty or the authcid;
//   - "*" always cancels, as the client's response or initial response.
//
// The seed corpus is in testdata/fuzz/FuzzSASL.
func FuzzSASL(f *testing.F) {
	for _, seed := range []struct {
		mech, initial string
		hasInitial    bool
		responses     string
	}{
		{"PLAIN", b64s("\x00alice\x00ABCDEFGHIJKLMNOP"), true, ""},
		{"PLAIN", "", false, b64s("alice\x00alice\x00pw")},
		{"plain", "=", true, ""},
		{"PLAIN", "", false, ""},
		{"PLAIN", "*", true, ""},
		{"PLAIN", "", false, "*"},
		{"PLAIN", b64s("\x00alice"), true, ""},
		{"PLAIN", b64s("alice"), true, ""},
		{"PLAIN", b64s("carol\x00alice\x00pw"), true, ""},
		{"PLAIN", b64s("\x00a\x00b\x00c"), true, ""},
		{"PLAIN", "!!!not-base64!!!", true, ""},
		{"PLAIN", "QUFB=", true, ""},
		{"LOGIN", "", false, b64s("alice") + "\n" + b64s("pw")},
		{"LOGIN", b64s("alice"), true, b64s("pw")},
		{"LOGIN", "", false, "\n"},
		{"LOGIN", "", false, b64s("carol\x00alice") + "\n" + b64s("pw")},
		{"LOGIN", "", false, b64s("a\r\nb") + "\n*"},
		{"LOGIN", "=", true, "="},
		{"CRAM-MD5", "", false, ""},
		{"", "", false, ""},
	} {
		f.Add(seed.mech, seed.initial, seed.hasInitial, seed.responses)
	}
	f.Fuzz(func(t *testing.T, mech, initial string, hasInitial bool, responses string) {
		var lines []string
		if responses != "" {
			lines = strings.Split(responses, "\n")
		}
		var challenges, used []string
		ask := func(challenge string) (string, error) {
			challenges = append(challenges, challenge)
			if len(lines) == 0 {
				return "", errFuzzAskClosed
			}
			l := lines[0]
			lines = lines[1:]
			used = append(used, l)
			return l, nil
		}
		var ir *string
		if hasInitial {
			ir = &initial
		}
		user, secret, err := saslCredentials(mech, ir, ask)

		upper := strings.ToUpper(mech)
		var prompts []string
		switch upper {
		case "PLAIN":
			prompts = []string{""}
		case "LOGIN":
			prompts = []string{saslLoginUserPrompt, saslLoginPassPrompt}
		default:
			if !errors.Is(err, errSASLMechanism) || len(challenges) != 0 {
				t.Fatalf("mechanism %q: err %v after %d challenges", mech, err, len(challenges))
			}
			return
		}
		if hasInitial {
			prompts = prompts[1:]
		}
		if len(challenges) > len(prompts) {
			t.Fatalf("%d challenges for %s (initial response: %v)", len(challenges), upper, hasInitial)
		}
		for i, c := range challenges {
			if c != prompts[i] {
				t.Fatalf("challenge %d is %q, want %q", i, c, prompts[i])
			}
		}
		// What the client sent, in order: the initial response, then
		// the lines ask returned.
		sent := used
		if hasInitial {
			sent = append([]string{initial}, used...)
		}
		for i, s := range sent {
			if s == "*" && !errors.Is(err, errSASLCancelled) {
				t.Fatalf("response %d is \"*\" but err is %v", i, err)
			}
			if s == "*" && i != len(sent)-1 {
				t.Fatalf("exchange went on after a cancel: %q", sent)
			}
		}

		switch {
		case err == nil:
		case errors.Is(err, errFuzzAskClosed):
			if len(challenges) == 0 {
				t.Fatal("ask's error without asking")
			}
			return
		case errors.Is(err, errSASLCancelled), errors.Is(err, errSASLBase64), errors.Is(err, errSASLMalformed):
			if user != "" || secret != "" {
				t.Fatalf("%v with credentials %q/%q", err, user, secret)
			}
			return
		case errors.Is(err, errSASLAuthzid):
			if upper != "PLAIN" || secret != "" {
				t.Fatalf("authzid error for %s with a secret", upper)
			}
			return
		default:
			t.Fatalf("unexpected error %v", err)
		}

		// Success: every response was valid base64, and the credentials
		// are exactly what it says.
		if strings.IndexByte(user, 0) >= 0 || strings.IndexByte(secret, 0) >= 0 {
			t.Fatalf("NUL in credentials %q/%q", user, secret)
		}
		var decoded [][]byte
		for i, s := range sent {
			d, derr := decodeSASLResponse(s, hasInitial && i == 0)
			if derr != nil {
				t.Fatalf("credentials from response %q that does not decode: %v", s, derr)
			}
			decoded = append(decoded, d)
		}
		switch upper {
		case "PLAIN":
			if len(decoded) != 1 {
				t.Fatalf("PLAIN succeeded after %d responses", len(decoded))
			}
			fields := bytes.Split(decoded[0], []byte{0})
			if len(fields) != 3 || string(fields[1]) != user || string(fields[2]) != secret ||
				len(fields[0]) != 0 && string(fields[0]) != user {
				t.Fatalf("PLAIN %q gave %q/%q", decoded[0], user, secret)
			}
		case "LOGIN":
			if len(decoded) != 2 || string(decoded[0]) != user || string(decoded[1]) != secret {
				t.Fatalf("LOGIN %q gave %q/%q", decoded, user, secret)
			}
		}
	})
}

// FuzzDecodeSASLResponse checks one response line on its own: "*" is a
// cancel, "=" an empty initial response, anything else decodes exactly
// as standard base64 (RFC 4648 §4) or is errSASLBase64, and the result is
// never longer than the line allows.
func FuzzDecodeSASLResponse(f *testing.F) {
	for _, s := range []string{"", "*", "=", "==", "QQ==", "QQ", "QUFB", "QUFB\r", "QU\rFB", "!!!", b64s("\x00alice\x00pw")} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, line string, initial bool) {
		data, err := decodeSASLResponse(line, initial)
		switch {
		case line == "*":
			if !errors.Is(err, errSASLCancelled) {
				t.Fatalf("\"*\": %v", err)
			}
			return
		case initial && line == "=":
			if err != nil || data == nil || len(data) != 0 {
				t.Fatalf("\"=\" as initial response: %q, %v", data, err)
			}
			return
		}
		want, werr := base64.StdEncoding.DecodeString(line)
		if (err != nil) != (werr != nil) || err != nil && !errors.Is(err, errSASLBase64) {
			t.Fatalf("%q: err %v, base64 says %v", line, err, werr)
		}
		if err == nil && (!bytes.Equal(data, want) || data == nil || len(data) > len(line)*3/4) {
			t.Fatalf("%q decoded to %q, want %q", line, data, want)
		}
	})
}

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
