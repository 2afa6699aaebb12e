package ws

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"pibridge"
)

// wsAttempt dials /ws, sends the frames, and describes how the server
// answered: "http N" for a refused handshake, "close N" when it closed the
// connection, or the first reply ("ack ok", "ack refused: …", "error: …").
func wsAttempt(t *testing.T, h *harness, opt dialOpt, frames ...string) string {
	t.Helper()
	conn, resp, err := h.dialRaw(opt)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		return fmt.Sprintf("http %d", resp.StatusCode)
	}
	defer conn.Close()
	c := &wsClient{t: t, conn: conn}
	for _, f := range frames {
		c.send(f)
	}
	for {
		f, err := c.read(5 * time.Second)
		var ce *websocket.CloseError
		switch {
		case errors.As(err, &ce):
			return fmt.Sprintf("close %d", ce.Code)
		case err != nil:
			return "read: " + err.Error()
		case f.Type == "hello" || f.Type == "reading":
			continue
		case f.Type == "ack" && *f.OK:
			return "ack ok"
		case f.Type == "ack":
			return "ack refused: " + f.Error
		}
		return f.Type + ": " + f.Error
	}
}

func restAttempt(t *testing.T, h *harness, method, path, body string, hdr http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(method, h.ts.URL+path, strings.NewReader(body))
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	return fmt.Sprintf("http %d", do(t, req).status)
}

func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// TestAttackMatrix: each way in that an attacker (another site, a
// rebinding page, a guessed or leaked-in-a-URL token, a read-only viewer)
// might try is refused with its code, and no pin moves.
func TestAttackMatrix(t *testing.T) {
	pass := newFakePass()
	h := newHarness(t, setup{
		config: withTokens,
		options: func(o *Options) {
			o.Passthrough = pass
			o.BridgeAllow = []string{"home/#"}
		},
		tune: func(t *tuning) {
			noLimit(t) // TestRepeatedFailuresAreSlowedDown covers the limiter
			t.authWait = 300 * time.Millisecond
		},
	})
	h.emitSync("led", pibridge.Bool(false))
	set := `{"type":"set","id":"x","name":"led","value":true}`
	auth := func(tok string) string { return `{"type":"auth","token":` + jsonString(tok) + `}` }
	foreign := "http://attacker.example"
	// The bridge's own host under the other scheme is another origin.
	otherScheme := "https://" + strings.TrimPrefix(h.ts.URL, "http://")
	loginCookie := func(t *testing.T, tok string) http.Header {
		_, ck := h.login(t, tok, nil)
		if ck == nil {
			t.Fatal("no cookie")
		}
		return cookieHeader(ck)
	}

	for _, tc := range []struct {
		name    string
		attempt func(t *testing.T) string
		want    string
	}{
		// Another site's page in the user's browser.
		{"foreign Origin, /ws with the token", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: headers("Origin", foreign, "Authorization", "Bearer "+controlToken)}, set)
		}, "http 403"},
		{"foreign Origin, /ws with the session cookie", func(t *testing.T) string {
			hdr := loginCookie(t, controlToken)
			hdr.Set("Origin", foreign)
			return wsAttempt(t, h, dialOpt{header: hdr}, set)
		}, "http 403"},
		{"foreign Origin, /ws with an auth frame", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: headers("Origin", foreign)}, auth(controlToken), set)
		}, "http 403"},
		{"foreign Origin, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", headers("Origin", foreign, "Authorization", "Bearer "+controlToken))
		}, "http 403"},
		{"foreign Origin, POST /api/login", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/login", `{"token":"`+controlToken+`"}`, headers("Origin", foreign, "Content-Type", "application/json"))
		}, "http 403"},
		{"origin null", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: headers("Origin", "null", "Authorization", "Bearer "+controlToken)}, set)
		}, "http 403"},

		{"https Origin for the http bridge, /ws with the token", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: headers("Origin", otherScheme, "Authorization", "Bearer "+controlToken)}, set)
		}, "http 403"},
		{"https Origin for the http bridge, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", headers("Origin", otherScheme, "Authorization", "Bearer "+controlToken))
		}, "http 403"},

		// Bytes that are not text in a text frame (RFC 6455 section 8.1).
		{"invalid UTF-8 as the auth frame", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{}, "{\"type\":\"auth\",\"token\":\"\xff\xfe\"}", set)
		}, "close 1007"},
		{"invalid UTF-8 in a set", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: bearer(controlToken)}, "{\"type\":\"set\",\"id\":\"\xc3\",\"name\":\"led\",\"value\":true}")
		}, "close 1007"},

		// No token, or a wrong one.
		{"no token, /ws, a set first", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{}, set)
		}, "close 4401"},
		{"no token, /ws, silence", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{})
		}, "close 4401"},
		{"wrong token, /ws auth frame", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{}, auth("guess"), set)
		}, "close 4401"},
		{"wrong token, /ws bearer", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: bearer("guess")}, set)
		}, "http 401"},
		{"no token, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", nil)
		}, "http 401"},
		{"wrong token, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", bearer("guess"))
		}, "http 401"},
		{"token as Basic auth", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", headers("Authorization", "Basic "+controlToken))
		}, "http 401"},
		{"forged session cookie, POST", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", headers("Cookie", sessionCookie+"="+pibridge.RandomText()))
		}, "http 401"},
		{"forged session cookie, /ws", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: headers("Cookie", sessionCookie+"="+pibridge.RandomText())}, set)
		}, "close 4401"},
		{"the token itself as the cookie", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", headers("Cookie", sessionCookie+"="+controlToken))
		}, "http 401"},
		{"login with a wrong token", func(t *testing.T) string {
			r, ck := h.login(t, "guess", nil)
			if ck != nil {
				return "got a cookie"
			}
			return fmt.Sprintf("http %d", r.status)
		}, "http 401"},
		{"login as a form post", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/login", `{"token":"`+controlToken+`"}`, headers("Content-Type", "text/plain"))
		}, "http 415"},

		// The read token tries to command.
		{"read token, /ws bearer, set", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: bearer(readToken)}, set)
		}, "ack refused: led: read-only access: commands need the control token"},
		{"read token, /ws auth frame, pulse", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{}, auth(readToken), `{"type":"pulse","id":"p","name":"led","for":"1s"}`)
		}, "ack refused: led: read-only access: commands need the control token"},
		{"read token, /ws, publish", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: bearer(readToken)}, `{"type":"publish","id":"p","topic":"home/lamp/set","payload":"on"}`)
		}, "ack refused: publish: read-only access: commands need the control token"},
		{"read token, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", bearer(readToken))
		}, "http 403"},
		{"read token session cookie, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", loginCookie(t, readToken))
		}, "http 403"},
		{"read token session cookie, /ws set", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: loginCookie(t, readToken)}, set)
		}, "ack refused: led: read-only access: commands need the control token"},

		// DNS rebinding: the attacker's name resolves to the bridge.
		{"Host attacker.example, /ws", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{header: headers("Host", "attacker.example", "Authorization", "Bearer "+controlToken)}, set)
		}, "http 421"},
		{"Host attacker.example, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led", "on", headers("Host", "attacker.example:8080", "Authorization", "Bearer "+controlToken))
		}, "http 421"},
		{"Host attacker.example, POST /api/login", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/login", `{"token":"`+controlToken+`"}`, headers("Host", "attacker.example", "Content-Type", "application/json"))
		}, "http 421"},

		// A token in the URL is refused even when it is right.
		{"token in the query, /ws", func(t *testing.T) string {
			return wsAttempt(t, h, dialOpt{query: "token=" + controlToken}, set)
		}, "http 400"},
		{"token in the query, POST /api/signals", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led?access_token="+controlToken, "on", nil)
		}, "http 400"},
		{"token in the query under another name", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/signals/led?t="+controlToken, "on", nil)
		}, "http 400"},
		{"token in the query of /api/login", func(t *testing.T) string {
			return restAttempt(t, h, "POST", "/api/login?token="+controlToken, `{"token":"`+controlToken+`"}`, headers("Content-Type", "application/json"))
		}, "http 400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.attempt(t); got != tc.want {
				t.Errorf("%s, want %s", got, tc.want)
			}
			if moves := h.act.Calls(); len(moves) != 0 {
				t.Fatalf("a pin moved: %v", moves)
			}
			if r, _ := h.core.Latest("led"); r.Value.Bool() {
				t.Fatal("led is on")
			}
			if ps := pass.publishes(); len(ps) != 0 {
				t.Fatalf("published %v", ps)
			}
		})
	}

	// The control: the same requests, done right, do move the pin.
	if got := wsAttempt(t, h, dialOpt{}, auth(controlToken), set); got != "ack ok" {
		t.Errorf("set with the control token: %s", got)
	}
	if got := restAttempt(t, h, "POST", "/api/signals/led", "off", loginCookie(t, controlToken)); got != "http 200" {
		t.Errorf("POST with the control session: %s", got)
	}
	if moves := h.act.Calls(); fmt.Sprint(moves) != "[set led true set led false]" {
		t.Errorf("actuator calls %v", moves)
	}
}
