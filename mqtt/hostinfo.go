package mqtt

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"strings"
)

// hostInfo is what the machine says about itself, for Home Assistant's
// device card: the board model and its serial number, where there are.
type hostInfo struct {
	model  string // "Raspberry Pi 4 Model B Rev 1.4"
	serial string // "10000000abcdef01"
}

// maxHostFile bounds what is read of one file; /proc/cpuinfo on a
// 4-core Pi is about 1 KiB.
const maxHostFile = 64 << 10

// readHostInfo reads the device tree's model and serial number, falling
// back to /proc/cpuinfo's Model and Serial lines (older kernels, or no
// device tree). Paths are relative to fsys, the root file system in
// production; anything missing stays empty.
func readHostInfo(fsys fs.FS) hostInfo {
	if fsys == nil {
		fsys = os.DirFS("/")
	}
	var h hostInfo
	h.model = firstOf(fsys, "proc/device-tree/model", "sys/firmware/devicetree/base/model")
	h.serial = strings.TrimLeft(firstOf(fsys, "proc/device-tree/serial-number", "sys/firmware/devicetree/base/serial-number"), " ")
	if h.model != "" && h.serial != "" {
		return h
	}
	b := readSmall(fsys, "proc/cpuinfo")
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch strings.TrimSpace(key) {
		case "Serial":
			if h.serial == "" && strings.Trim(val, "0") != "" {
				h.serial = val
			}
		case "Model":
			if h.model == "" {
				h.model = val
			}
		}
	}
	return h
}

// firstOf returns the first of the files that has text, without the NUL
// that device-tree strings end with.
func firstOf(fsys fs.FS, names ...string) string {
	for _, n := range names {
		s := strings.TrimSpace(strings.TrimRight(string(readSmall(fsys, n)), "\x00"))
		if s != "" && isPrintable(s) {
			return s
		}
	}
	return ""
}

func readSmall(fsys fs.FS, name string) []byte {
	f, err := fsys.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	b := make([]byte, maxHostFile)
	n, _ := f.Read(b)
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
	}
	return b[:n]
}

// isPrintable keeps binary junk out of the device card.
func isPrintable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return len(s) <= 128
}
