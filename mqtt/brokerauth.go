package mqtt

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	pibridge "pibridge"
)

// BrokerAuth makes the embedded broker ask every client for a user name
// and password, and keeps the bridge's own topics the bridge's: only its
// own client may publish there, except for commands. Everyone may read
// everything. See README "Home Assistant".
type BrokerAuth struct {
	// Users are the clients' user names and passwords.
	Users map[string]string
	// Bridge is the bridge's own client: user, password and client id.
	// No other client may take that client id.
	BridgeUser, BridgePassword, BridgeClientID string
	// Protected are filters only the bridge may publish to; Open are
	// filters inside them that every user may publish to (commands, Home
	// Assistant's birth message).
	Protected, Open []string
}

// EmbeddedBridgeUser is the bridge's own user on the embedded broker when
// mqtt.username is not set; user names starting with $ are reserved.
const EmbeddedBridgeUser = "$bridge"

// EmbeddedPasswordFile is the generated password's file in the state
// directory, for the user EmbeddedUser.
const EmbeddedPasswordFile = "mqtt-password"

// EmbeddedUser is the user a generated password is for.
const EmbeddedUser = "pibridge"

// NewAuthBroker is NewBroker with credentials and ACLs: the way to listen
// beyond loopback.
func NewAuthBroker(listen string, log *slog.Logger, a BrokerAuth) (*Broker, error) {
	return newBroker(listen, log, &a)
}

// authHook returns the hook that decides who may connect and publish:
// anyone for a broker on loopback without BrokerAuth, as before; a broker
// beyond loopback without BrokerAuth is refused.
func authHook(listen string, a *BrokerAuth, log *slog.Logger) (mochi.Hook, error) {
	if a == nil {
		if !IsLoopbackListen(listen) {
			return nil, fmt.Errorf("%s is beyond loopback: the embedded broker needs users there (BrokerAuth)", listen)
		}
		return new(auth.AllowHook), nil
	}
	if a.BridgeUser == "" || a.BridgePassword == "" {
		return nil, errors.New("BrokerAuth without the bridge's own user and password")
	}
	h := &aclHook{a: *a, log: log, users: make(map[string][sha256.Size]byte, len(a.Users))}
	for u, p := range a.Users {
		if u == a.BridgeUser {
			return nil, fmt.Errorf("user %q is the bridge's own", u)
		}
		h.users[u] = sha256.Sum256([]byte(p))
	}
	h.bridgeSum = sha256.Sum256([]byte(a.BridgePassword))
	return h, nil
}

// aclHook is mochi's auth ledger cut to what the bridge needs. The
// ledger itself compares passwords with ==, and applies the first of a
// user's ACL filters that matches in map order, so overlapping filters
// ("#" to read, "P/D/+/set" to write) decide at random.
type aclHook struct {
	mochi.HookBase
	a         BrokerAuth
	log       *slog.Logger
	users     map[string][sha256.Size]byte // password sums
	bridgeSum [sha256.Size]byte
}

func (h *aclHook) ID() string { return "pibridge-auth" }

func (h *aclHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

// OnConnectAuthenticate checks the user and password, refuses the
// bridge's client id to anyone else (taking it over would disconnect the
// bridge), and refuses a will the user could not publish itself: mochi
// sends wills without an ACL check.
func (h *aclHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	sum := sha256.Sum256(pk.Connect.Password)
	var ok bool
	switch want, known := h.users[user]; {
	case user == h.a.BridgeUser:
		ok = subtle.ConstantTimeCompare(sum[:], h.bridgeSum[:]) == 1
	case known:
		ok = subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	default:
		subtle.ConstantTimeCompare(sum[:], h.bridgeSum[:]) // the same time as a known user
	}
	why := ""
	switch {
	case !ok && user == "":
		why = "no user name (the broker is beyond loopback: see README \"Home Assistant\")"
	case !ok:
		why = "wrong user name or password"
	case user != h.a.BridgeUser && cl.ID == h.a.BridgeClientID:
		why = "the client id is the bridge's own"
	case pk.Connect.WillFlag && !h.mayPublish(user, pk.Connect.WillTopic):
		why = "its will's topic is the bridge's own"
	}
	if why != "" {
		h.log.Warn("MQTT client refused", "remote", cl.Net.Remote, "client_id", pibridge.Clip(cl.ID), "user", pibridge.Clip(user), "why", why)
		return false
	}
	return true
}

// OnACLCheck lets everyone read, and publish anywhere but the bridge's
// own topics.
func (h *aclHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if !write || h.mayPublish(string(cl.Properties.Username), topic) {
		return true
	}
	h.log.Info("publish refused: the bridge's own topic", "client_id", pibridge.Clip(cl.ID), "topic", pibridge.Clip(topic))
	return false
}

func (h *aclHook) mayPublish(user, topic string) bool {
	if user == h.a.BridgeUser {
		return true
	}
	for _, p := range h.a.Protected {
		if pibridge.TopicMatches(p, topic) {
			for _, o := range h.a.Open {
				if pibridge.TopicMatches(o, topic) {
					return true
				}
			}
			return false
		}
	}
	return true
}

// IsLoopbackListen reports whether a listen address (host:port) is on
// loopback only: 127.0.0.0/8, ::1 or localhost. An empty or wildcard
// host listens on every interface.
func IsLoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// EmbeddedNeedsAuth reports whether the embedded broker asks for
// credentials: when it listens beyond loopback, or users are configured.
func (c *Config) EmbeddedNeedsAuth() bool {
	return c.UsesEmbedded() && (c.EmbeddedUsersFile != "" || !IsLoopbackListen(c.EmbeddedListen))
}

// EmbeddedAuth is the BrokerAuth for this configuration: users (from
// embedded_users_file or the generated password) and the bridge's own
// credentials. Without mqtt.username, give the client the same bridge
// password (Options.EmbeddedPassword).
func (c *Config) EmbeddedAuth(users map[string]string, bridgePassword string) BrokerAuth {
	base := c.TopicPrefix + "/" + c.DeviceID
	a := BrokerAuth{
		Users:          users,
		BridgeUser:     c.embeddedBridgeUser(),
		BridgePassword: bridgePassword,
		BridgeClientID: c.ClientID,
		Protected:      c.ownFilters(),
		Open:           []string{base + "/+/set", base + "/+/pulse"},
	}
	if c.discovery() {
		// Home Assistant's birth topic is its own setting, not under the prefix.
		a.Open = append(a.Open, c.HomeAssistant.StatusTopic)
	}
	if c.Homie.Enabled {
		a.Open = append(a.Open, c.homieBase()+"/+/+/set")
	}
	return a
}

func (c *Config) embeddedBridgeUser() string {
	if c.Username != "" {
		return c.Username
	}
	return EmbeddedBridgeUser
}

// maxUsersFile bounds embedded_users_file.
const maxUsersFile = 64 << 10

// LoadEmbeddedUsers reads embedded_users_file: one "user:password" a line;
// blank lines and lines starting with # are skipped. Errors name the line.
func LoadEmbeddedUsers(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("embedded_users_file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxUsersFile+1))
	if err != nil {
		return nil, fmt.Errorf("embedded_users_file: %w", err)
	}
	if len(b) > maxUsersFile {
		return nil, fmt.Errorf("embedded_users_file: %s is over %d bytes", path, maxUsersFile)
	}
	users := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		user, pw, found := strings.Cut(line, ":")
		switch {
		case !found:
			return nil, fmt.Errorf("embedded_users_file: %s line %d: want user:password", path, n)
		case user == "" || pw == "":
			return nil, fmt.Errorf("embedded_users_file: %s line %d: the user name and the password must not be empty", path, n)
		case strings.HasPrefix(user, "$"):
			return nil, fmt.Errorf("embedded_users_file: %s line %d: user %q: names starting with $ are reserved", path, n, pibridge.Clip(user))
		case !utf8.ValidString(line) || strings.ContainsRune(line, 0):
			return nil, fmt.Errorf("embedded_users_file: %s line %d: must be UTF-8 without NUL", path, n)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("embedded_users_file: %s line %d: user %q is listed twice", path, n, pibridge.Clip(user))
		}
		users[user] = pw
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("embedded_users_file: %s lists no user", path)
	}
	return users, nil
}

// LoadOrCreateEmbeddedPassword returns the password in
// dir/mqtt-password, creating it (0600, 256 random bits) when the file
// does not exist; created says it was just made.
func LoadOrCreateEmbeddedPassword(dir string) (password string, created bool, err error) {
	if dir == "" {
		return "", false, errors.New("no state_dir to keep the embedded broker's password in: set mqtt.embedded_users_file")
	}
	path := filepath.Join(dir, EmbeddedPasswordFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		pw := strings.TrimSpace(string(b))
		if pw == "" {
			return "", false, fmt.Errorf("%s is empty: delete it to have a new password generated", path)
		}
		return pw, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, err
	}
	pw := pibridge.RandomText()
	if err := pibridge.WriteSecretFile(dir, EmbeddedPasswordFile, pw); err != nil {
		return "", false, err
	}
	return pw, true, nil
}
