package ws

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"pibridge"
)

// Config is the http: section of the configuration file.
type Config struct {
	Listen string `yaml:"listen"`
	// Token is the control token; "none" turns authentication off
	// explicitly. TokenFile names a file holding it instead. With neither,
	// a listen address beyond loopback gets a generated token, kept in
	// the state directory (Options.StateDir, Server.PanelURL).
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// ReadToken grants everything but commands.
	ReadToken string `yaml:"read_token"`
	// AllowedOrigins are browser origins ("https://panel.example:8443")
	// allowed besides the one the request was sent to.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHosts are Host header names allowed besides IP literals,
	// localhost and this machine's hostname (also with .local).
	AllowedHosts []string `yaml:"allowed_hosts"`
	// TLS turns on HTTPS when both files are set.
	TLS pibridge.ServerTLS `yaml:"tls"`
	// MaxClients bounds the open WebSocket connections; more get 503.
	MaxClients int `yaml:"max_clients"`
}

const (
	// DefaultListen keeps a fresh install on loopback; serving the LAN is a
	// deliberate choice in the configuration file.
	DefaultListen     = "127.0.0.1:8080"
	DefaultMaxClients = 256
	// TokenNone as the token turns authentication off explicitly.
	TokenNone = "none"
)

// Defaults returns the section as it is before the configuration file is
// decoded over it, so that a key the file sets to zero ("max_clients: 0")
// is reported by Validate rather than taken for "default". A Config built
// in code starts from it too: New takes its Config as it is.
func Defaults() Config { return Config{Listen: DefaultListen, MaxClients: DefaultMaxClients} }

// AuthEnabled reports whether /ws and /api/* need a token: one is set,
// read from TokenFile, or generated because the listen address is beyond
// loopback and no token is set.
func (c Config) AuthEnabled() bool {
	return c.TokenFile != "" || (c.Token != "" && c.Token != TokenNone) || c.generatesToken()
}

// generatesToken reports whether New generates (or reuses) the token in
// the state directory: listening beyond loopback with no token set, and
// not explicitly "none".
func (c Config) generatesToken() bool {
	return c.Token == "" && c.TokenFile == "" && !loopbackListen(c.Listen)
}

// loopbackListen reports whether a listen address only takes connections
// from this machine. All interfaces (":8080", "0.0.0.0:8080") and names
// other than localhost count as beyond it.
func loopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Validate returns every problem of the section at once, each with its
// field path relative to the section ("listen", "allowed_origins[1]").
// It does no I/O: CheckFiles looks at the files, New reads them.
func (c Config) Validate() error {
	var p pibridge.Problems
	p.Add("listen", validListen(c.Listen))
	if c.Token != "" && c.TokenFile != "" {
		p.Addf("token", "set token or token_file, not both")
	}
	if c.Token != "" && c.Token != TokenNone {
		p.Add("token", validToken(c.Token))
	}
	if c.ReadToken != "" {
		switch {
		case !c.AuthEnabled():
			p.Addf("read_token", "needs a control token (token or token_file, or a listen address beyond loopback, which generates one): without one everybody may command")
		case c.ReadToken == c.Token:
			p.Addf("read_token", "must differ from token")
		}
		p.Add("read_token", validToken(c.ReadToken))
	}
	for i, o := range c.AllowedOrigins {
		if _, err := normalOrigin(o); err != nil {
			p.Addf(fmt.Sprintf("allowed_origins[%d]", i), "%q: %v", o, err)
		}
	}
	for i, h := range c.AllowedHosts {
		if err := validHostName(h); err != nil {
			p.Addf(fmt.Sprintf("allowed_hosts[%d]", i), "%q: %v", h, err)
		}
	}
	p.Add("tls", c.TLS.Validate())
	if c.MaxClients < 1 {
		p.Addf("max_clients", "%d: must be at least 1", c.MaxClients)
	}
	return p.Err()
}

// LogValue keeps tokens out of logs: a Config logged with slog shows
// whether a token is set, never the token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("listen", c.Listen),
		slog.Bool("auth", c.AuthEnabled()),
		slog.Bool("read_token", c.ReadToken != ""),
		slog.Any("allowed_origins", c.AllowedOrigins),
		slog.Any("allowed_hosts", c.AllowedHosts),
		slog.Bool("tls", c.TLS.Enabled()),
		slog.Int("max_clients", c.MaxClients),
	)
}

func validListen(s string) error {
	if s == "" {
		return errors.New(`must be host:port, such as "0.0.0.0:8080" or "127.0.0.1:8080"`)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: must be host:port, such as \"0.0.0.0:8080\"", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q must be a number from 0 to 65535", s, port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && validHostName(host) != nil {
			return fmt.Errorf("%q: host %q is neither an IP address nor a host name", s, host)
		}
	}
	return nil
}

// validToken checks what can travel in an Authorization header. The
// reasons never quote the token: problems are printed and logged.
func validToken(t string) error {
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return errors.New("only visible ASCII characters are allowed (no spaces)")
		}
	}
	return nil
}

// normalOrigin returns an origin as browsers send it: lower-case
// scheme://host[:port], nothing else.
func normalOrigin(s string) (string, error) {
	if s == "*" || strings.Contains(s, "*") {
		return "", errors.New("wildcards are not supported: list each origin")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New(`want an origin such as "https://panel.example:8443"`)
	case u.Host == "" || u.User != nil:
		return "", errors.New("want scheme://host[:port]")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("an origin has no path, query or fragment")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// validHostName accepts DNS names (letters, digits, '-', '_', dots),
// without port or scheme.
func validHostName(h string) error {
	if h == "" {
		return errors.New("must not be empty")
	}
	if len(h) > 253 {
		return errors.New("longer than 253 characters")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return errors.New("want a host name without scheme, port or wildcard")
		}
	}
	return nil
}
