package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"pibridge/internal/harness"
)

// natsNode is one nats-server of the loopback cluster: JetStream on (its
// MQTT listener needs it), the MQTT listener, routes to every node.
type natsNode struct {
	Name     string
	MQTT     string // host:port
	conf     string
	log      string
	cmd      *exec.Cmd
	done     chan struct{}
	killedAt time.Time
}

// startCluster writes one config per node on free ports and starts them,
// returning once every node answers an MQTT CONNECT (a node takes ~2 s to
// set up its streams first).
func startCluster(dir string, n int) ([]*natsNode, error) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
		if _, err := os.Stat(bin); err != nil {
			return nil, errors.New("nats-server not found: apt-get install nats-server (make fleet does)")
		}
	}
	ports := make([][3]string, n) // client, cluster, mqtt
	var routes []string
	for i := range n {
		for j := range 3 {
			if ports[i][j], err = harness.FreePort(); err != nil {
				return nil, err
			}
		}
		routes = append(routes, "nats-route://"+ports[i][1])
	}
	nodes := make([]*natsNode, n)
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf("server_name: %s\nlisten: %s\njetstream { store_dir: %q }\nmqtt { listen: %s }\n",
			name, ports[i][0], filepath.Join(dir, "js-"+name), ports[i][2])
		if n > 1 {
			conf += fmt.Sprintf("cluster { name: fleet, listen: %s, routes: [%s] }\n", ports[i][1], strings.Join(routes, ", "))
		}
		nd := &natsNode{Name: name, MQTT: ports[i][2], conf: filepath.Join(dir, name+".conf"), log: filepath.Join(dir, name+".log")}
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		nd.cmd = exec.Command(bin, "-c", nd.conf)
		logf, err := os.Create(nd.log)
		if err != nil {
			return nil, err
		}
		nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
		if err := nd.cmd.Start(); err != nil {
			return nil, err
		}
		nd.done = make(chan struct{})
		go func() { nd.cmd.Wait(); logf.Close(); close(nd.done) }()
		nodes[i] = nd
	}
	for _, nd := range nodes {
		if err := nd.awaitMQTT(30 * time.Second); err != nil {
			stopCluster(nodes)
			return nil, err
		}
	}
	return nodes, nil
}

// awaitMQTT polls until an MQTT client can connect.
func (nd *natsNode) awaitMQTT(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-nd.done:
			return fmt.Errorf("%s exited: %s", nd.Name, harness.Tail(nd.log))
		default:
		}
		if c, err := net.DialTimeout("tcp", nd.MQTT, 200*time.Millisecond); err == nil {
			c.Close()
			cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + nd.MQTT).SetClientID("probe-" + nd.Name).SetProtocolVersion(4).SetConnectTimeout(3 * time.Second))
			tok := cl.Connect()
			if tok.WaitTimeout(4*time.Second) && tok.Error() == nil {
				cl.Disconnect(10)
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond) // polling a starting server
	}
	return fmt.Errorf("%s: no MQTT connection within %v; log: %s", nd.Name, within, harness.Tail(nd.log))
}

func (nd *natsNode) kill() {
	nd.killedAt = time.Now()
	nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.done
}

func stopCluster(nodes []*natsNode) {
	for _, nd := range nodes {
		if nd == nil {
			continue
		}
		select {
		case <-nd.done:
			continue
		default:
		}
		nd.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-nd.done:
		case <-time.After(5 * time.Second):
			nd.cmd.Process.Kill()
			<-nd.done
		}
	}
}
