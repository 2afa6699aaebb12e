package mqtt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	pibridge "pibridge"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type testPKI struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	pool                                             *x509.CertPool
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pibridge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{ca: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	writePEM(t, p.ca, "CERTIFICATE", caDER)
	issue := func(name string, serial int64, tmpl x509.Certificate) (cert, key string) {
		k := newKey(t)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.Subject = pkix.Name{CommonName: name}
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		writePEM(t, cert, "CERTIFICATE", der)
		writePEM(t, key, "PRIVATE KEY", kder)
		return cert, key
	}
	p.serverCert, p.serverKey = issue("server", 2, x509.Certificate{
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"localhost"},
	})
	p.clientCert, p.clientKey = issue("pibridge-dev1", 3, x509.Certificate{
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsListener is mosquitto configuration for a listener that wants a
// client certificate from the test CA.
func (p testPKI) tlsListener(addr, protocol string) string {
	_, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("listener %s 127.0.0.1\nprotocol %s\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
		port, protocol, p.ca, p.serverCert, p.serverKey)
}

// TestTransports runs the bridge over TLS with client certificates
// (ssl://), MQTT over WebSocket (ws://) and over WebSocket with TLS
// (wss://) against mosquitto; readings and commands go through each.
func TestTransports(t *testing.T) {
	pki := newTestPKI(t)
	sslAddr, wsAddr, wssAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	_, wsPort, _ := net.SplitHostPort(wsAddr)
	m := runMosquitto(t, mosquittoOptions{extra: pki.tlsListener(sslAddr, "mqtt") +
		// mosquitto's websockets listener binds every address whatever
		// the host says (NOTES.md); acceptable in a test.
		fmt.Sprintf("listener %s\nprotocol websockets\n", wsPort) +
		pki.tlsListener(wssAddr, "websockets")})
	withCerts := func(c *Config) {
		c.TLS = pibridge.ClientTLS{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}
	}
	for _, tt := range []struct {
		name, broker string
		edit         func(*Config)
	}{
		{"ssl with client certificate", "ssl://" + sslAddr, withCerts},
		{"ws", "ws://" + wsAddr, nil},
		{"wss with client certificate", "wss://" + wssAddr, withCerts},
	} {
		t.Run(tt.name, func(t *testing.T) {
			core, act := newCore(t)
			w := watch(t, m.addr, base+"/#") // on the plain listener
			startDiskClient(t, core, tt.broker, tt.edit)
			waitOnline(w)
			core.Emit("cpu", pibridge.Number(42), time.Time{})
			w.publish(base+"/pump/set", `{"value":"on","id":"t1"}`, false)
			if got := waitAck(w, "t1"); got != `{"id":"t1","name":"pump","ok":true}` {
				t.Errorf("ack %s", got)
			}
			w.waitFor("the reading", func(ms []msg) bool {
				return slices.ContainsFunc(w.on(base+"/cpu"), func(m msg) bool { return !m.Retained })
			})
			if calls := act.Calls(); len(calls) != 1 {
				t.Errorf("actuator calls %q", calls)
			}
		})
	}

	// The broker refuses a client without a certificate, and the bridge
	// refuses a broker its CA did not sign.
	t.Run("refusals", func(t *testing.T) {
		noCert := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + sslAddr).SetClientID("no-cert").
			SetTLSConfig(&tls.Config{RootCAs: pki.pool}).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false))
		if tok := noCert.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() == nil {
			noCert.Disconnect(0)
			t.Error("connected without a client certificate")
		}
		other := newTestPKI(t)
		cfg, err := tlsConfig(pibridge.ClientTLS{CAFile: other.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey})
		if err != nil {
			t.Fatal(err)
		}
		wrongCA := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + sslAddr).SetClientID("wrong-ca").
			SetTLSConfig(cfg).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false))
		if tok := wrongCA.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() == nil {
			wrongCA.Disconnect(0)
			t.Error("connected to a broker signed by another CA")
		}
	})
}

// TestPasswordFile: a broker that refuses anonymous clients accepts the
// bridge's username and password_file, and refuses a wrong password.
func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	brokerPasswords := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", brokerPasswords, "bridge", "s3cret pass").CombinedOutput(); err != nil {
		t.Skipf("mosquitto_passwd: %v %s", err, out)
	}
	m := runMosquitto(t, mosquittoOptions{noAnonymous: true, extra: "password_file " + brokerPasswords + "\n"})
	pw := filepath.Join(dir, "bridge-password")
	if err := os.WriteFile(pw, []byte("s3cret pass\n"), 0o600); err != nil { // the newline is trimmed
		t.Fatal(err)
	}
	core, _ := newCore(t)
	c := startDiskClient(t, core, "tcp://"+m.addr, func(c *Config) { c.Username = "bridge"; c.PasswordFile = pw })
	eventually(t, "connected with the password", c.Connected)

	wrong := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + m.addr).SetClientID("wrong").
		SetUsername("bridge").SetPassword("guess").SetConnectTimeout(2 * time.Second).SetAutoReconnect(false))
	if tok := wrong.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() == nil {
		wrong.Disconnect(0)
		t.Error("connected with a wrong password")
	}
}
