package ws

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"pibridge"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	if d := Defaults(); d.MaxClients != 256 || d.AuthEnabled() {
		t.Errorf("Defaults() = %+v", d)
	}
}

func TestConfigFromYAML(t *testing.T) {
	src := `
listen: "0.0.0.0:8080"
token_file: /etc/pibridge/token
read_token: viewer-0123456789
allowed_origins: ["https://panel.example:8443"]
allowed_hosts: [greenhouse.lan]
tls: {cert_file: /etc/c.pem, key_file: /etc/k.pem}
`
	cfg := Defaults()
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxClients != 256 || !cfg.TLS.Enabled() || !cfg.AuthEnabled() || cfg.AllowedHosts[0] != "greenhouse.lan" {
		t.Errorf("%+v", cfg)
	}
	bad := yaml.NewDecoder(strings.NewReader("listen: x\nmax_client: 3\n"))
	bad.KnownFields(true)
	if err := bad.Decode(&cfg); err == nil {
		t.Error("an unknown key is accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   []string // each problem, with its path
	}{
		{"empty listen", func(c *Config) { c.Listen = "" }, []string{"listen: must be host:port"}},
		{"no port", func(c *Config) { c.Listen = "0.0.0.0" }, []string{`listen: "0.0.0.0": must be host:port`}},
		{"bad port", func(c *Config) { c.Listen = "0.0.0.0:http" }, []string{`listen: "0.0.0.0:http": port "http" must be a number`}},
		{"big port", func(c *Config) { c.Listen = ":70000" }, []string{`port "70000"`}},
		{"bad host", func(c *Config) { c.Listen = "a b:80" }, []string{`host "a b"`}},
		{"any host", func(c *Config) { c.Listen = ":8080" }, nil},
		{"ipv6", func(c *Config) { c.Listen = "[::]:8080" }, nil},
		{"name", func(c *Config) { c.Listen = "pi.local:8080" }, nil},
		{"both tokens", func(c *Config) { c.Token = "abcdefghijklmnopq"; c.TokenFile = "/t" }, []string{"token: set token or token_file, not both"}},
		{"token with space", func(c *Config) { c.Token = "my secret" }, []string{"token: only visible ASCII"}},
		{"token none", func(c *Config) { c.Token = "none" }, nil},
		{"read token alone", func(c *Config) { c.ReadToken = "viewer-0123456789" }, []string{"read_token: needs a control token"}},
		{"read token with none", func(c *Config) { c.Token = "none"; c.ReadToken = "viewer-0123456789" }, []string{"read_token: needs a control token"}},
		{"read token = token", func(c *Config) { c.Token = "same-0123456789"; c.ReadToken = "same-0123456789" }, []string{"read_token: must differ from token"}},
		{"origin wildcard", func(c *Config) { c.AllowedOrigins = []string{"*"} }, []string{`allowed_origins[0]: "*": wildcards are not supported`}},
		{"origin with path", func(c *Config) { c.AllowedOrigins = []string{"https://a.example", "https://b.example/panel"} }, []string{`allowed_origins[1]: "https://b.example/panel": an origin has no path`}},
		{"origin without scheme", func(c *Config) { c.AllowedOrigins = []string{"panel.example"} }, []string{`allowed_origins[0]: "panel.example": want an origin`}},
		{"host with port", func(c *Config) { c.AllowedHosts = []string{"pi.lan:8080"} }, []string{`allowed_hosts[0]: "pi.lan:8080": want a host name`}},
		{"host with scheme", func(c *Config) { c.AllowedHosts = []string{"http://pi.lan"} }, []string{`allowed_hosts[0]`}},
		{"empty host", func(c *Config) { c.AllowedHosts = []string{""} }, []string{`allowed_hosts[0]: "": must not be empty`}},
		{"half tls", func(c *Config) { c.TLS.CertFile = "/c.pem" }, []string{"tls: set both cert_file and key_file"}},
		{"no clients", func(c *Config) { c.MaxClients = 0 }, []string{"max_clients: 0: must be at least 1"}},
		{"all at once", func(c *Config) { c.Listen = "x"; c.MaxClients = -1; c.TLS.KeyFile = "/k" }, []string{"listen:", "tls:", "max_clients:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			tc.change(&cfg)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected problems: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no problem found, want %q", tc.want)
			}
			problems := err.(interface{ Unwrap() []error }).Unwrap()
			if len(problems) != len(tc.want) {
				t.Fatalf("%d problems (%v), want %d", len(problems), err, len(tc.want))
			}
			for i, p := range problems {
				var fe *pibridge.FieldError
				if !errors.As(p, &fe) || !strings.Contains(p.Error(), tc.want[i]) {
					t.Errorf("problem %d = %v, want a FieldError containing %q", i, p, tc.want[i])
				}
			}
		})
	}
}

func TestConfigProblemsTakeTheSectionPrefix(t *testing.T) {
	cfg := Defaults()
	cfg.MaxClients = 0
	var p pibridge.Problems
	p.Add("http", cfg.Validate())
	if got := p.Err().Error(); got != "http.max_clients: 0: must be at least 1" {
		t.Errorf("got %q", got)
	}
}

func TestConfigNeverLogsTokens(t *testing.T) {
	cfg := Defaults()
	cfg.Token, cfg.ReadToken = "control-SECRET-123", "read-SECRET-456"
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "http", cfg)
	if strings.Contains(b.String(), "SECRET") {
		t.Errorf("a token is logged: %s", b.String())
	}
	cfg.Token = "bad token SECRET"
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("problem %v quotes the token", err)
	}
}
