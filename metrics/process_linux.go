package metrics

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// userHZ is the unit of the times in /proc/<pid>/stat: 100 on every
// Linux architecture (client_golang's procfs assumes the same).
const userHZ = 100

// process adds the families of client_golang's process collector, read
// from /proc/self. A file that cannot be read leaves its families out, as
// the collector did.
func process(fs *families) {
	if st, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command, which is in parentheses and may
		// contain anything: state is field 3, utime 14, stime 15,
		// starttime 22, vsize 23, rss 24.
		if i := bytes.LastIndexByte(st, ')'); i >= 0 {
			f := strings.Fields(string(st[i+1:]))
			field := func(n int) float64 {
				if n-3 >= len(f) {
					return 0
				}
				v, _ := strconv.ParseUint(f[n-3], 10, 64)
				return float64(v)
			}
			fs.add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", counter).
				sample((field(14) + field(15)) / userHZ)
			fs.add("process_virtual_memory_bytes", "Virtual memory size in bytes.", gauge).sample(field(23))
			fs.add("process_resident_memory_bytes", "Resident memory size in bytes.", gauge).
				sample(field(24) * float64(os.Getpagesize()))
			if boot := bootTime(); boot > 0 {
				fs.add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", gauge).
					sample(boot + field(22)/userHZ)
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		fs.add("process_open_fds", "Number of open file descriptors.", gauge).sample(float64(len(fds)))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		fs.add("process_max_fds", "Maximum number of open file descriptors.", gauge).sample(float64(lim.Cur))
	}
	if syscall.Getrlimit(syscall.RLIMIT_AS, &lim) == nil {
		fs.add("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.", gauge).sample(float64(lim.Cur))
	}
	if in, out, ok := netOctets(); ok {
		fs.add("process_network_receive_bytes_total", "Number of bytes received by the process over the network.", counter).sample(in)
		fs.add("process_network_transmit_bytes_total", "Number of bytes sent by the process over the network.", counter).sample(out)
	}
}

var bootTime = sync.OnceValue(func() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			t, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return float64(t)
		}
	}
	return 0
})

// netOctets reads InOctets and OutOctets of the IpExt lines in
// /proc/self/net/netstat: the process's network namespace, which is what
// client_golang reports under these names.
func netOctets() (in, out float64, ok bool) {
	b, err := os.ReadFile("/proc/self/net/netstat")
	if err != nil {
		return 0, 0, false
	}
	var names []string
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, isIP := strings.CutPrefix(line, "IpExt:")
		if !isIP {
			continue
		}
		fields := strings.Fields(rest)
		if names == nil {
			names = fields
			continue
		}
		var gotIn, gotOut bool
		for i, name := range names {
			if i >= len(fields) {
				break
			}
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			switch name {
			case "InOctets":
				in, gotIn = v, true
			case "OutOctets":
				out, gotOut = v, true
			}
		}
		return in, out, gotIn && gotOut
	}
	return 0, 0, false
}
